/**
 * `ladder publish` and `ladder tail`: the commands that talk to a running hub. `tail` is the project's own
 * client (SSE, stepping down to polling), so it resumes after a drain or a restart and reports gaps.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { createClient } from "../client/index.js";
import { DEFAULT_PATHS, isId, isValidChannel, type Gap, type Message } from "../protocol/index.js";
import { argsError, SettingsError } from "./settings.js";

const DEFAULT_URL = "http://127.0.0.1:8080";
const PUBLISH_TIMEOUT_MS = 10_000;

/** A failure at run time (the hub is down, it refused): `ladder: …`, exit code 1. */
export class RuntimeError extends Error {}

export const REMOTE_HELP: ReadonlyArray<readonly [string, string]> = [
  ["--url <url>", `the hub to talk to (default ${DEFAULT_URL})`],
  ["--string", "publish: send the text as a JSON string instead of parsing it as JSON"],
  ["--data-file <file>", "publish: read the data from a file instead of the argument; - reads stdin"],
  ["--since <id>", "tail: start after this id (0: all retained history); without it, new messages only"],
  ["--json", "tail: one JSON object per line: messages {id, channel, data, time}, gaps {gap: {…}}"],
];

function hubUrl(text: string | undefined): URL {
  const raw = text ?? DEFAULT_URL;
  let url: URL | null = null;
  try {
    url = new URL(raw);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) throw new SettingsError(`--url: expected an http:// or https:// URL like ${DEFAULT_URL}, got ${JSON.stringify(raw)}`);
  return url;
}

function channelArg(name: string): string {
  if (!isValidChannel(name)) throw new SettingsError(`channel ${JSON.stringify(name)}: expected 1–128 characters from A-Z a-z 0-9 _ . : -`);
  return name;
}

/** fetch's "fetch failed", said as what it means for the user. */
function unreachable(base: URL, error: unknown): RuntimeError {
  if ((error as Error).name === "TimeoutError") return new RuntimeError(`the hub at ${base.origin} did not answer within ${PUBLISH_TIMEOUT_MS / 1000} s`);
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (error as Error).message;
  return new RuntimeError(`cannot reach the hub at ${base.origin} (${why}): is ladder serve running there? Point to it with --url`);
}

function readData(json: string | undefined, file: string | undefined, asString: boolean): unknown {
  if ((json === undefined) === (file === undefined)) throw new SettingsError("usage: ladder publish <channel> <json> | --data-file <file|-> [--string] [--url U]");
  let text: string;
  if (file !== undefined) {
    try {
      text = readFileSync(file === "-" ? 0 : file, "utf8");
    } catch (error) {
      throw new SettingsError(`--data-file: cannot read ${file}: ${(error as Error).message}`);
    }
  } else {
    text = json!;
  }
  if (asString) return text;
  try {
    return JSON.parse(text);
  } catch (error) {
    const shown = text.length > 60 ? `${text.slice(0, 57)}...` : text;
    throw new SettingsError(`${JSON.stringify(shown)} is not valid JSON (${(error as Error).message}); quote text as '"text"', or pass --string to send it as a string`);
  }
}

export async function runPublish(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { url: { type: "string" }, string: { type: "boolean" }, "data-file": { type: "string" } },
      allowPositionals: true,
    });
  } catch (error) {
    throw argsError(error, "publish");
  }
  const { values, positionals } = parsed;
  if (positionals.length === 0 || positionals.length > 2) throw new SettingsError("usage: ladder publish <channel> <json> | --data-file <file|-> [--string] [--url U]");
  const channel = channelArg(positionals[0]!);
  const base = hubUrl(values.url);
  const data = readData(positionals[1], values["data-file"], values.string === true);
  let res: Response;
  try {
    res = await fetch(new URL(DEFAULT_PATHS.messages, base), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ channel, data }),
      signal: AbortSignal.timeout(PUBLISH_TIMEOUT_MS),
    });
  } catch (error) {
    throw unreachable(base, error);
  }
  const text = await res.text();
  if (!res.ok) {
    let detail = text;
    try {
      const { error } = JSON.parse(text) as { error: { code: string; message: string } };
      detail = `${error.code}: ${error.message}`;
    } catch {
      // Not the hub's JSON error (a proxy's page): shown as it came.
    }
    throw new RuntimeError(`the hub refused the message: ${res.status} ${detail}`);
  }
  process.stdout.write(`${text}\n`);
}

export async function runTail(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { url: { type: "string" }, since: { type: "string" }, json: { type: "boolean" } }, allowPositionals: true });
  } catch (error) {
    throw argsError(error, "tail");
  }
  const { values, positionals } = parsed;
  const channels = (positionals.length > 0 ? positionals : ["general"]).map(channelArg);
  const base = hubUrl(values.url);
  const since = values.since;
  if (since !== undefined && !isId(since)) throw new SettingsError(`--since: expected a message id (like 12-0) or 0, got ${JSON.stringify(since)}`);
  try {
    await fetch(new URL("/healthz", base), { signal: AbortSignal.timeout(PUBLISH_TIMEOUT_MS) });
  } catch (error) {
    throw unreachable(base, error);
  }
  const json = values.json === true;
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);
  const note = (line: string): boolean => process.stderr.write(`ladder: ${line}\n`);
  // Retries stay frequent: someone is watching, and a restarted hub should be picked up within seconds.
  const client = createClient({ url: base.href, mode: "receive", backoff: { maxMs: 5000 } });
  let wasConnected = false;
  client.on("state", ({ newState }) => {
    if (newState === "connected") {
      note(`${wasConnected ? "reconnected" : "tailing"} ${channels.join(", ")} on ${base.origin} over ${client.transport ?? "?"}`);
      wasConnected = true;
    } else if (newState === "disconnected" && wasConnected) {
      note("connection lost; reconnecting and resuming from the last id");
    }
  });
  for (const channel of channels) {
    const sub = client.subscribe(channel, since === undefined ? {} : { since });
    sub.on("message", (m: Message) => out(json ? JSON.stringify(m) : `${m.id} ${m.channel} ${JSON.stringify(m.data)}`));
    sub.on("gap", (gap: Gap) => {
      if (json) out(JSON.stringify({ gap }));
      else note(`gap on ${gap.channel} (${gap.reason}): messages after ${gap.since} up to ${gap.resume} were not delivered`);
    });
  }
  // Runs until interrupted: the client reconnects by itself.
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      client.close();
      resolve();
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
}
