/**
 * Hub settings, their defaults, and the checks that turn a partial config into a complete one: the hub
 * reads the resolved object only, never what it was given.
 */
import { pino, type Logger } from "pino";
import { channelMatches, DEFAULT_PATHS, type HubPaths } from "../protocol/index.js";
import type { Engine } from "../engines/engine.js";
import { DEFAULT_MAX_CHANNELS, DEFAULT_MAX_LOG_BYTES, MESSAGE_OVERHEAD_BYTES } from "../engines/memory.js";
import type { AuthOptions, LimitOptions } from "./auth/access.js";
import type { CorsOptions } from "./auth/origins.js";
import type { HooksOptions } from "./hooks/options.js";

export type SlowConsumerPolicy = "disconnect" | "latest";

export interface ChannelPolicy {
  /** A channel name or a pattern with `*`, e.g. `prices.*`. The first matching rule wins. */
  readonly match: string;
  readonly slowConsumer?: SlowConsumerPolicy;
}

export type { HubPaths };

export interface HubOptions {
  /**
   * Storage and fan-out: an engine, or a URL the hub makes one from (and closes with itself) —
   * `memory` (the default), `redis://host:port` or `nats://host:port` for many nodes sharing a broker.
   */
  readonly engine?: Engine | string;
  readonly paths?: Partial<HubPaths>;
  /** History kept per channel: by count and by age (ms). Used by an engine the hub makes from a URL (or the default). */
  readonly historySize?: number;
  readonly historyMaxAgeMs?: number;
  /**
   * The memory engine's budget for the whole log (docs/security.md): retained bytes (each message's data
   * JSON plus a fixed overhead) and channels held. At the budget the oldest messages of the least recently
   * used channels are evicted, channels with subscribers last. Used by an engine the hub makes itself.
   */
  readonly maxLogBytes?: number;
  readonly maxChannels?: number;
  /** Cap on a long-poll's `wait` parameter, in seconds. */
  readonly maxWaitSeconds?: number;
  /** Interval of SSE heartbeat comments and of WebSocket pings, in ms. */
  readonly heartbeatMs?: number;
  /** A WebSocket peer that has not answered a ping for this long is dropped (ms). */
  readonly wsTimeoutMs?: number;
  /** The `retry:` an SSE stream announces, in ms. */
  readonly sseRetryMs?: number;
  /** Largest publish body or WebSocket frame, in bytes. */
  readonly maxMessageBytes?: number;
  /** Most messages one batch publish (an HTTP body or a WebSocket frame with `messages`) may carry. */
  readonly maxBatchMessages?: number;
  /** Largest body of a batch publish over HTTP, in bytes (a WebSocket frame stays bound by maxMessageBytes + 1 KiB). */
  readonly maxBatchBytes?: number;
  /** Open SSE streams, WebSockets and held long-polls together. */
  readonly maxConnections?: number;
  /** Channels one SSE stream or WebSocket may carry. */
  readonly maxChannelsPerConnection?: number;
  /** Bytes queued to one connection before the slow-consumer policy applies. */
  readonly maxBufferedBytes?: number;
  /**
   * Longest a busy SSE stream's or WebSocket's writes are held so that they go out together (ms, 0–1000).
   * A socket idle for this long is written at the end of the event-loop turn as before; one that got a
   * write less than this ago waits until this long after that write. 0: no hold (end-of-turn only).
   */
  readonly writeDelayMs?: number;
  readonly slowConsumer?: SlowConsumerPolicy;
  readonly channels?: readonly ChannelPolicy[];
  /** Most messages a poll answers with, and the default when `limit` is absent. */
  readonly pollMaxLimit?: number;
  readonly pollDefaultLimit?: number;
  /**
   * Who may subscribe and publish (docs/security.md). Without it anyone may do anything — the behaviour
   * of a hub that predates access control, kept so existing embeddings are unchanged.
   */
  readonly auth?: AuthOptions;
  /**
   * Origins whose pages may open a WebSocket (checked on the upgrade; browsers apply no CORS to it). Unset:
   * any origin, except that a cookie-only token must come from the hub's own host.
   */
  readonly allowedOrigins?: readonly string[];
  /** CORS for the HTTP rungs (poll, long-poll, SSE, publish). Unset: no CORS headers, as before. */
  readonly cors?: CorsOptions;
  /**
   * Proxies (addresses, CIDR ranges, `loopback`, `private`) whose X-Forwarded-For names the client for
   * per-IP limits. Unset: the peer's address counts, and X-Forwarded-For is ignored (a client could forge it).
   */
  readonly trustProxy?: readonly string[];
  /** Abuse limits (per-IP connections, publish rate, WebSocket first-frame time). On with defaults when `auth` is set. */
  readonly limits?: LimitOptions;
  /**
   * Serve Prometheus metrics at `/metrics` (connections by transport, channels, publishes, live deliveries,
   * refusals by error code, engine readiness, process). Off by default: the numbers describe the deployment,
   * so expose them only where the scraper is (or behind the proxy's access rules).
   */
  readonly metrics?: boolean;
  /**
   * Presence (who is in a channel, joins and leaves) for the channels matching these patterns, e.g.
   * `["chat.*"]`; other channels pay nothing. Or the patterns with settings. Off by default.
   */
  readonly presence?: readonly string[] | PresenceSettings;
  /**
   * Calls to the app's backend (docs/hooks.md): connect (who is this request, from its cookies), subscribe and
   * publish (for channels whose rule says `hook`), webhooks (channel occupied/vacated, presence) and backfill.
   */
  readonly hooks?: HooksOptions;
  readonly logger?: Logger;
}

