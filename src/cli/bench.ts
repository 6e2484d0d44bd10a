/**
 * `ladder bench --url …`: the guide's comparison table measured against any hub — through its proxy, its
 * TLS, its network — with live progress, a text summary, and optional JSON and HTML reports.
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { runBench, type BenchOptions, type BenchPhase, type BenchReport, type Progress } from "../bench/run.js";
import { htmlReport, textTable } from "../bench/report.js";
import { PATTERNS, type Pattern, type Tally } from "../bench/subscribers.js";
import { SettingsError } from "./settings.js";

export const BENCH_USAGE = `Usage: ladder bench --url <hub> [options]

Measures each delivery pattern against a running hub, publishing through the hub's own API.

  --url <url>             the hub (http:// or https://), e.g. https://hub.example
  --patterns <list>       poll,long-poll,sse,websocket (default: all four)
  --subscribers <n>       subscribers per pattern (default 100)
  --rate <n>              messages per second, all channels together (default 20)
  --duration <s>          seconds of publishing per pattern (default 10)
  --size <bytes>          approximate size of each message's data (default 100)
  --channels <k>          channels the subscribers are spread over (default 1)
  --prefix <name>         channel names start with it, for hubs with channel rules (default ladder-bench)
  --token <jwt>           a token for subscribing and publishing (hubs with access control)
  --api-key <key>         an API key for publishing (and subscribing, without --token)
  --poll-interval <ms>    interval polling period (default 1000)
  --long-poll-wait <s>    long-poll wait (default 25)
  --no-http2              stay on HTTP/1.1 even when the hub offers HTTP/2
  --insecure              accept a certificate that does not verify (a self-signed development hub)
  --report <file.html>    write the HTML report (one file, works offline)
  --json <file.json>      write every figure as JSON

Exit code 1 when any acknowledged message was lost or duplicated without a gap signal.
`;

const OPTIONS = {
  url: { type: "string" },
  patterns: { type: "string" },
  subscribers: { type: "string" },
  rate: { type: "string" },
  duration: { type: "string" },
  size: { type: "string" },
  channels: { type: "string" },
  prefix: { type: "string" },
  token: { type: "string" },
  "api-key": { type: "string" },
  "poll-interval": { type: "string" },
  "long-poll-wait": { type: "string" },
  "no-http2": { type: "boolean" },
  insecure: { type: "boolean" },
  report: { type: "string" },
  json: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

function number(flag: string, text: string | undefined, fallback: number, min: number, max: number, whole = true): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || (whole && !Number.isInteger(value)) || value < min || value > max) {
    throw new SettingsError(`--${flag}: expected ${whole ? "a whole number" : "a number"} from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}

export interface BenchCommand {
  readonly options: BenchOptions;
  readonly reportPath?: string;
  readonly jsonPath?: string;
}

export function parseBenchArgs(args: string[]): BenchCommand | null {
  const { values } = parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false });
  if (values.help) return null;
  if (!values.url) throw new SettingsError("bench needs --url, e.g. ladder bench --url http://127.0.0.1:8080");
  let url: URL;
  try {
    url = new URL(values.url);
  } catch {
    throw new SettingsError(`--url: expected a URL with a scheme, like http://127.0.0.1:8080 or https://hub.example; got ${JSON.stringify(values.url)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new SettingsError(`--url: expected http:// or https://, got ${url.protocol}//`);
  const patterns = (values.patterns ?? PATTERNS.join(",")).split(",").map((p) => p.trim()).filter(Boolean);
  for (const p of patterns) if (!PATTERNS.includes(p as Pattern)) throw new SettingsError(`--patterns: unknown pattern ${JSON.stringify(p)}; expected some of ${PATTERNS.join(",")}`);
  if (patterns.length === 0) throw new SettingsError("--patterns: name at least one pattern");
  const prefix = values.prefix ?? "ladder-bench";
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(prefix)) throw new SettingsError(`--prefix: 1–64 characters from A-Z a-z 0-9 _ . : -, got ${JSON.stringify(prefix)}`);
  const options: BenchOptions = {
    url,
    patterns: [...new Set(patterns)] as Pattern[],
    subscribers: number("subscribers", values.subscribers, 100, 1, 100_000),
    rate: number("rate", values.rate, 20, 0.1, 1_000_000, false),
    durationSeconds: number("duration", values.duration, 10, 1, 86_400),
    size: number("size", values.size, 100, 0, 1_000_000),
    channels: number("channels", values.channels, 1, 1, 100_000),
    prefix,
    token: values.token,
    apiKey: values["api-key"],
    insecure: values.insecure ?? false,
    pollIntervalMs: number("poll-interval", values["poll-interval"], 1000, 10, 3_600_000),
    longPollWaitSeconds: number("long-poll-wait", values["long-poll-wait"], 25, 1, 3600),
    http2: !(values["no-http2"] ?? false),
  };
  return { options, reportPath: values.report, jsonPath: values.json };
}

/** A bar per phase on a terminal (redrawn in place); plain lines every two seconds elsewhere. */
export function terminalProgress(out: NodeJS.WriteStream): Progress & { end(): void } {
  const tty = out.isTTY === true;
  let current = "";
  let lastLine = 0;
  const describe = (pattern: Pattern, phase: BenchPhase, fraction: number, tally: Tally): string => {
    const pct = Math.min(100, Math.max(0, Math.round(fraction * 100)));
    const counts = phase === "connect" ? `connect p50 ${tally.connect.count ? tally.connect.quantile(0.5).toFixed(1) : "-"} ms` : `delivered ${tally.delivered.toLocaleString("en-US")}  dup ${tally.duplicates}  reconnects ${tally.reconnects}  errors ${tally.errors}`;
    if (!tty) return `${pattern} ${phase} ${pct}%  ${counts}`;
    const width = 24;
    const filled = Math.round((pct / 100) * width);
    return `${pattern.padEnd(9)} ${phase.padEnd(7)} [${"█".repeat(filled)}${"░".repeat(width - filled)}] ${String(pct).padStart(3)}%  ${counts}`;
  };
  return {
    phase(pattern, phase, fraction, tally) {
      const key = `${pattern}/${phase}`;
      const line = describe(pattern, phase, fraction, tally);
      if (tty) {
        if (current && current !== key) out.write("\n");
        out.write(`\r\x1b[2K${line}`);
      } else if (current !== key || Date.now() - lastLine >= 2000 || fraction >= 1) {
        out.write(`${line}\n`);
        lastLine = Date.now();
      }
      current = key;
    },
    end() {
      if (tty && current) out.write("\n");
      current = "";
    },
  };
}

export async function runBenchCommand(args: string[]): Promise<void> {
  const command = parseBenchArgs(args);
  if (!command) {
    process.stdout.write(BENCH_USAGE);
    return;
  }
  const { options } = command;
  const progress = terminalProgress(process.stderr);
  let report: BenchReport;
  try {
    report = await runBench(options, progress);
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as { code?: string }).code;
    throw new BenchFailure(`cannot bench ${options.url.href}: ${(error as Error).message}${cause ? ` (${cause})` : ""}`);
  } finally {
    progress.end();
  }
  process.stdout.write(textTable(report));
  if (command.jsonPath) writeFileSync(command.jsonPath, JSON.stringify(report, null, 2) + "\n");
  if (command.reportPath) writeFileSync(command.reportPath, htmlReport(report));
  if (report.results.some((r) => r.lost > 0 || r.duplicated > 0)) process.exitCode = 1;
}

/** A bench that could not run (the hub unreachable, every subscriber refused): one line, exit 1. */
export class BenchFailure extends Error {}
