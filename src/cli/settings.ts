/**
 * `ladder serve` settings: one table gives each setting its flag, environment variable and config-file
 * key, so --help, the env reader and the config reader cannot drift apart. Precedence: flag > env >
 * config file > default.
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import { ENGINE_URL_HELP } from "../engines/create.js";
import { jsonErrorPosition } from "./json-position.js";
import { DEFAULTS } from "../server/options.js";
import { DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_REQUEST_LIMITS } from "../server/edge/defaults.js";
import type { ServeOptions } from "../server/server.js";

/**
 * `bool` settings are switches on the command line (`--h2c`, `--no-http2`, or `--h2c=off`); every source
 * takes the same words for them (BOOLEAN_WORDS). `choice` settings take one of their `choices`.
 */
type Kind = "int" | "port" | "seconds" | "string" | "choice" | "bool" | "workers";

/**
 * What the table fills in: serve options, plus the TLS file names and switch that resolveSettings turns
 * into the one `tls` option once every source has been read.
 */
type Target = Mutable<ServeOptions> & {
  workers?: number;
  logLevel?: string;
  demo?: boolean;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsSelfSigned?: boolean;
  authConfigFile?: string;
  presenceLeaveDelayMs?: number;
  presenceNodeTimeoutMs?: number;
};

interface Setting {
  readonly flag: string;
  readonly env: string;
  readonly key: string;
  readonly kind: Kind;
  readonly help: string;
  readonly fallback: string;
  readonly choices?: readonly string[];
  readonly apply: (target: Target, value: number | string | boolean) => void;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const ms = (seconds: number): number => Math.round(seconds * 1000);

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export const SETTINGS: readonly Setting[] = [
  { flag: "port", env: "LADDER_PORT", key: "port", kind: "port", help: "TCP port to listen on (0 picks a free one)", fallback: "8080", apply: (t, v) => (t.port = v as number) },
  { flag: "host", env: "LADDER_HOST", key: "host", kind: "string", help: "address to bind", fallback: "127.0.0.1", apply: (t, v) => (t.host = v as string) },
  { flag: "workers", env: "LADDER_WORKERS", key: "workers", kind: "workers", help: "processes sharing the port: a number, or auto for one per core; with the memory engine they share one log", fallback: "1", apply: (t, v) => (t.workers = v as number) },
  { flag: "engine", env: "LADDER_ENGINE", key: "engine", kind: "string", help: `storage and fan-out: ${ENGINE_URL_HELP} (many nodes share a broker)`, fallback: "memory", apply: (t, v) => (t.engine = engineUrl(v as string)) },
  { flag: "history-size", env: "LADDER_HISTORY_SIZE", key: "historySize", kind: "int", help: "messages kept per channel", fallback: String(DEFAULTS.historySize), apply: (t, v) => (t.historySize = v as number) },
  { flag: "history-age", env: "LADDER_HISTORY_AGE", key: "historyAge", kind: "seconds", help: "seconds a message is kept", fallback: String(DEFAULTS.historyMaxAgeMs / 1000), apply: (t, v) => (t.historyMaxAgeMs = ms(v as number)) },
  { flag: "max-log-bytes", env: "LADDER_MAX_LOG_BYTES", key: "maxLogBytes", kind: "int", help: "memory engine: bytes of retained messages, all channels together (data JSON + 192 per message); the least recently used channels' oldest messages are evicted past it", fallback: String(DEFAULTS.maxLogBytes), apply: (t, v) => (t.maxLogBytes = v as number) },
  { flag: "max-log-channels", env: "LADDER_MAX_LOG_CHANNELS", key: "maxChannels", kind: "int", help: "memory engine: channels held at once; the least recently used without subscribers are evicted past it", fallback: String(DEFAULTS.maxChannels), apply: (t, v) => (t.maxChannels = v as number) },
  { flag: "max-wait", env: "LADDER_MAX_WAIT", key: "maxWait", kind: "seconds", help: "cap on a long-poll's wait, seconds", fallback: String(DEFAULTS.maxWaitSeconds), apply: (t, v) => (t.maxWaitSeconds = v as number) },
  { flag: "heartbeat", env: "LADDER_HEARTBEAT", key: "heartbeat", kind: "seconds", help: "SSE heartbeat and WebSocket ping interval, seconds", fallback: String(DEFAULTS.heartbeatMs / 1000), apply: (t, v) => (t.heartbeatMs = ms(v as number)) },
  { flag: "ws-timeout", env: "LADDER_WS_TIMEOUT", key: "wsTimeout", kind: "seconds", help: "drop a WebSocket peer silent for this long, seconds", fallback: String(DEFAULTS.wsTimeoutMs / 1000), apply: (t, v) => (t.wsTimeoutMs = ms(v as number)) },
  { flag: "sse-retry", env: "LADDER_SSE_RETRY", key: "sseRetry", kind: "seconds", help: "reconnect delay announced to EventSource, seconds", fallback: String(DEFAULTS.sseRetryMs / 1000), apply: (t, v) => (t.sseRetryMs = ms(v as number)) },
  { flag: "max-message-bytes", env: "LADDER_MAX_MESSAGE_BYTES", key: "maxMessageBytes", kind: "int", help: "largest publish body or WebSocket frame", fallback: String(DEFAULTS.maxMessageBytes), apply: (t, v) => (t.maxMessageBytes = v as number) },
  { flag: "max-batch-messages", env: "LADDER_MAX_BATCH_MESSAGES", key: "maxBatchMessages", kind: "int", help: "most messages in one batch publish", fallback: String(DEFAULTS.maxBatchMessages), apply: (t, v) => (t.maxBatchMessages = v as number) },
  { flag: "max-batch-bytes", env: "LADDER_MAX_BATCH_BYTES", key: "maxBatchBytes", kind: "int", help: "largest batch publish body over HTTP", fallback: String(DEFAULTS.maxBatchBytes), apply: (t, v) => (t.maxBatchBytes = v as number) },
  { flag: "max-connections", env: "LADDER_MAX_CONNECTIONS", key: "maxConnections", kind: "int", help: "open streams, WebSockets and held polls", fallback: String(DEFAULTS.maxConnections), apply: (t, v) => (t.maxConnections = v as number) },
  { flag: "max-channels", env: "LADDER_MAX_CHANNELS", key: "maxChannelsPerConnection", kind: "int", help: "channels per stream or WebSocket", fallback: String(DEFAULTS.maxChannelsPerConnection), apply: (t, v) => (t.maxChannelsPerConnection = v as number) },
  { flag: "max-buffered-bytes", env: "LADDER_MAX_BUFFERED_BYTES", key: "maxBufferedBytes", kind: "int", help: "bytes queued to one connection before the slow-consumer policy applies", fallback: String(DEFAULTS.maxBufferedBytes), apply: (t, v) => (t.maxBufferedBytes = v as number) },
  { flag: "write-delay", env: "LADDER_WRITE_DELAY", key: "writeDelay", kind: "int", help: "ms a busy stream's or WebSocket's writes may be held to go out together (0: none; idle sockets are never held)", fallback: String(DEFAULTS.writeDelayMs), apply: (t, v) => (t.writeDelayMs = v as number) },
  { flag: "slow-consumer", env: "LADDER_SLOW_CONSUMER", key: "slowConsumer", kind: "choice", choices: ["disconnect", "latest"], help: "what happens to a connection past max-buffered-bytes: disconnect | latest (skip to the newest, with a gap)", fallback: DEFAULTS.slowConsumer, apply: (t, v) => (t.slowConsumer = v as "disconnect" | "latest") },
  { flag: "tls-cert", env: "LADDER_TLS_CERT", key: "tlsCert", kind: "string", help: "PEM certificate (chain) file: serve https and wss (with --tls-key)", fallback: "none", apply: (t, v) => (t.tlsCertFile = v as string) },
  { flag: "tls-key", env: "LADDER_TLS_KEY", key: "tlsKey", kind: "string", help: "PEM private key file of --tls-cert", fallback: "none", apply: (t, v) => (t.tlsKeyFile = v as string) },
  { flag: "tls-self-signed", env: "LADDER_TLS_SELF_SIGNED", key: "tlsSelfSigned", kind: "bool", help: "serve https with a development certificate made at start (fingerprint printed, never written to disk)", fallback: "false", apply: (t, v) => (t.tlsSelfSigned = v as boolean) },
  { flag: "http2", env: "LADDER_HTTP2", key: "http2", kind: "bool", help: "with TLS, offer HTTP/2 by ALPN beside HTTP/1.1; --no-http2 for HTTP/1.1 only", fallback: "true", apply: (t, v) => (t.http2 = v as boolean) },
  { flag: "fast-lane", env: "LADDER_FAST_LANE", key: "fastLane", kind: "bool", help: "answer publishes and polls on cleartext HTTP/1.1 with Ladder's own HTTP/1.1 lane (less CPU); --no-fast-lane sends every request through node:http", fallback: "true", apply: (t, v) => (t.fastLane = v as boolean) },
  { flag: "h2c", env: "LADDER_H2C", key: "h2c", kind: "bool", help: "without TLS, also accept prior-knowledge cleartext HTTP/2, for a proxy that speaks it", fallback: "false", apply: (t, v) => (t.h2c = v as boolean) },
  { flag: "max-concurrent-streams", env: "LADDER_MAX_CONCURRENT_STREAMS", key: "maxConcurrentStreams", kind: "int", help: "streams (SSE, polls) one HTTP/2 connection may hold open", fallback: String(DEFAULT_MAX_CONCURRENT_STREAMS), apply: (t, v) => (t.maxConcurrentStreams = v as number) },
  { flag: "max-header-bytes", env: "LADDER_MAX_HEADER_BYTES", key: "maxHeaderBytes", kind: "int", help: "largest request head; 431 past it", fallback: String(DEFAULT_REQUEST_LIMITS.maxHeaderBytes), apply: (t, v) => (t.maxHeaderBytes = v as number) },
  { flag: "headers-timeout", env: "LADDER_HEADERS_TIMEOUT", key: "headersTimeout", kind: "seconds", help: "time to send a request head, finish a TLS handshake or open a first HTTP/2 stream (slow-loris), seconds", fallback: String(DEFAULT_REQUEST_LIMITS.headersTimeoutMs / 1000), apply: (t, v) => (t.headersTimeoutMs = ms(v as number)) },
  { flag: "request-timeout", env: "LADDER_REQUEST_TIMEOUT", key: "requestTimeout", kind: "seconds", help: "time to send a whole request, body included, seconds", fallback: String(DEFAULT_REQUEST_LIMITS.requestTimeoutMs / 1000), apply: (t, v) => (t.requestTimeoutMs = ms(v as number)) },
  { flag: "keep-alive-timeout", env: "LADDER_KEEP_ALIVE_TIMEOUT", key: "keepAliveTimeout", kind: "seconds", help: "close a connection idle between requests (HTTP/2: with no open stream) after this long; behind a load balancer, above its idle timeout, seconds", fallback: String(DEFAULT_REQUEST_LIMITS.keepAliveTimeoutMs / 1000), apply: (t, v) => (t.keepAliveTimeoutMs = ms(v as number)) },
  { flag: "trust-proxy", env: "LADDER_TRUST_PROXY", key: "trustProxy", kind: "string", help: "comma-separated proxies (addresses, CIDR ranges, loopback, private) whose X-Forwarded-For names the client for per-IP limits", fallback: "none", apply: (t, v) => (t.trustProxy = (v as string).split(",").map((entry) => entry.trim()).filter((entry) => entry !== "")) },
  { flag: "auth-config", env: "LADDER_AUTH_CONFIG", key: "authConfig", kind: "string", help: "JSON file with rules, defaults, jwt, apiKeys, allowedOrigins, cors, limits (docs/security.md), hooks (docs/hooks.md)", fallback: "none (anyone may do anything)", apply: (t, v) => (t.authConfigFile = v as string) },
  { flag: "presence", env: "LADDER_PRESENCE", key: "presence", kind: "string", help: "comma-separated channel patterns with presence (who is in, joins and leaves), e.g. chat.*", fallback: "none (demo.* when the demo is on)", apply: (t, v) => (t.presence = (v as string).split(",").map((entry) => entry.trim()).filter((entry) => entry !== "")) },
  { flag: "presence-leave-delay", env: "LADDER_PRESENCE_LEAVE_DELAY", key: "presenceLeaveDelay", kind: "seconds", help: "a member leaves this long after its last connection ended (reconnect grace), seconds", fallback: "5", apply: (t, v) => (t.presenceLeaveDelayMs = ms(v as number)) },
  { flag: "presence-node-timeout", env: "LADDER_PRESENCE_NODE_TIMEOUT", key: "presenceNodeTimeout", kind: "seconds", help: "a node not heard from this long is dead and its members leave, seconds", fallback: "15", apply: (t, v) => (t.presenceNodeTimeoutMs = ms(v as number)) },
  { flag: "metrics", env: "LADDER_METRICS", key: "metrics", kind: "bool", help: "serve Prometheus metrics at /metrics (anyone reaching the port can read them)", fallback: "false", apply: (t, v) => (t.metrics = v as boolean) },
  { flag: "demo", env: "LADDER_DEMO", key: "demo", kind: "bool", help: "serve the demo page at / and the browser client at /ladder-client.js; --no-demo to turn off", fallback: "true", apply: (t, v) => (t.demo = v as boolean) },
  { flag: "log-level", env: "LADDER_LOG_LEVEL", key: "logLevel", kind: "choice", choices: LOG_LEVELS, help: LOG_LEVELS.join(" | "), fallback: "info", apply: (t, v) => (t.logLevel = v as string) },
];

export class SettingsError extends Error {}

/** Checks the engine URL's scheme here, so a typo is a settings error (exit 2), not a crash at start. */
function engineUrl(text: string): string {
  if (!/^(memory(:(\/\/)?)?|(redis|rediss|nats):\/\/.+)$/.test(text)) throw new SettingsError(`engine: expected ${ENGINE_URL_HELP}, got ${JSON.stringify(text)}`);
  return text;
}

const MAX_WORKERS = 1024;

const TRUE = new Set(["true", "1", "yes", "on"]);
const FALSE = new Set(["false", "0", "no", "off"]);
/** The words a switch takes from every source: flag value, environment, config file. */
export const BOOLEAN_WORDS = [...TRUE, ...FALSE];

/** A boolean word, or undefined when `text` is none of them. */
export function parseBoolean(text: string): boolean | undefined {
  const word = text.trim().toLowerCase();
  return TRUE.has(word) ? true : FALSE.has(word) ? false : undefined;
}

/** `where` names the setting as the user wrote it: `--port`, `LADDER_PORT`, or `config file x.json, key "port"`. */
function convert(setting: Setting, raw: unknown, where: string): number | string | boolean {
  const got = `got ${JSON.stringify(raw)}`;
  switch (setting.kind) {
    case "int":
    case "port": {
      const n = typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
      if (setting.kind === "port" && !(Number.isInteger(n) && n >= 0 && n <= 65535)) throw new SettingsError(`${where}: expected a port number from 0 to 65535, ${got}`);
      if (!Number.isInteger(n) || n < 0) throw new SettingsError(`${where}: expected a whole number ≥ 0, ${got}`);
      return n;
    }
    case "seconds": {
      const n = typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
      if (!Number.isFinite(n) || n < 0) throw new SettingsError(`${where}: expected seconds ≥ 0 (e.g. 2.5), ${got}`);
      return n;
    }
    case "workers": {
      if (raw === "auto") return availableParallelism();
      const n = typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
      if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) throw new SettingsError(`${where}: expected auto or a whole number from 1 to ${MAX_WORKERS}, ${got}`);
      return n;
    }
    case "choice":
      if (typeof raw !== "string" || !setting.choices!.includes(raw)) throw new SettingsError(`${where}: expected one of ${setting.choices!.join(", ")}; ${got}`);
      return raw;
    case "string":
      if (typeof raw !== "string" || raw === "") throw new SettingsError(`${where}: expected non-empty text, ${got}`);
      return raw;
    case "bool": {
      const value = typeof raw === "boolean" ? raw : typeof raw === "string" ? parseBoolean(raw) : undefined;
      if (value === undefined) throw new SettingsError(`${where}: expected one of ${BOOLEAN_WORDS.join(", ")}; ${got}`);
      return value;
    }
  }
}

