/**
 * The subscribe and publish hooks: for channels whose rule says `"hook"`, the app decides. Subscribe:
 * `{"allow": true}` or `{"allow": false, "message"?}`. Publish: the same, and `"data"` in an allowing
 * answer replaces what is published (validation, moderation, enrichment). A failure follows the hook's
 * policy: `deny` answers 503 `unavailable`, `allow` lets the request through unchanged.
 */
import { LadderError } from "../../protocol/index.js";
import { TtlCache } from "./cache.js";
import { HookFailure, type HookCaller, type HookResponse } from "./caller.js";
import type { RequestFacts } from "./connect.js";
import type { HookEndpoint, HooksOptions } from "./options.js";

/** The caller as the app knows it: the connect hook's (or the token's) user and info. */
export interface Caller {
  readonly user: string | null;
  readonly info: unknown;
}

const SUBSCRIBE_CACHE_SIZE = 10_000;
const DEFAULT_SUBSCRIBE_TTL_MS = 10_000;

interface Decision {
  readonly allow: boolean;
  readonly message: string | null;
  /** Present when a publish answer replaces the data. */
  readonly replaced: boolean;
  readonly data: unknown;
}

function readDecision({ body }: HookResponse): Decision {
  if (typeof body !== "object" || body === null || typeof (body as { allow?: unknown }).allow !== "boolean") {
    throw new HookFailure("invalid", 'answer must be {"allow": true|false, …}');
  }
  const fields = body as Record<string, unknown>;
  const message = typeof fields.message === "string" ? fields.message.slice(0, 200) : null;
  return { allow: fields.allow === true, message, replaced: "data" in fields, data: fields.data };
}

function failed(name: string, endpoint: HookEndpoint, error: unknown): boolean {
  if (!(error instanceof HookFailure)) throw error;
  if (endpoint.onFailure === "allow") return true;
  throw new LadderError("unavailable", `${name} hook failed (${error.reason}); retry later`);
}

export class ChannelHooks {
  readonly #caller: HookCaller;
  readonly #subscribe: HooksOptions["subscribe"];
  readonly #publish: HookEndpoint | undefined;
  readonly #decisions: TtlCache<Promise<void>>;

  constructor(options: HooksOptions, caller: HookCaller) {
    this.#caller = caller;
    this.#subscribe = options.subscribe;
    this.#publish = options.publish;
    this.#decisions = new TtlCache(options.subscribe?.cacheTtlMs ?? DEFAULT_SUBSCRIBE_TTL_MS, SUBSCRIBE_CACHE_SIZE);
  }

  /** Resolves when the app allows; rejects with 403 `forbidden` (its refusal) or per the failure policy. */
  subscribe(caller: Caller, channel: string, facts: RequestFacts): Promise<void> {
    const endpoint = this.#subscribe;
    if (!endpoint) return Promise.reject(new LadderError("forbidden", `subscribe on ${channel} needs the subscribe hook, which is not configured`));
    const key = JSON.stringify([caller.user, channel]);
    const cached = this.#decisions.get(key);
    if (cached) return cached;
    const payload = { channel, user: caller.user, info: caller.info, transport: facts.transport, client: { ip: facts.ip } };
    const pending = this.#caller.call("subscribe", endpoint.url, payload, readDecision).then(
      (decision) => {
        if (!decision.allow) throw new LadderError("forbidden", decision.message ?? `not allowed to subscribe on ${channel}`);
      },
      (error: unknown) => {
        failed("subscribe", endpoint, error);
      },
    );
    this.#decisions.set(key, pending);
    // Only the app's answers are reused: a failure asks again next time.
    pending.catch((error: unknown) => {
      if (!(error instanceof LadderError) || error.code !== "forbidden") this.#decisions.delete(key, pending);
    });
    return pending;
  }

  /** Resolves with the data to publish: the client's, or what the app put in its place. */
  async publish(caller: Caller, channel: string, data: unknown, facts: RequestFacts): Promise<unknown> {
    const endpoint = this.#publish;
    if (!endpoint) throw new LadderError("forbidden", `publish on ${channel} needs the publish hook, which is not configured`);
    const payload = { channel, data, user: caller.user, info: caller.info, transport: facts.transport, client: { ip: facts.ip } };
    let decision: Decision;
    try {
      decision = await this.#caller.call("publish", endpoint.url, payload, readDecision);
    } catch (error) {
      failed("publish", endpoint, error);
      return data;
    }
    if (!decision.allow) throw new LadderError("forbidden", decision.message ?? `not allowed to publish on ${channel}`);
    return decision.replaced ? decision.data : data;
  }
}
