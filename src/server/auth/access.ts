/**
 * The glue between the hub and the access-control building blocks: where a request's token is found,
 * which principal it makes, whether that principal may subscribe to or publish on a channel, and the
 * abuse limits (origins.ts has CORS and the upgrade's origin check, expiry.ts the token expiry timer). The hub
 * and the transports ask an {@link Access}; without `auth` in the options it lets everyone do everything
 * (the behaviour before access control existed), so embedding code that never configured auth is unchanged.
 */
import type { Target } from "../edge/target.js";
import { LadderError } from "../../protocol/index.js";
import type { ExchangeRequest } from "../edge/http.js";
import { ConnectionCounter, RateLimiter } from "./rate-limit.js";
import { ANONYMOUS, authorize, type Permission, type Action, type ChannelRule, type Principal } from "./rules.js";
import { TokenVerifier, type TokenOptions } from "./tokens.js";
import type { Hooks } from "../hooks/hooks.js";
import type { Identity, RequestFacts } from "../hooks/connect.js";

export type { RequestFacts };

export interface AuthOptions {
  /** Channel rules; the first whose pattern matches wins. */
  readonly rules?: readonly ChannelRule[];
  /** For channels no rule matches. Default: only tokens whose grants cover the channel, for both (deny by default). */
  readonly defaults?: Readonly<Record<Action, Permission>>;
  /** How client JWTs are verified. Without it only API keys authenticate. */
  readonly jwt?: TokenOptions;
  /** Keys backends present as `Authorization: Bearer <key>`; they may do anything. */
  readonly apiKeys?: readonly string[];
}

export interface LimitOptions {
  /** Open SSE streams, WebSockets and held long-polls per client IP. Default 256. */
  readonly connectionsPerIp?: number;
  /** Publishes per second per token `sub` (or per IP without one); API keys are exempt. Default 50. */
  readonly publishPerSecond?: number;
  /** Publishes a quiet client may make at once. Default 100. */
  readonly publishBurst?: number;
  /** A WebSocket that sends no frame for this long after the upgrade is closed 1008 (ms). Default 30000. */
  readonly firstFrameTimeoutMs?: number;
  /**
   * TCP connections per client IP at the port (`serve()`), whatever they carry — idle keep-alives, TLS
   * handshakes, requests in progress; past it a new connection is closed at once. Trusted proxies are
   * exempt. Default 512: above connectionsPerIp, so the limit that answers with a 429 is usually met first.
   */
  readonly socketsPerIp?: number;
}

export const DEFAULT_LIMITS: Required<LimitOptions> = { connectionsPerIp: 256, publishPerSecond: 50, publishBurst: 100, firstFrameTimeoutMs: 30_000, socketsPerIp: 512 };

export const DEFAULT_ACCESS: Readonly<Record<Action, Permission>> = { subscribe: "token", publish: "token" };

/** Cookie a browser app can set so EventSource and WebSocket (which cannot send headers) carry the token. */
export const TOKEN_COOKIE = "ladder_token";
/** Query parameter for the same reason; it ends up in access logs, so the cookie or a WebSocket auth frame is better. */
export const TOKEN_QUERY = "access_token";

/** The release of a slot that was never counted: one shared function, as every request without limits gets it. */
export const NO_SLOT = (): void => undefined;

/** A cookie's value from a Cookie header, or null. */
export function cookieValue(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    const raw = part.slice(eq + 1).trim();
    try {
      return decodeURIComponent(raw);
    } catch {
      return raw;
    }
  }
  return null;
}

/** The token a request carries: `Authorization: Bearer`, else the `ladder_token` cookie, else `?access_token=`. */
export function extractToken(req: ExchangeRequest, url: Target): string | null {
  const header = req.headers.authorization;
  if (typeof header === "string") {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match) return match[1]!;
  }
  const cookie = cookieValue(req.headers.cookie, TOKEN_COOKIE);
  if (cookie) return cookie;
  const query = url.searchParams.get(TOKEN_QUERY);
  return query === null || query === "" ? null : query;
}

const ACCESS_VALUES = new Set(["anyone", "token", "nobody", "hook"]);

