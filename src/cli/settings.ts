/**
 * `ladder serve` settings: one table gives each setting its flag, environment variable and config-file
 * key, so --help, the env reader and the config reader cannot drift apart. Precedence: flag > env >
 * config file > default.
 */
import { readFileSync } from "node:fs";
import { DEFAULTS } from "../server/options.js";
import type { ServeOptions } from "../server/server.js";

type Kind = "int" | "seconds" | "string" | "policy";

interface Setting {
  readonly flag: string;
  readonly env: string;
  readonly key: string;
  readonly kind: Kind;
  readonly help: string;
  readonly fallback: string;
  readonly apply: (target: Mutable<ServeOptions> & { logLevel?: string }, value: number | string) => void;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const ms = (seconds: number): number => Math.round(seconds * 1000);

export const SETTINGS: readonly Setting[] = [
  { flag: "port", env: "LADDER_PORT", key: "port", kind: "int", help: "TCP port to listen on", fallback: "8080", apply: (t, v) => (t.port = v as number) },
  { flag: "host", env: "LADDER_HOST", key: "host", kind: "string", help: "address to bind", fallback: "127.0.0.1", apply: (t, v) => (t.host = v as string) },
  { flag: "history-size", env: "LADDER_HISTORY_SIZE", key: "historySize", kind: "int", help: "messages kept per channel", fallback: String(DEFAULTS.historySize), apply: (t, v) => (t.historySize = v as number) },
  { flag: "history-age", env: "LADDER_HISTORY_AGE", key: "historyAge", kind: "seconds", help: "seconds a message is kept", fallback: String(DEFAULTS.historyMaxAgeMs / 1000), apply: (t, v) => (t.historyMaxAgeMs = ms(v as number)) },
  { flag: "max-wait", env: "LADDER_MAX_WAIT", key: "maxWait", kind: "seconds", help: "cap on a long-poll's wait, seconds", fallback: String(DEFAULTS.maxWaitSeconds), apply: (t, v) => (t.maxWaitSeconds = v as number) },
  { flag: "heartbeat", env: "LADDER_HEARTBEAT", key: "heartbeat", kind: "seconds", help: "SSE heartbeat and WebSocket ping interval, seconds", fallback: String(DEFAULTS.heartbeatMs / 1000), apply: (t, v) => (t.heartbeatMs = ms(v as number)) },
  { flag: "ws-timeout", env: "LADDER_WS_TIMEOUT", key: "wsTimeout", kind: "seconds", help: "drop a WebSocket peer silent for this long, seconds", fallback: String(DEFAULTS.wsTimeoutMs / 1000), apply: (t, v) => (t.wsTimeoutMs = ms(v as number)) },
  { flag: "sse-retry", env: "LADDER_SSE_RETRY", key: "sseRetry", kind: "seconds", help: "reconnect delay announced to EventSource, seconds", fallback: String(DEFAULTS.sseRetryMs / 1000), apply: (t, v) => (t.sseRetryMs = ms(v as number)) },
  { flag: "max-message-bytes", env: "LADDER_MAX_MESSAGE_BYTES", key: "maxMessageBytes", kind: "int", help: "largest publish body or WebSocket frame", fallback: String(DEFAULTS.maxMessageBytes), apply: (t, v) => (t.maxMessageBytes = v as number) },
  { flag: "max-connections", env: "LADDER_MAX_CONNECTIONS", key: "maxConnections", kind: "int", help: "open streams, WebSockets and held polls", fallback: String(DEFAULTS.maxConnections), apply: (t, v) => (t.maxConnections = v as number) },
  { flag: "max-channels", env: "LADDER_MAX_CHANNELS", key: "maxChannelsPerConnection", kind: "int", help: "channels per stream or WebSocket", fallback: String(DEFAULTS.maxChannelsPerConnection), apply: (t, v) => (t.maxChannelsPerConnection = v as number) },
  { flag: "max-buffered-bytes", env: "LADDER_MAX_BUFFERED_BYTES", key: "maxBufferedBytes", kind: "int", help: "bytes queued to one connection before the slow-consumer policy applies", fallback: String(DEFAULTS.maxBufferedBytes), apply: (t, v) => (t.maxBufferedBytes = v as number) },
  { flag: "slow-consumer", env: "LADDER_SLOW_CONSUMER", key: "slowConsumer", kind: "policy", help: "disconnect | latest", fallback: DEFAULTS.slowConsumer, apply: (t, v) => (t.slowConsumer = v as "disconnect" | "latest") },
  { flag: "log-level", env: "LADDER_LOG_LEVEL", key: "logLevel", kind: "string", help: "fatal | error | warn | info | debug | silent", fallback: "info", apply: (t, v) => (t.logLevel = v as string) },
];

export class SettingsError extends Error {}

function convert(setting: Setting, raw: unknown, source: string): number | string {
  const where = `${source} ${setting.kind === "string" || setting.kind === "policy" ? "" : "(a number) "}`;
  switch (setting.kind) {
    case "int": {
      const n = typeof raw === "number" ? raw : Number(raw);
      if (!Number.isInteger(n) || n < 0) throw new SettingsError(`${where}${setting.flag}: expected a whole number, got ${JSON.stringify(raw)}`);
      return n;
    }
    case "seconds": {
      const n = typeof raw === "number" ? raw : Number(raw);
      if (!Number.isFinite(n) || n < 0) throw new SettingsError(`${where}${setting.flag}: expected seconds ≥ 0, got ${JSON.stringify(raw)}`);
      return n;
    }
    case "policy":
      if (raw !== "disconnect" && raw !== "latest") throw new SettingsError(`${source} ${setting.flag}: expected disconnect or latest`);
      return raw;
    case "string":
      if (typeof raw !== "string" || raw === "") throw new SettingsError(`${source} ${setting.flag}: expected text`);
      return raw;
  }
}


/** Builds serve options from a config file, the environment and parsed flags. */
export function resolveSettings(flags: Record<string, string | boolean | undefined>, env: NodeJS.ProcessEnv): ServeOptions & { logLevel: string } {
  const target: Mutable<ServeOptions> & { logLevel?: string } = {};
  const configPath = (flags.config as string | undefined) ?? env.LADDER_CONFIG;
  let config: Record<string, unknown> = {};
  if (configPath) {
    let text: string;
    try {
      text = readFileSync(configPath, "utf8");
    } catch (error) {
      throw new SettingsError(`cannot read config file ${configPath}: ${(error as Error).message}`);
    }
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
      config = parsed as Record<string, unknown>;
    } catch (error) {
      throw new SettingsError(`config file ${configPath} is not a JSON object: ${(error as Error).message}`);
    }
    const known = new Set([...SETTINGS.map((s) => s.key), "channels"]);
    for (const key of Object.keys(config)) if (!known.has(key)) throw new SettingsError(`config file ${configPath}: unknown key ${key}`);
    if (config.channels !== undefined) target.channels = config.channels as ServeOptions["channels"];
  }
  for (const setting of SETTINGS) {
    const fromFlag = flags[setting.flag];
    const fromEnv = env[setting.env];
    const fromConfig = config[setting.key];
    if (typeof fromFlag === "string") setting.apply(target, convert(setting, fromFlag, "--"));
    else if (fromEnv !== undefined && fromEnv !== "") setting.apply(target, convert(setting, fromEnv, setting.env));
    else if (fromConfig !== undefined) setting.apply(target, convert(setting, fromConfig, `config ${setting.key}`));
  }
  return { ...target, logLevel: target.logLevel ?? "info" };
}

export function settingsHelp(): string {
  const rows = SETTINGS.map((s) => `  --${s.flag} <${s.kind === "seconds" ? "s" : s.kind === "int" ? "n" : "v"}>`.padEnd(30) + `${s.help} (default ${s.fallback}; env ${s.env}; config "${s.key}")`);
  return rows.join("\n");
}
