/**
 * The connect hook: a request without a valid token is described to the app (the cookies and headers the
 * operator lists, the client address, the transport, the channels asked for) and the app says who it is:
 * `200 {"user", "info"?, "subscribe": [patterns], "publish": [patterns], "expiresAt"?}`, or refuses with
 * `401`/`403` and an optional `{"error": {"code"?, "message"}}`. Answers are cached by the credentials for a
 * short TTL (a poll loop, a reconnecting stream ask the app once); a failure is never cached.
 */
import { createHash } from "node:crypto";
import { LadderError } from "../../protocol/index.js";
import type { ExchangeRequest } from "../edge/http.js";
import type { HookCaller } from "./caller.js";
import { TtlCache } from "./cache.js";
import { HookFailure } from "./caller.js";
import type { ConnectHookOptions } from "./options.js";

/** Who the app says the client is; the auth layer makes a principal of it. */
export interface Identity {
  readonly user: string | null;
  readonly info: unknown;
  readonly subscribe: readonly string[];
  readonly publish: readonly string[];
  /** Ms since the epoch; null when the app gave no end. */
  readonly expiresAt: number | null;
}

/** What the hub knows about the request besides its headers. */
export interface RequestFacts {
  readonly transport: string;
  readonly ip: string;
  readonly channels: readonly string[];
}

/** The identity given when the app cannot be asked and the policy is `allow`: anonymous, no grants. */
export const NO_IDENTITY: Identity = { user: null, info: null, subscribe: [], publish: [], expiresAt: null };

const DEFAULT_TTL_MS = 10_000;
const DEFAULT_CACHE_SIZE = 10_000;
const MAX_PATTERNS = 256;

function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!header) return out;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

function patterns(value: unknown, field: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || value.length > MAX_PATTERNS || !value.every((v) => typeof v === "string")) {
    throw new HookFailure("invalid", `${field} must be a list of at most ${MAX_PATTERNS} channel patterns`);
  }
  return value as string[];
}

/** Validates the app's answer: anything else than the documented shape is a failure, not a guess. */
export function readIdentity(body: unknown): Identity {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new HookFailure("invalid", "answer must be a JSON object");
  const fields = body as Record<string, unknown>;
  const user = fields.user;
  if (user !== null && (typeof user !== "string" || user === "" || user.length > 256)) throw new HookFailure("invalid", "user must be a non-empty string or null");
  const expiresAt = fields.expiresAt;
  if (expiresAt !== undefined && expiresAt !== null && (typeof expiresAt !== "number" || !Number.isFinite(expiresAt))) {
    throw new HookFailure("invalid", "expiresAt must be ms since the epoch");
  }
  return {
    user,
    info: fields.info ?? null,
    subscribe: patterns(fields.subscribe, "subscribe"),
    publish: patterns(fields.publish, "publish"),
    expiresAt: typeof expiresAt === "number" ? expiresAt : null,
  };
}

function readRefusal(status: number, body: unknown): LadderError {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  const message = typeof error?.message === "string" ? error.message.slice(0, 200) : "refused by the app";
  return new LadderError(status === 403 || error?.code === "forbidden" ? "forbidden" : "unauthenticated", message);
}

export class ConnectHook {
  readonly #options: ConnectHookOptions;
  readonly #caller: HookCaller;
  /** Identities, and refusals (as rejected promises), by a digest of the credentials. */
  readonly #cache: TtlCache<Promise<Identity>>;

  constructor(options: ConnectHookOptions, caller: HookCaller) {
    this.#options = options;
    this.#caller = caller;
    this.#cache = new TtlCache(options.cacheTtlMs ?? DEFAULT_TTL_MS, options.cacheSize ?? DEFAULT_CACHE_SIZE);
  }

  /** Rejects with a LadderError: the app's refusal, or `unavailable` when it failed and the policy is `deny`. */
  identify(req: ExchangeRequest, facts: RequestFacts): Promise<Identity> {
    const credentials = this.#credentials(req);
    const key = createHash("sha256").update(JSON.stringify(credentials)).digest("base64");
    const cached = this.#cache.get(key);
    if (cached) return cached;
    const pending = this.#ask(credentials, facts);
    this.#cache.set(key, pending);
    pending.then(
      (identity) => {
        // An identity must not outlive what the app said.
        if (identity.expiresAt !== null) this.#cache.set(key, pending, identity.expiresAt - Date.now());
      },
      (error: unknown) => {
        if (!(error instanceof LadderError) || error.code === "unavailable") this.#cache.delete(key, pending);
      },
    );
    return pending;
  }

  get cached(): number {
    return this.#cache.size;
  }

  #credentials(req: ExchangeRequest): { cookies: Record<string, string>; headers: Record<string, string> } {
    const all = parseCookies(req.headers.cookie);
    const wanted = this.#options.cookies;
    const cookies = wanted ? Object.fromEntries(wanted.filter((n) => n in all).map((n) => [n, all[n]!])) : all;
    const headers: Record<string, string> = {};
    for (const name of this.#options.headers ?? []) {
      const value = req.headers[name.toLowerCase()];
      if (typeof value === "string") headers[name.toLowerCase()] = value;
    }
    return { cookies, headers };
  }

  async #ask(credentials: { cookies: Record<string, string>; headers: Record<string, string> }, facts: RequestFacts): Promise<Identity> {
    const payload = { ...credentials, client: { ip: facts.ip }, transport: facts.transport, channels: facts.channels };
    try {
      return await this.#caller.call(
        "connect",
        this.#options.url,
        payload,
        ({ status, body }) => {
          if (status === 401 || status === 403) throw readRefusal(status, body);
          return readIdentity(body);
        },
        (s) => (s >= 200 && s < 300) || s === 401 || s === 403,
      );
    } catch (error) {
      if (error instanceof LadderError) throw error;
      if (this.#options.onFailure === "allow") return NO_IDENTITY;
      throw new LadderError("unavailable", `connect hook failed (${(error as HookFailure).reason ?? "network"}); retry later`);
    }
  }
}