/** Rules usually come from a JSON file: a typo must fail at start, not silently open or close a channel. */
function checkAuthOptions(options: AuthOptions): void {
  const access = (where: string, value: unknown): void => {
    if (value !== undefined && !ACCESS_VALUES.has(value as string)) throw new TypeError(`option ${where} must be anyone, token, nobody or hook`);
  };
  if (options.rules !== undefined && !Array.isArray(options.rules)) throw new TypeError("option auth.rules must be a list");
  (options.rules ?? []).forEach((rule, i) => {
    if (typeof rule !== "object" || rule === null || typeof rule.match !== "string") throw new TypeError(`option auth.rules[${i}].match must be a string`);
    access(`auth.rules[${i}].subscribe`, rule.subscribe);
    access(`auth.rules[${i}].publish`, rule.publish);
  });
  access("auth.defaults.subscribe", options.defaults?.subscribe);
  access("auth.defaults.publish", options.defaults?.publish);
  if (options.apiKeys !== undefined && (!Array.isArray(options.apiKeys) || !options.apiKeys.every((k) => typeof k === "string" && k.length >= 16))) {
    throw new TypeError("option auth.apiKeys must be a list of keys of at least 16 characters");
  }
}

export class Access {
  /** False without `auth`: every check passes and no token is looked at. */
  readonly enabled: boolean;
  readonly #rules: readonly ChannelRule[];
  readonly #defaults: Readonly<Record<Action, Permission>>;
  readonly #verifier: Promise<TokenVerifier> | null;
  readonly #publishes: RateLimiter | null;
  readonly #perIp: ConnectionCounter | null;
  readonly #socketsPerIp: ConnectionCounter | null;
  readonly #hooks: Hooks | null;
  /** Null when limits are off. */
  readonly firstFrameTimeoutMs: number | null;

  /**
   * Limits apply when `limits` is given, or with defaults when `auth` is: a hub that opts into access
   * control gets the abuse limits with it; one that configured neither keeps its old behaviour.
   */
  constructor(authOptions: AuthOptions | undefined, limits?: LimitOptions, hooks: Hooks | null = null) {
    // Hooks that decide who may do what turn access control on: without an auth config the defaults apply (deny by default).
    const options = authOptions ?? (hooks?.decideAccess ? {} : undefined);
    if (options) checkAuthOptions(options);
    this.#hooks = hooks;
    this.enabled = options !== undefined;
    const active = limits !== undefined || options !== undefined;
    const l = { ...DEFAULT_LIMITS, ...limits };
    this.#publishes = active ? new RateLimiter({ ratePerSecond: l.publishPerSecond, burst: l.publishBurst }) : null;
    this.#perIp = active ? new ConnectionCounter(l.connectionsPerIp) : null;
    this.#socketsPerIp = active ? new ConnectionCounter(l.socketsPerIp) : null;
    this.firstFrameTimeoutMs = active ? l.firstFrameTimeoutMs : null;
    this.#rules = options?.rules ?? [];
    this.#defaults = { ...DEFAULT_ACCESS, ...options?.defaults };
    this.#verifier = options ? TokenVerifier.create(options.jwt ?? {}, options.apiKeys ?? []) : null;
    // A bad key file rejects here; it is reported on first use, not as an unhandled rejection at start.
    this.#verifier?.catch(() => undefined);
  }

