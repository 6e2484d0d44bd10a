/**
 * The backfill hook: when a subscriber's cursor is older than the channel's history (a `trimmed` or
 * `unknown` gap), the app is asked for what the subscriber missed — `{"channel", "reason", "since",
 * "resume"}`, where history goes on after `resume`. It answers `{"messages": [data, …]}` (delivered in
 * order before the history, marked backfilled, without ids), or `{"snapshot": any}` (sent in the gap
 * signal), or `{}` for nothing. Nothing, a failure or a timeout leaves the plain gap, as without the hook.
 */
import type { Gap } from "../../protocol/index.js";
import { HookFailure, type HookCaller, type HookResponse } from "./caller.js";
import type { HookEndpoint } from "./options.js";

export type Backfill =
  | { readonly kind: "messages"; readonly messages: readonly unknown[] }
  | { readonly kind: "snapshot"; readonly snapshot: unknown };

/** More backfilled messages than this is a snapshot's job. */
export const MAX_BACKFILL_MESSAGES = 1000;

function readBackfill({ body }: HookResponse): Backfill | null {
  if (body === undefined) return null;
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new HookFailure("invalid", "answer must be a JSON object");
  const fields = body as Record<string, unknown>;
  if ("snapshot" in fields && fields.snapshot !== undefined) return { kind: "snapshot", snapshot: fields.snapshot };
  if (fields.messages === undefined) return null;
  if (!Array.isArray(fields.messages) || fields.messages.length > MAX_BACKFILL_MESSAGES) {
    throw new HookFailure("invalid", `messages must be a list of at most ${MAX_BACKFILL_MESSAGES}`);
  }
  return fields.messages.length === 0 ? null : { kind: "messages", messages: fields.messages };
}

export class BackfillHook {
  readonly #endpoint: HookEndpoint;
  readonly #caller: HookCaller;

  constructor(endpoint: HookEndpoint, caller: HookCaller) {
    this.#endpoint = endpoint;
    this.#caller = caller;
  }

  /** Only gaps of history (trimmed, unknown) are asked about; never rejects: a failure is null. */
  async fill(gap: Gap): Promise<Backfill | null> {
    if (gap.reason !== "trimmed" && gap.reason !== "unknown") return null;
    const payload = { channel: gap.channel, reason: gap.reason, since: gap.since, resume: gap.resume };
    try {
      return await this.#caller.call("backfill", this.#endpoint.url, payload, readBackfill);
    } catch {
      return null;
    }
  }
}
