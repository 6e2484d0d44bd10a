/** `ladder` command line: `serve` runs a hub; `publish` and `tail` talk to a running one. */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { DEFAULT_PATHS } from "../protocol/index.js";
import { serve } from "../server/server.js";
import { staticFiles } from "../server/edge/static.js";
import { DemoPublisher, demoRoutes } from "./demo-publisher.js";
import { resolveSettings, SETTINGS, SettingsError, settingsHelp } from "./settings.js";
import { BenchFailure, runBenchCommand } from "./bench.js";

const USAGE = `ladder — a realtime delivery hub (polling, long-polling, SSE, WebSocket)

Usage:
  ladder serve [options]                 run a hub (in memory, or one of many over --engine redis://… or nats://…)
  ladder publish <channel> <json> [--url U]   publish one message to a running hub
  ladder tail [channel] [--since ID] [--url U]  print a channel's messages as they arrive (SSE)
  ladder bench --url U [options]         measure every delivery pattern against a hub (ladder bench --help)
  ladder --help | --version

Options of serve:
  --config <file>               JSON config file (env LADDER_CONFIG); keys as listed below, plus "channels"
${settingsHelp()}

Switches (--tls-self-signed, --http2, --h2c) take no value; --no-<switch> turns one off; env and config
take true/false. Precedence: flag > environment > config file > default. SIGTERM or SIGINT drains gracefully.
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

async function runServe(args: string[]): Promise<void> {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = { config: { type: "string" }, help: { type: "boolean", short: "h" } };
  for (const s of SETTINGS) {
    if (s.kind === "bool") {
      // A switch and its negation: --h2c, --no-http2.
      options[s.flag] = { type: "boolean" };
      options[`no-${s.flag}`] = { type: "boolean" };
    } else {
      options[s.flag] = { type: "string" };
    }
  }
  const { values } = parseArgs({ args, options, strict: true, allowPositionals: false });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const settings = resolveSettings(values, process.env);
  const logger = pino({ level: settings.logLevel, base: undefined });
  // The demo page and its publisher (POST /demo/publisher), only when the demo is on.
  const demo = settings.demo === false ? null : new DemoPublisher();
  // The demo's chat shows who is in the room; its anonymous tabs may name themselves (info, unverified).
  const presence = settings.presence ?? (demo ? { channels: ["demo.*"], anonymousInfo: true } : undefined);
  const running = await serve({ ...settings, presence, logger, fallback: demo ? demoRoutes(demo, staticFiles()) : undefined }).catch((error: unknown) => {
    // serve() refuses bad options (a certificate that does not parse, a key that does not fit) with a TypeError.
    throw error instanceof TypeError ? new SettingsError(error.message) : error;
  });
  demo?.attach((channel, data) => running.hub.publish(channel, data));
  logger.info({ url: running.url, engine: running.hub.engine.name }, `ladder listening on ${running.url}`);
  if (!logger.isLevelEnabled("info")) process.stdout.write(`ladder listening on ${running.url}\n`);
  if (running.tls?.selfSigned) {
    // Printed so a developer can compare it with what the browser shows before accepting its warning.
    const note = `self-signed development certificate, SHA-256 fingerprint ${running.tls.fingerprint256} (not for production)`;
    logger.warn({ fingerprint256: running.tls.fingerprint256 }, note);
    if (!logger.isLevelEnabled("warn")) process.stdout.write(`ladder: ${note}\n`);
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    demo?.close();
    logger.info({ signal }, "draining");
    running.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

async function runPublish(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, options: { url: { type: "string", default: "http://127.0.0.1:8080" } }, allowPositionals: true });
  const [channel, json] = positionals;
  if (!channel || json === undefined) throw new SettingsError("usage: ladder publish <channel> <json> [--url U]");
  let data: unknown;
  try {
    data = JSON.parse(json);
  } catch {
    data = json;
  }
  const res = await fetch(new URL(DEFAULT_PATHS.messages, values.url), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  process.stdout.write(`${await res.text()}\n`);
  if (!res.ok) process.exitCode = 1;
}

async function runTail(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, options: { url: { type: "string", default: "http://127.0.0.1:8080" }, since: { type: "string" } }, allowPositionals: true });
  const url = new URL(DEFAULT_PATHS.stream, values.url);
  url.searchParams.set("channel", positionals[0] ?? "general");
  if (values.since) url.searchParams.set("since", values.since);
  const res = await fetch(url, { headers: { accept: "text/event-stream" } });
  if (!res.ok || !res.body) throw new SettingsError(`stream failed: ${res.status} ${await res.text()}`);
  const decoder = new TextDecoder();
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    process.stdout.write(decoder.decode(value, { stream: true }));
  }
}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "serve":
        return await runServe(rest);
      case "publish":
        return await runPublish(rest);
      case "tail":
        return await runTail(rest);
      case "bench":
        return await runBenchCommand(rest);
      case "--version":
      case "-v":
        process.stdout.write(`${version()}\n`);
        return;
      case undefined:
      case "--help":
      case "-h":
      case "help":
        process.stdout.write(USAGE);
        return;
      default:
        throw new SettingsError(`unknown command ${command}; see ladder --help`);
    }
  } catch (error) {
    if (error instanceof SettingsError || (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`ladder: ${(error as Error).message}\n`);
      process.exitCode = 2;
      return;
    }
    if (error instanceof BenchFailure) {
      process.stderr.write(`ladder: ${error.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw error;
  }
}