  /**
   * The principal a request speaks for; anonymous without a token. Rejects with 401 for a bad or expired
   * token. With the connect hook, a request without a valid token is the user the app names (or its
   * refusal). Without `auth` it answers at once, not with a promise: a poll then costs no extra turn.
   */
  principalFor(req: ExchangeRequest, url: Target, facts: RequestFacts): Principal | Promise<Principal> {
    if (!this.#verifier) return ANONYMOUS;
    const token = extractToken(req, url);
    const connect = this.#hooks?.connect;
    if (!connect) return token === null ? ANONYMOUS : this.verify(token);
    const identify = (): Promise<Principal> => connect.identify(req, facts).then(principalOf);
    // A token that does not verify (a stale cookie, say) falls back to the app's session, which is the point of the hook.
    return token === null ? identify() : this.verify(token).catch(identify);
  }

  async verify(token: string): Promise<Principal> {
    if (!this.#verifier) return ANONYMOUS;
    return (await this.#verifier).verify(token);
  }

  /**
   * Null when allowed, else the 401/403 error to answer with. A channel whose rule says `hook` counts as
   * allowed here: the hook was asked when the subscription began (this serves a WebSocket's token refresh).
   */
  refusal(principal: Principal, action: Action, channel: string): LadderError | null {
    const verdict = this.#verdict(principal, action, channel);
    return verdict === "hook" ? null : verdict;
  }

  /** Throws the refusal; returns a promise only when the rules send the decision to the app's subscribe hook. */
  checkSubscribe(principal: Principal, channel: string, facts: RequestFacts): Promise<void> | null {
    const verdict = this.#verdict(principal, "subscribe", channel);
    if (verdict === "hook") return this.#hooks!.channels.subscribe(callerOf(principal), channel, facts);
    if (verdict) throw verdict;
    return null;
  }

  /**
   * Throws the refusal; true when the rules send the decision to the app's publish hook, which the caller
   * then asks with {@link askPublishHook}. One rules lookup per publish, and no promise when no hook decides.
   */
  publishNeedsHook(principal: Principal, channel: string): boolean {
    const verdict = this.#verdict(principal, "publish", channel);
    if (verdict === "hook") return true;
    if (verdict) throw verdict;
    return false;
  }

  /** The app's publish hook: resolves with the data to publish (its replacement) or rejects with its refusal. */
  askPublishHook(principal: Principal, channel: string, data: unknown, facts: RequestFacts): Promise<unknown> {
    return this.#hooks!.channels.publish(callerOf(principal), channel, data, facts);
  }

  #verdict(principal: Principal, action: Action, channel: string): LadderError | null | "hook" {
    if (!this.enabled) return null;
    if (principal.expiresAt !== null && principal.expiresAt <= Date.now()) return new LadderError("unauthenticated", "token expired");
    switch (authorize(this.#rules, this.#defaults, principal, action, channel)) {
      case "allowed":
        return null;
      case "hook":
        if (this.#hooks) return "hook";
        return new LadderError("forbidden", `${action} on ${channel} is left to a hook, and no hooks are configured`);
      case "unauthenticated":
        return new LadderError("unauthenticated", `${action} on ${channel} needs a token`);
      case "forbidden":
        return new LadderError("forbidden", `not allowed to ${action} on ${channel}`);
    }
  }

  /** True when publishes are rate-limited: callers skip working out the client's address otherwise. */
  get limitsPublishes(): boolean {
    return this.#publishes !== null;
  }

  /** Counts a publish against the caller's bucket (its `sub`, else its IP); throws 429 with the wait. */
  takePublish(principal: Principal, ip: string): void {
    if (!this.#publishes || principal.kind === "api-key") return;
    const key = principal.sub !== null ? `sub:${principal.sub}` : `ip:${ip}`;
    const wait = this.#publishes.take(key);
    if (wait > 0) throw new LadderError("rate_limited", `publishing too fast; retry in ${wait} s`, wait);
  }

  /** A connection slot for this IP: the release function, or null when the IP is at its limit. */
  acquireConnection(ip: string): (() => void) | null {
    return this.#perIp ? this.#perIp.acquire(ip) : NO_SLOT;
  }

  /** A TCP connection slot for this IP, like {@link acquireConnection}. */
  acquireSocket(ip: string): (() => void) | null {
    return this.#socketsPerIp ? this.#socketsPerIp.acquire(ip) : NO_SLOT;
  }

  /** Drops rate buckets that have refilled, so memory follows recent activity only. */
  sweep(): void {
    this.#publishes?.sweep();
  }
}

/** The connect hook's answer as a principal: its patterns are grants, as a token's `ladder` claim would be. */
function principalOf(identity: Identity): Principal {
  if (identity.user === null && identity.subscribe.length === 0 && identity.publish.length === 0) return ANONYMOUS;
  return {
    kind: "hook",
    sub: identity.user,
    grants: { subscribe: identity.subscribe, publish: identity.publish },
    expiresAt: identity.expiresAt,
    info: identity.info,
  };
}

function callerOf(principal: Principal): { user: string | null; info: unknown } {
  return { user: principal.sub, info: principal.info ?? null };
}
