/** Message shapes on the wire. Pure types and constructors: safe for the browser. */
import type { Member } from "./presence.js";
import { LadderError, type ErrorCode } from "./errors.js";
import type { MessageId } from "./ids.js";

/** A published message as every transport delivers it. `time` is milliseconds since the epoch. */
export interface Message<T = unknown> {
  readonly id: MessageId;
  readonly channel: string;
  readonly data: T;
  readonly time: number;
  /**
   * Set on a message the app's backfill hook supplied for a gap in history: it has no id of its own (the
   * client gives it the cursor it arrived at, so resuming from it asks again) and comes before the history
   * that is left.
   */
  readonly backfilled?: true;
}

/** A backfilled message on the wire: SSE `event: backfill`, a WebSocket `message` frame, or a poll answer's element. */
export interface BackfilledMessage<T = unknown> {
  readonly channel: string;
  readonly data: T;
  readonly backfilled: true;
}

/**
 * Why a subscriber did not get every message after its cursor:
 * - `trimmed`: history no longer reaches back that far (count or age limit);
 * - `unknown`: the server cannot place the cursor (a restart of the memory engine, an id from elsewhere);
 * - `conflated`: the subscriber was too slow and the channel keeps only the latest (`slowConsumer: "latest"`).
 */
export type GapReason = "trimmed" | "unknown" | "conflated";

/**
 * The gap signal: messages after `since` up to and including `resume` were not delivered and will not be;
 * delivery goes on with the messages after `resume`.
 */
export interface Gap {
  readonly channel: string;
  readonly reason: GapReason;
  readonly since: MessageId;
  readonly resume: MessageId;
  /** The channel's current state from the app's backfill hook (any JSON): replace local state with it and go on live. */
  readonly snapshot?: unknown;
}

/** Client → server WebSocket frames. `channel` is accepted wherever `room` is. */
export type ClientFrame =
  | { readonly type: "join"; readonly room: string; readonly since?: MessageId }
  | { readonly type: "leave"; readonly room: string }
  /** `key`: the publish's idempotency key; a retry with the same key is acked with the first id and `duplicate: true`. */
  | { readonly type: "publish"; readonly room: string; readonly data: unknown; readonly ref?: string | number; readonly key?: string }
  /** A batch: each message is acknowledged (or refused) on its own, in one `ack` frame with `results`. */
  | { readonly type: "publish"; readonly room?: string; readonly messages: readonly { readonly room?: string; readonly data: unknown }[]; readonly ref?: string | number }
  | { readonly type: "ping"; readonly ref?: string | number }
  /** Authenticates, or refreshes the token before it expires (same `sub`); answered with `authed`. */
  | { readonly type: "auth"; readonly token: string; readonly ref?: string | number };

/** What one message of a batch publish came to: its id (and room over WebSocket, channel over HTTP), or its own error. */
export type BatchResult =
  | { readonly id: MessageId; readonly room?: string; readonly channel?: string }
  | { readonly error: { readonly code: string; readonly message: string } };

/** Server → client WebSocket frames. */
export type ServerFrame =
  | { readonly type: "message"; readonly room: string; readonly id: MessageId; readonly data: unknown; readonly time: number; readonly backfilled?: undefined }
  /** A backfilled message: no id, no time; see {@link Message.backfilled}. */
  | { readonly type: "message"; readonly room: string; readonly data: unknown; readonly backfilled: true }
  | { readonly type: "joined"; readonly room: string; readonly cursor: MessageId }
  | { readonly type: "left"; readonly room: string }
  | { readonly type: "ack"; readonly ref?: string | number; readonly id: MessageId; readonly room: string; readonly duplicate?: true }
  | { readonly type: "ack"; readonly ref?: string | number; readonly results: readonly BatchResult[] }
  | { readonly type: "pong"; readonly ref?: string | number; readonly time: number }
  /** The token was accepted; `expiresAt` (ms since the epoch) is when the connection closes 4001 unless refreshed again. */
  | { readonly type: "authed"; readonly ref?: string | number; readonly sub: string | null; readonly expiresAt: number | null }
  | { readonly type: "gap"; readonly room: string; readonly reason: GapReason; readonly since: MessageId; readonly resume: MessageId; readonly snapshot?: unknown }
  | { readonly type: "error"; readonly code: ErrorCode; readonly message: string; readonly ref?: string | number }
  /** A channel's members: the answer to a `presence` frame, and the first frame after a join with `presence: true`. */
  | { readonly type: "presence"; readonly room: string; readonly members: readonly Member[]; readonly count: number; readonly ref?: string | number }
  | { readonly type: "join" | "leave"; readonly room: string; readonly member: Member };

/** The envelope a multi-channel SSE stream puts in `data:` so each event says where it came from. */
export interface StreamEnvelope<T = unknown> {
  readonly channel: string;
  readonly id: MessageId;
  readonly data: T;
  readonly time: number;
}

/** HTTP header that carries the gap signal on a poll answer (JSON of {@link Gap}). */
export const GAP_HEADER = "ladder-gap";
/** HTTP header with the channel's cursor after a poll answer: resume from it when the array is empty. */
export const CURSOR_HEADER = "ladder-cursor";
/** The SSE event type of the gap signal; its `data:` is JSON of {@link Gap}. */
export const GAP_EVENT = "gap";
/** The SSE event of a backfilled message; `data:` is JSON of {@link BackfilledMessage}, and it has no `id:`. */
export const BACKFILL_EVENT = "backfill";
/** The SSE event sent once the stream is live; `data:` maps each channel to its cursor. */
export const READY_EVENT = "ready";
/** `since=now` on a poll: no history, just the channel's cursor (a long-poll then waits for the next message). */
export const NOW_CURSOR = "now";

/**
 * A publish's idempotency key (HTTP body `key`, WebSocket publish frame `key`): 1–64 characters from
 * A-Z a-z 0-9 _ -. Absent is fine; anything else is refused with `code`.
 */
export function checkPublishKey(value: unknown, code: "bad_request" | "bad_frame"): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string" && /^[A-Za-z0-9_-]{1,64}$/.test(value)) return value;
  throw new LadderError(code, "key must be 1–64 characters from A-Z a-z 0-9 _ -");
}
