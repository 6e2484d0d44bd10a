/**
 * The `hooks` option: where the hub asks the app's backend, and what it does when the app does not answer.
 * Checked once at start, so a typo fails there rather than silently opening or closing a channel.
 */
import { bounded, type CallerOptions } from "./caller.js";

/** What a hook's failure (timeout, 5xx, garbage, too large, overloaded) decides: refuse (the default) or let through. */
export type FailurePolicy = "deny" | "allow";

export interface HookEndpoint {
  readonly url: string;
  /** Default `deny`. */
  readonly onFailure?: FailurePolicy;
}

export interface ConnectHookOptions extends HookEndpoint {
  /** Cookie names sent to the app (e.g. the session cookie). Default: every cookie the request carries. */
  readonly cookies?: readonly string[];
  /** Request header names sent to the app, lower case (e.g. `authorization`, `x-csrf-token`). Default none. */
  readonly headers?: readonly string[];
  /** How long an answer is reused for the same credentials, ms. Default 10000; 0 asks on every request. */
  readonly cacheTtlMs?: number;
  /** Answers cached at most; the oldest goes first. Default 10000. */
  readonly cacheSize?: number;
}

export interface WebhookOptions {
  readonly url: string;
  /** Shared secret of the HMAC-SHA256 signature (at least 16 characters). */
  readonly secret: string;
  /** Attempts per event, the first included. Default 5. */
  readonly attempts?: number;
  /** Wait before the first retry, doubled each time (with jitter), ms. Default 500. */
  readonly backoffMs?: number;
  /** Events waiting to be sent, all channels together; past it a new event is dropped and logged. Default 10000. */
  readonly maxQueue?: number;
}

export interface HooksOptions extends CallerOptions {
  readonly connect?: ConnectHookOptions;
  readonly subscribe?: HookEndpoint & {
    /** How long a decision is reused for the same user and channel (a poll loop), ms. Default 10000; 0 asks every time. */
    readonly cacheTtlMs?: number;
  };
  readonly publish?: HookEndpoint;
  readonly backfill?: HookEndpoint;
  readonly webhooks?: WebhookOptions;
  /** Headers sent on every call, e.g. a key the app checks so only the hub can call it. */
  readonly headers?: Readonly<Record<string, string>>;
}

function endpoint(name: string, value: HookEndpoint | undefined): void {
  if (value === undefined) return;
  if (typeof value !== "object" || value === null || typeof value.url !== "string" || !/^https?:\/\//.test(value.url)) {
    throw new TypeError(`option hooks.${name}.url must be an http(s) URL`);
  }
  if (value.onFailure !== undefined && value.onFailure !== "deny" && value.onFailure !== "allow") {
    throw new TypeError(`option hooks.${name}.onFailure must be deny or allow`);
  }
}

function names(name: string, value: readonly string[] | undefined): void {
  if (value !== undefined && (!Array.isArray(value) || !value.every((v) => typeof v === "string"))) throw new TypeError(`option hooks.${name} must be a list of strings`);
}

export function checkHooksOptions(options: HooksOptions): void {
  if (typeof options !== "object" || options === null) throw new TypeError("option hooks must be an object");
  endpoint("connect", options.connect);
  endpoint("subscribe", options.subscribe);
  endpoint("publish", options.publish);
  endpoint("backfill", options.backfill);
  names("connect.cookies", options.connect?.cookies);
  names("connect.headers", options.connect?.headers);
  bounded("connect.cacheTtlMs", options.connect?.cacheTtlMs, 0, 0);
  bounded("connect.cacheSize", options.connect?.cacheSize, 1);
  bounded("subscribe.cacheTtlMs", options.subscribe?.cacheTtlMs, 0, 0);
  const webhooks = options.webhooks;
  if (webhooks !== undefined) {
    endpoint("webhooks", webhooks);
    if (typeof webhooks.secret !== "string" || webhooks.secret.length < 16) throw new TypeError("option hooks.webhooks.secret must be at least 16 characters");
    bounded("webhooks.attempts", webhooks.attempts, 1);
    bounded("webhooks.backoffMs", webhooks.backoffMs, 1);
    bounded("webhooks.maxQueue", webhooks.maxQueue, 1);
  }
  if (options.headers !== undefined && (typeof options.headers !== "object" || !Object.values(options.headers).every((v) => typeof v === "string"))) {
    throw new TypeError("option hooks.headers must map names to strings");
  }
}