/** A switch from parseArgs: `--x` is true, `--no-x` false, neither leaves it to the other sources. */
function switchFlag(flags: Record<string, string | boolean | undefined>, flag: string): boolean | undefined {
  if (flags[flag] === true) return true;
  if (flags[`no-${flag}`] === true) return false;
  return undefined;
}

function readPem(path: string, flag: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new SettingsError(`--${flag}: cannot read ${path}: ${(error as Error).message}`);
  }
}

/**
 * A JSON object from a file; a syntax error names the file, line and column (Node 20's JSON.parse gives
 * only a character position).
 */
function readJsonObject(path: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new SettingsError(`cannot read ${what} ${path}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    const position = jsonErrorPosition(text);
    const where = position >= text.length ? "the end of the file" : `${lineAndColumn(text, position)} (${JSON.stringify(text[position])})`;
    throw new SettingsError(`${what} ${path} is not valid JSON: syntax error at ${where}; ${jsonReason(error as Error)}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new SettingsError(`${what} ${path}: expected a JSON object {…}`);
  return parsed as Record<string, unknown>;
}

/** V8's reason without the position or the echoed text, which the message gives better. */
function jsonReason(error: Error): string {
  return error.message.replace(/ in JSON at position \d+.*$/s, "").replace(/, (\.\.\.)?".*" is not valid JSON$/s, "");
}

function lineAndColumn(text: string, position: number): string {
  const before = text.slice(0, position).split("\n");
  return `line ${before.length}, column ${before[before.length - 1]!.length + 1}`;
}

const AUTH_KEYS = new Set(["rules", "defaults", "jwt", "apiKeys", "allowedOrigins", "cors", "limits", "hooks"]);

/**
 * The access-control file: kept apart from the main config because it holds secrets (HS256 secret, API
 * keys) that deserve tighter file permissions. Shapes are checked by the hub's own option checks.
 */
function readAuthConfig(path: string): Pick<ServeOptions, "auth" | "allowedOrigins" | "cors" | "limits" | "hooks"> {
  const c = readJsonObject(path, "auth-config file");
  for (const key of Object.keys(c)) if (!AUTH_KEYS.has(key)) throw new SettingsError(`auth-config file ${path}: unknown key "${key}" (known: ${[...AUTH_KEYS].join(", ")})`);
  type Options = ServeOptions;
  const auth = { rules: c.rules, defaults: c.defaults, jwt: c.jwt, apiKeys: c.apiKeys } as NonNullable<Options["auth"]>;
  return {
    auth,
    ...(c.allowedOrigins !== undefined ? { allowedOrigins: c.allowedOrigins as Options["allowedOrigins"] } : {}),
    ...(c.cors !== undefined ? { cors: c.cors as Options["cors"] } : {}),
    ...(c.limits !== undefined ? { limits: c.limits as Options["limits"] } : {}),
    // The app's hooks (docs/hooks.md): here, as the webhook secret and the headers the app checks are secrets too.
    ...(c.hooks !== undefined ? { hooks: c.hooks as Options["hooks"] } : {}),
  };
}

/** Builds serve options from a config file, the environment and parsed flags. */
export function resolveSettings(flags: Record<string, string | boolean | undefined>, env: NodeJS.ProcessEnv): ServeOptions & { logLevel: string; demo?: boolean; workers?: number } {
  const target: Target = {};
  const configPath = (flags.config as string | undefined) ?? env.LADDER_CONFIG;
  let config: Record<string, unknown> = {};
  if (configPath) {
    config = readJsonObject(configPath, "config file");
    const known = new Set([...SETTINGS.map((s) => s.key), "channels"]);
    for (const key of Object.keys(config)) if (!known.has(key)) throw new SettingsError(`config file ${configPath}: unknown key "${key}" (known: ${[...known].join(", ")})`);
    if (config.channels !== undefined) {
      if (!Array.isArray(config.channels)) throw new SettingsError(`config file ${configPath}, key "channels": expected a list like ${CHANNELS_EXAMPLE}`);
      target.channels = config.channels as ServeOptions["channels"];
    }
  }
  for (const setting of SETTINGS) {
    const fromFlag = setting.kind === "bool" ? switchFlag(flags, setting.flag) : flags[setting.flag];
    const fromEnv = env[setting.env];
    const fromConfig = config[setting.key];
    if (typeof fromFlag === "string" || typeof fromFlag === "boolean") setting.apply(target, convert(setting, fromFlag, `--${setting.flag}`));
    else if (fromEnv !== undefined && fromEnv !== "") setting.apply(target, convert(setting, fromEnv, setting.env));
    else if (fromConfig !== undefined) setting.apply(target, convert(setting, fromConfig, `config file ${configPath}, key "${setting.key}"`));
  }
  const { tlsCertFile, tlsKeyFile, tlsSelfSigned, authConfigFile, logLevel, presenceLeaveDelayMs, presenceNodeTimeoutMs, ...options } = target;
  if (Array.isArray(options.presence)) {
    const channels = options.presence as readonly string[];
    options.presence = { channels, ...(presenceLeaveDelayMs !== undefined ? { leaveDelayMs: presenceLeaveDelayMs } : {}), ...(presenceNodeTimeoutMs !== undefined ? { nodeTimeoutMs: presenceNodeTimeoutMs } : {}) };
  }
  if (authConfigFile) Object.assign(options, readAuthConfig(authConfigFile));
  if (tlsSelfSigned && (tlsCertFile || tlsKeyFile)) throw new SettingsError("--tls-self-signed and --tls-cert/--tls-key exclude each other");
  if (Boolean(tlsCertFile) !== Boolean(tlsKeyFile)) throw new SettingsError("--tls-cert and --tls-key go together");
  if (tlsCertFile && tlsKeyFile) options.tls = { cert: readPem(tlsCertFile, "tls-cert"), key: readPem(tlsKeyFile, "tls-key") };
  else if (tlsSelfSigned) options.tls = "self-signed";
  // Each worker would make its own certificate, and a browser would meet a different one per connection.
  if (tlsSelfSigned && (options.workers ?? 1) > 1) throw new SettingsError("--tls-self-signed makes one certificate per process; with --workers, use --tls-cert and --tls-key");
  // Presence lists live in each process with the memory engine: workers would each see only their own members.
  if (options.presence && (options.workers ?? 1) > 1 && !/^(redis|rediss|nats):/.test(String(options.engine ?? "memory"))) {
    throw new SettingsError("--presence with --workers needs a broker engine (--engine redis://… or nats://…): on the memory engine each worker would list only its own members");
  }
  if (options.tls && options.h2c) throw new SettingsError("--h2c is for cleartext; with TLS, HTTP/2 is negotiated by ALPN (turn it off with --no-http2)");
  return { ...options, logLevel: logLevel ?? "info" };
}

/** Rows of two aligned columns; a row's right side may hold several lines. */
export function columns(rows: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...rows.map(([left]) => left.length)) + 2;
  return rows.map(([left, right]) => `  ${left.padEnd(width)}${right.split("\n").join(`\n  ${" ".repeat(width)}`)}`).join("\n");
}