export interface PresenceSettings {
  readonly channels: readonly string[];
  /** A member leaves this long after its client's last subscription ended (reconnect grace). Default 5000 ms. */
  readonly leaveDelayMs?: number;
  /** A node not heard from for this long is taken for dead and its members leave. Default 15000 ms. */
  readonly nodeTimeoutMs?: number;
  /** Members listed in one answer (`count` stays exact). Default 1000. */
  readonly maxMembers?: number;
  /** Anonymous clients may describe themselves (`info`, at most 256 bytes, unverified). Default false. */
  readonly anonymousInfo?: boolean;
}

export interface ResolvedPresence {
  readonly channels: readonly string[];
  readonly leaveDelayMs: number;
  readonly nodeTimeoutMs: number;
  readonly maxMembers: number;
  readonly anonymousInfo: boolean;
}

export interface ResolvedOptions {
  /** An engine the caller owns, or the URL of one the hub makes and closes. */
  readonly engine: Engine | string;
  readonly paths: HubPaths;
  readonly historySize: number;
  readonly historyMaxAgeMs: number;
  readonly maxLogBytes: number;
  readonly maxChannels: number;
  readonly maxWaitSeconds: number;
  readonly heartbeatMs: number;
  readonly wsTimeoutMs: number;
  readonly sseRetryMs: number;
  readonly maxMessageBytes: number;
  readonly maxBatchMessages: number;
  readonly maxBatchBytes: number;
  readonly maxConnections: number;
  readonly maxChannelsPerConnection: number;
  readonly maxBufferedBytes: number;
  readonly writeDelayMs: number;
  readonly slowConsumer: SlowConsumerPolicy;
  readonly channels: readonly ChannelPolicy[];
  readonly pollMaxLimit: number;
  readonly pollDefaultLimit: number;
  readonly allowedOrigins?: readonly string[];
  readonly cors?: CorsOptions;
  readonly auth?: AuthOptions;
  readonly limits?: LimitOptions;
  readonly trustProxy?: readonly string[];
  readonly metrics: boolean;
  readonly presence: ResolvedPresence | null;
  readonly hooks?: HooksOptions;
  readonly logger: Logger;
}

export const DEFAULTS: Omit<ResolvedOptions, "logger"> = {
  engine: "memory",
  paths: DEFAULT_PATHS,
  historySize: 1000,
  historyMaxAgeMs: 60 * 60 * 1000,
  maxLogBytes: DEFAULT_MAX_LOG_BYTES,
  maxChannels: DEFAULT_MAX_CHANNELS,
  maxWaitSeconds: 30,
  heartbeatMs: 15_000,
  wsTimeoutMs: 30_000,
  sseRetryMs: 2000,
  maxMessageBytes: 64 * 1024,
  maxBatchMessages: 1000,
  maxBatchBytes: 1024 * 1024,
  maxConnections: 10_000,
  maxChannelsPerConnection: 32,
  maxBufferedBytes: 1024 * 1024,
  writeDelayMs: 20,
  slowConsumer: "disconnect",
  presence: null,
  channels: [],
  pollMaxLimit: 1000,
  pollDefaultLimit: 100,
  metrics: false,
};

function positive(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min) {
    throw new TypeError(`option ${name} must be a number ≥ ${min}, got ${String(value)}`);
  }
  return value;
}

/** Longest write hold accepted: beyond it the added latency outweighs any saving. */
export const MAX_WRITE_DELAY_MS = 1000;

