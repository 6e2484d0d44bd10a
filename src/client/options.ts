/** Client options, their defaults, and the rung names. */
import { DEFAULT_PATHS, TRANSPORTS, type HubPaths, type TransportName } from "../protocol/index.js";
import { DEFAULT_BACKOFF, DEFAULT_PROBE, type BackoffOptions } from "./backoff.js";

export type { TransportName };
/** The rungs of the ladder, top first. */
export const LADDER: readonly TransportName[] = TRANSPORTS;

export type ClientState = "disconnected" | "connecting" | "connected" | "closed";

/** Publishes held while disconnected (and those in flight), sent in order once a rung is up. */
export interface PublishQueueOptions {
  /** Publishes held at once (default 100). */
  readonly maxCount: number;
  /** Their data's JSON length together, bytes (default 256 KiB). */
  readonly maxBytes: number;
  /**
   * Past a bound: `reject-newest` (default) refuses the new publish; `drop-oldest` drops the oldest not yet
   * sent, rejecting it. Both with a `LadderError` of code `queue_full`.
   */
  readonly overflow: "reject-newest" | "drop-oldest";
}

/**
 * An event handler slot. Declared with method syntax so its parameter is compared both ways: the browser's
 * handlers take DOM events and `ws`'s take its own event classes, and both carry what the client reads.
 */
type Handler<E> = { handle(event: E): void }["handle"] | null;

/**
 * What the client needs of a WebSocket: the browser's, Node 22's built-in one and the `ws` package's
 * (`import WebSocket from "ws"`) all fit, with no cast.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: Handler<unknown>;
  onmessage: Handler<{ readonly data: unknown }>;
  onclose: Handler<{ readonly code: number; readonly reason: string }>;
  onerror: Handler<unknown>;
}

/** A WebSocket constructor as browsers, Node 22+ and the `ws` package provide it. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** Base URL of the hub, e.g. `https://app.example`. In a browser it defaults to the page's origin. */
  readonly url?: string;
  /** `auto`, one rung, or an ordered list of rungs to try. */
  readonly transport?: "auto" | TransportName | readonly TransportName[];
  /**
   * What `auto` optimises for: `duplex` starts at WebSocket (a page that publishes often); `receive` starts
   * at SSE (a receive-only page needs no WebSocket; publish then goes over HTTP).
   */
  readonly mode?: "duplex" | "receive";
  readonly paths?: Partial<HubPaths>;
  /** Reconnect backoff (full jitter). */
  readonly backoff?: Partial<BackoffOptions>;
  /** Backoff of attempts to climb back to a higher rung after stepping down. */
  readonly probe?: Partial<BackoffOptions>;
  /** A long-lived rung silent for this long is taken for dead and replaced (default 30 s). */
  readonly heartbeatTimeoutMs?: number;
  /** A rung that has not delivered its handshake within this time counts as blocked (default 10 s). */
  readonly openTimeoutMs?: number;
  /** Interval of the `poll` rung (default 5 s). */
  readonly pollIntervalMs?: number;
  /** How long a long-poll is held by the server (default 25 s). */
  readonly longPollWaitSeconds?: number;
  readonly publishTimeoutMs?: number;
  readonly publishQueue?: Partial<PublishQueueOptions>;
  /** Injected globals for Node or tests; the browser's are used when absent. */
  readonly WebSocket?: WebSocketConstructor;
  readonly fetch?: typeof fetch;
  /** Source of randomness for backoff jitter, [0, 1). */
  readonly random?: () => number;
  /**
   * This client's id in presence lists, kept across its reconnects and rung changes (1–64 characters from
   * A-Z a-z 0-9 _ -). Default: a random one per client.
   */
  readonly clientId?: string;
  /** What an anonymous client says about itself in presence lists (where the hub allows it; a token's info wins). */
  readonly presenceInfo?: unknown;
  /** While on a polling rung, how often the members of presence channels are re-read, ms. */
  readonly presencePollMs?: number;
}

export interface ResolvedClientOptions {
  readonly base: URL;
  readonly ladder: readonly TransportName[];
  readonly paths: HubPaths;
  readonly backoff: BackoffOptions;
  readonly probe: BackoffOptions;
  readonly heartbeatTimeoutMs: number;
  readonly openTimeoutMs: number;
  readonly pollIntervalMs: number;
  readonly longPollWaitSeconds: number;
  readonly publishTimeoutMs: number;
  readonly publishQueue: PublishQueueOptions;
  readonly WebSocket: WebSocketConstructor | undefined;
  readonly fetch: typeof fetch;
  readonly random: () => number;
  readonly clientId: string;
  /** `presenceInfo` as JSON, or null. */
  readonly presenceInfo: string | null;
  readonly presencePollMs: number;
}

function resolveBase(url: string | undefined): URL {
  const location = (globalThis as { location?: { href: string } }).location;
  if (url === undefined) {
    if (!location) throw new TypeError("createClient needs a url outside a browser");
    return new URL("/", location.href);
  }
  if (location) return new URL(url, location.href);
  // Outside a page there is nothing to resolve a relative URL against, and "127.0.0.1:8080" would parse as scheme "127.0.0.1:".
  const base = safeUrl(url);
  if (!base || (base.protocol !== "http:" && base.protocol !== "https:")) {
    throw new TypeError(`createClient: url must start with http:// or https://; got ${JSON.stringify(url)}`);
  }
  return base;
}

function safeUrl(text: string): URL | null {
  try {
    return new URL(text);
  } catch {
    return null;
  }
}

/** The error for a WebSocket-only ladder where there is no WebSocket: says what to pass. */
export function noWebSocketError(): TypeError {
  return new TypeError('createClient: no WebSocket here: pass { WebSocket } from the ws package, or use transport: "auto"');
}

function resolveLadder(transport: ClientOptions["transport"], mode: ClientOptions["mode"]): TransportName[] {
  if (transport === undefined || transport === "auto") return mode === "receive" ? LADDER.slice(1) : [...LADDER];
  const list = typeof transport === "string" ? [transport] : [...transport];
  for (const name of list) if (!LADDER.includes(name)) throw new TypeError(`unknown transport ${String(name)}`);
  if (list.length === 0) throw new TypeError("transport list is empty");
  return list;
}

export function resolveClientOptions(options: ClientOptions): ResolvedClientOptions {
  const fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
  if (!fetchImpl) throw new TypeError("no fetch available: pass options.fetch");
  const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  const ladder = resolveLadder(options.transport, options.mode);
  if (!WebSocketImpl && ladder.every((name) => name === "websocket")) throw noWebSocketError();
  return {
    base: resolveBase(options.url),
    ladder,
    paths: { ...DEFAULT_PATHS, ...options.paths },
    backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
    probe: { ...DEFAULT_PROBE, ...options.probe },
    heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 30_000,
    openTimeoutMs: options.openTimeoutMs ?? 10_000,
    pollIntervalMs: options.pollIntervalMs ?? 5000,
    longPollWaitSeconds: options.longPollWaitSeconds ?? 25,
    publishTimeoutMs: options.publishTimeoutMs ?? 10_000,
    publishQueue: { maxCount: 100, maxBytes: 256 * 1024, overflow: "reject-newest", ...options.publishQueue },
    WebSocket: WebSocketImpl,
    fetch: fetchImpl,
    random: options.random ?? Math.random,
    clientId: options.clientId ?? `c${Math.random().toString(36).slice(2, 14)}`,
    presenceInfo: options.presenceInfo === undefined ? null : JSON.stringify(options.presenceInfo),
    presencePollMs: options.presencePollMs ?? 5000,
  };
}
