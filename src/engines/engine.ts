/**
 * The engine owns storage and fan-out: it assigns ids, keeps each channel's bounded history, places a
 * resume cursor in it and tells every node's hub about new messages. The hub above it does not know
 * which engine it talks to; one conformance suite (test/engine-conformance.test.ts) runs against each.
 */
import type { Gap, Message, MessageId } from "../protocol/index.js";

export interface HistoryLimits {
  /** How many messages a channel keeps. */
  readonly maxCount: number;
  /** How long a message is kept, in milliseconds. */
  readonly maxAgeMs: number;
}

export interface ReadResult {
  /** Messages after the cursor (after `gap.resume` when there is a gap), oldest first, at most `limit`. */
  readonly messages: readonly Message[];
  /** Set when the cursor could not be honoured: some messages after it are gone or cannot be placed. */
  readonly gap: Gap | null;
  /**
   * Where a reader stands after these messages if nothing else is published: the last returned id, or
   * the channel's current position when none were returned. Resuming from it misses nothing.
   */
  readonly cursor: MessageId;
}

/** What an engine that keeps history in this process holds, for metrics (the broker engines have none: the broker's own metrics say it). */
export interface EngineStats {
  /** Channels held (with retained messages or subscribers). */
  readonly channels: number;
  /** Budget bytes of the retained messages (data JSON length plus a per-message overhead). */
  readonly retainedBytes: number;
  readonly maxLogBytes: number;
  readonly maxChannels: number;
  /** Messages dropped to stay within the budget (not those past the count or age limit). */
  readonly evictedMessages: number;
  /** Channels without subscribers freed to stay within the budget. */
  readonly evictedChannels: number;
}

export type MessageListener = (message: Message) => void;

/**
 * How long a publish's idempotency key is remembered: a retry with the same key within this window gets
 * the original message's id back (`duplicate: true`) instead of a second copy. NATS JetStream's
 * `duplicate_window` is at most this long too (and at most the stream's `max_age`).
 */
export const DEDUPE_WINDOW_MS = 120_000;

/** What a publish returns: the message, and whether its key named one already in the log. */
export type Published = Message & { readonly duplicate?: true };

export interface Engine {
  readonly name: string;
  /**
   * Appends to the channel's history and fans the message out to every subscribed node. `encodedBytes`
   * is the data's JSON length in bytes when the caller has measured it (the hub has), so an engine that
   * counts bytes need not encode the data again. With a `key`, a second publish with the same key to the
   * same channel within {@link DEDUPE_WINDOW_MS} appends nothing and returns the first one's id and time
   * with `duplicate: true`.
   */
  publish(channel: string, data: unknown, encodedBytes?: number, key?: string): Promise<Published>;
  /**
   * Reads history after `since` (`"0"` for the start of what is retained), or, with `since` null,
   * only the current cursor (no messages).
   */
  read(channel: string, since: MessageId | null, limit: number): Promise<ReadResult>;
  /**
   * {@link read} within the current turn, for an engine whose history lives in this process and whose
   * publish hands a message to its listeners in the same turn that appends it (the memory engine). Then a
   * subscriber that reads and goes live in one turn cannot see a message twice, and needs no fence.
   */
  readSync?(channel: string, since: MessageId | null, limit: number): ReadResult;
  /**
   * {@link publish} within the current turn, for an engine that appends in this process (the memory
   * engine): the message or a thrown refusal, with no promise. The HTTP publish path answers tens of
   * thousands of these a second, and a promise and a microtask turn per publish show in its profile.
   */
  publishSync?(channel: string, data: unknown, encodedBytes?: number, key?: string): Published;
  /**
   * Live messages of a channel, in order, from the moment the promise resolves (so a read after it misses
   * nothing). A hub subscribes once per channel that has local subscribers and fans out itself.
   */
  subscribe(channel: string, listener: MessageListener): Promise<() => void>;
  /** Retained bytes, channels and evictions, for an engine whose history lives in this process. */
  stats?(): EngineStats;
  /** True while the engine can accept publishes (readiness). */
  ready(): boolean;
  close(): Promise<void>;
}