const CHANNELS_EXAMPLE = '[{"match": "prices.*", "slowConsumer": "latest"}]';

export function settingsHelp(): string {
  const rows: Array<[string, string]> = [["--config <file>", "JSON config file; its keys are the names in quotes below\nenv LADDER_CONFIG"]];
  for (const s of SETTINGS) {
    const value = s.kind === "bool" ? "" : ` <${s.kind === "seconds" ? "s" : s.kind === "int" || s.kind === "port" || s.kind === "workers" ? "n" : "v"}>`;
    rows.push([`--${s.flag}${value}`, `${s.help}\ndefault ${s.fallback} · env ${s.env} · config "${s.key}"`]);
  }
  rows.push(["(config file only)", `"channels": per-channel policies, the first matching "match" wins, e.g.\n${CHANNELS_EXAMPLE}`]);
  const switches = SETTINGS.filter((s) => s.kind === "bool").map((s) => `--${s.flag}`);
  return `${columns(rows)}

Switches (${switches.join(", ")}) need no value; --no-<switch> turns one off, and
--<switch>=<word> or --<switch> <word> take ${BOOLEAN_WORDS.join("/")}, as the
environment and the config file do. Precedence: flag > environment > config file > default.`;
}

/**
 * Reads `ladder serve`'s arguments. Switches also take a boolean word (`--metrics false`, `--demo=off`),
 * turned here into `--x` / `--no-x` for parseArgs; a word that is not boolean is refused by name.
 */