function bounded(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw new TypeError(`option ${name} must be a number from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

function policy(name: string, value: unknown, fallback: SlowConsumerPolicy): SlowConsumerPolicy {
  if (value === undefined) return fallback;
  if (value !== "disconnect" && value !== "latest") throw new TypeError(`option ${name} must be "disconnect" or "latest"`);
  return value;
}

function path(name: string, value: string | undefined, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== "string" || !value.startsWith("/")) throw new TypeError(`path ${name} must start with "/"`);
  return value;
}

function strings(name: string, value: readonly string[]): readonly string[] {
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) throw new TypeError(`option ${name} must be a list of strings`);
  return [...value];
}

export function resolveOptions(options: HubOptions = {}): ResolvedOptions {
  const slowConsumer = policy("slowConsumer", options.slowConsumer, DEFAULTS.slowConsumer);
  const channels = (options.channels ?? []).map((rule, i) => {
    if (!rule || typeof rule.match !== "string") throw new TypeError(`channels[${i}].match must be a string`);
    return { match: rule.match, slowConsumer: policy(`channels[${i}].slowConsumer`, rule.slowConsumer, slowConsumer) };
  });
  const pollMaxLimit = positive("pollMaxLimit", options.pollMaxLimit, DEFAULTS.pollMaxLimit);
  const maxMessageBytes = positive("maxMessageBytes", options.maxMessageBytes, DEFAULTS.maxMessageBytes, 16);
  // The budget holds at least one message of the largest size, so a publish the size limit lets through never fails for it.
  const maxLogBytes = positive("maxLogBytes", options.maxLogBytes, DEFAULTS.maxLogBytes, maxMessageBytes + MESSAGE_OVERHEAD_BYTES);
  return {
    engine: options.engine ?? DEFAULTS.engine,
    paths: {
      messages: path("messages", options.paths?.messages, DEFAULTS.paths.messages),
      stream: path("stream", options.paths?.stream, DEFAULTS.paths.stream),
      websocket: path("websocket", options.paths?.websocket, DEFAULTS.paths.websocket),
      presence: path("presence", options.paths?.presence, DEFAULTS.paths.presence),
    },
    historySize: positive("historySize", options.historySize, DEFAULTS.historySize),
    historyMaxAgeMs: positive("historyMaxAgeMs", options.historyMaxAgeMs, DEFAULTS.historyMaxAgeMs),
    maxLogBytes,
    maxChannels: positive("maxChannels", options.maxChannels, DEFAULTS.maxChannels),
    maxWaitSeconds: positive("maxWaitSeconds", options.maxWaitSeconds, DEFAULTS.maxWaitSeconds, 0),
    heartbeatMs: positive("heartbeatMs", options.heartbeatMs, DEFAULTS.heartbeatMs, 10),
    wsTimeoutMs: positive("wsTimeoutMs", options.wsTimeoutMs, DEFAULTS.wsTimeoutMs, 10),
    sseRetryMs: positive("sseRetryMs", options.sseRetryMs, DEFAULTS.sseRetryMs, 0),
    maxMessageBytes,
    maxBatchMessages: Math.floor(positive("maxBatchMessages", options.maxBatchMessages, DEFAULTS.maxBatchMessages)),
    maxBatchBytes: positive("maxBatchBytes", options.maxBatchBytes, DEFAULTS.maxBatchBytes, 16),
    maxConnections: positive("maxConnections", options.maxConnections, DEFAULTS.maxConnections),
    maxChannelsPerConnection: positive("maxChannelsPerConnection", options.maxChannelsPerConnection, DEFAULTS.maxChannelsPerConnection),
    maxBufferedBytes: positive("maxBufferedBytes", options.maxBufferedBytes, DEFAULTS.maxBufferedBytes, 1024),
    writeDelayMs: bounded("writeDelayMs", options.writeDelayMs, DEFAULTS.writeDelayMs, 0, MAX_WRITE_DELAY_MS),
    slowConsumer,
    channels,
    pollMaxLimit,
    pollDefaultLimit: Math.min(pollMaxLimit, positive("pollDefaultLimit", options.pollDefaultLimit, DEFAULTS.pollDefaultLimit)),
    ...(options.allowedOrigins ? { allowedOrigins: strings("allowedOrigins", options.allowedOrigins) } : {}),
    ...(options.cors ? { cors: { origins: strings("cors.origins", options.cors.origins), credentials: options.cors.credentials === true } } : {}),
    // Checked where they are used (Access, trustedProxies): absent stays absent, as it switches them off.
    ...(options.auth !== undefined ? { auth: options.auth } : {}),
    ...(options.limits !== undefined ? { limits: options.limits } : {}),
    ...(options.trustProxy !== undefined ? { trustProxy: options.trustProxy } : {}),
    metrics: options.metrics === true,
    presence: resolvePresence(options.presence),
    // Checked where they are built (Hooks).
    ...(options.hooks !== undefined ? { hooks: options.hooks } : {}),
    logger: options.logger ?? pino({ level: "silent" }),
  };
}

function resolvePresence(value: HubOptions["presence"]): ResolvedPresence | null {
  if (value === undefined) return null;
  const settings: PresenceSettings = Array.isArray(value) ? { channels: value as readonly string[] } : (value as PresenceSettings);
  if (typeof settings !== "object" || settings === null) throw new TypeError("option presence must be a list of channel patterns or { channels, … }");
  const channels = strings("presence.channels", settings.channels);
  if (channels.length === 0) return null;
  return {
    channels,
    leaveDelayMs: positive("presence.leaveDelayMs", settings.leaveDelayMs, 5000, 0),
    nodeTimeoutMs: positive("presence.nodeTimeoutMs", settings.nodeTimeoutMs, 15_000, 100),
    maxMembers: positive("presence.maxMembers", settings.maxMembers, 1000),
    anonymousInfo: settings.anonymousInfo === true,
  };
}

export function presenceEnabled(options: ResolvedOptions, channel: string): boolean {
  return options.presence !== null && options.presence.channels.some((pattern) => channelMatches(pattern, channel));
}

export function slowConsumerFor(options: ResolvedOptions, channel: string): SlowConsumerPolicy {
  for (const rule of options.channels) if (channelMatches(rule.match, channel)) return rule.slowConsumer ?? options.slowConsumer;
  return options.slowConsumer;
}