export function parseServeArgs(args: readonly string[]): Record<string, string | boolean | undefined> {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = { config: { type: "string" }, help: { type: "boolean", short: "h" } };
  const switches = new Set<string>();
  for (const s of SETTINGS) {
    if (s.kind === "bool") {
      options[s.flag] = { type: "boolean" };
      options[`no-${s.flag}`] = { type: "boolean" };
      switches.add(s.flag);
    } else {
      options[s.flag] = { type: "string" };
    }
  }
  const normalized: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(arg);
    if (!m || !switches.has(m[1]!)) {
      normalized.push(arg);
      continue;
    }
    let word = m[2];
    if (word === undefined && i + 1 < args.length && !args[i + 1]!.startsWith("-")) word = args[++i];
    if (word === undefined) {
      normalized.push(arg);
      continue;
    }
    const value = parseBoolean(word);
    if (value === undefined) throw new SettingsError(`--${m[1]}: expected one of ${BOOLEAN_WORDS.join(", ")}; got ${JSON.stringify(word)}`);
    normalized.push(value ? `--${m[1]}` : `--no-${m[1]}`);
  }
  try {
    return parseArgs({ args: normalized, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw argsError(error, "serve");
  }
}

/** node's parseArgs messages, said shorter and with where to look. */
export function argsError(error: unknown, command: string): Error {
  const code = (error as { code?: string }).code ?? "";
  if (!code.startsWith("ERR_PARSE_ARGS")) return error as Error;
  const message = (error as Error).message;
  const option = /'(-[^' ]+)/.exec(message)?.[1];
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return new SettingsError(`unknown option ${option ?? message}; see ladder ${command} --help`);
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE" && /argument missing/.test(message)) return new SettingsError(`${option?.split(",")[0] ?? message}: needs a value; see ladder ${command} --help`);
  if (code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") return new SettingsError(`unexpected argument ${/'([^']*)'/.exec(message)?.[1] ?? message}; see ladder ${command} --help`);
  return new SettingsError(`${message.split(". ")[0]}; see ladder ${command} --help`);
}
