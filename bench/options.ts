/** Command-line flags of `npm run bench -- [flags]`, with their bounds. */
import { parseArgs } from "node:util";
import { ENGINE_NAMES, type EngineName } from "./engines.js";
import type { Impl } from "./ipc.js";
import { PATTERNS, type Pattern } from "./load.js";
import { PUBLISH_SCENARIOS, type PublishScenario } from "./publish.js";
import { PUBLISHER_KINDS, type PublisherKind } from "./publisher.js";

export interface BenchOptions {
  readonly subscribers: number;
  /** Channels the subscribers and the messages are spread over (the many-small-channels shape); 1 by default. */
  readonly channels: number;
  readonly rate: number;
  /** How the fan-out cases publish: a POST per message, or a frame per message on publisher WebSockets. */
  readonly publisher: PublisherKind;
  /** Publisher WebSockets of `--publisher ws`. */
  readonly publisherConnections: number;
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly patterns: readonly Pattern[];
  readonly impls: readonly Impl[];
  readonly pollIntervalMs: number;
  readonly longPollWaitSeconds: number;
  /** Streams of the sse-h2 pattern per HTTP/2 connection: 1000 subscribers at 100 make 10 connections. */
  readonly h2StreamsPerSession: number;
  readonly pin: boolean;
  /** Before each case, wait up to this many seconds for the machine to be quiet (0: do not wait). */
  readonly waitQuietSeconds: number;
  /** Runs a case again (at most this many times) when the server or the load waited for its CPU over 10% of the phase. */
  readonly retryNoisy: number;
  /** Runs of every case; the table shows the median of each figure. */
  readonly repeat: number;
  readonly out: string | null;
  /** Ladder's `writeDelayMs` (null: its default). */
  readonly writeDelayMs: number | null;
  /** Directory for V8 CPU profiles of the server children (--cpu-prof), or null. */
  readonly profileDir: string | null;
  /** Engine mode (`--engines`): ladder on these engines, one node and three, instead of ladder vs baseline. */
  readonly engines: readonly EngineName[] | null;
  /** Workers mode (`--workers`): `ladder serve --workers N` for each N, memory engine, instead of ladder vs baseline. */
  readonly workers: readonly number[] | null;
  readonly redisUrl: string;
  readonly natsUrl: string;
  /** Publish mode (`--publish`): publish rates with nobody subscribed, instead of fan-out. */
  readonly publish: readonly PublishScenario[] | null;
  /** Messages per request or frame in the batch scenarios. */
  readonly batch: number;
  /** WebSocket connections of the ws scenarios, one case each. */
  readonly wsConnections: readonly number[];
  /** h2load connections of the HTTP scenarios. */
  readonly h2loadConnections: number;
  /** Messages per measured publish run. */
  readonly publishCount: number;
  /** Messages per channel in the `history` scenario. */
  readonly history: number;
}

export const USAGE = `npm run bench -- [flags]

  --subscribers N     subscribers per pattern, on one channel          (default 1000, 1..20000)
  --channels C        spread subscribers and messages over C channels in turn (default 1); with
                      --subscribers 10000 --channels 10000 every channel has one subscriber.
                      Subscribers must be a multiple of C; sse and websocket patterns only
  --rate R            messages published per second                    (default 200, 1..20000)
  --publisher KIND    http: one POST /api/messages per message         (default http)
                      ws: one publish frame per message over persistent WebSockets,
                      each acked (Nchan: only with one channel, else it stays on http
                      and the report says so)
  --publisher-connections N  publisher WebSockets of --publisher ws   (default 1, 1..1000)
  --seconds S         length of the measured publish phase             (default 10, 1..300)
  --warmup S          unmeasured publishing before it                  (default min(1, seconds/6))
  --patterns LIST     sse,websocket,long-poll,poll,sse-tls,sse-h2      (default all six)
                      sse-tls: SSE over HTTP/1.1 with TLS, a connection per stream;
                      sse-h2: SSE over HTTP/2 with TLS, many streams per connection
  --h2-streams N      sse-h2 streams per HTTP/2 connection              (default 100, 1..10000)
  --impls LIST        ladder,baseline,nchan,floor                      (default the first three; nchan
                      when nginx and its Nchan module are installed, on sse, websocket, long-poll
                      and the publish mode's http); floor, only when named: a raw node:net
                      server (bench/floor.ts, floor-stream.ts) on sse, websocket and long-poll
                      (either publisher, also with --channels) and the publish mode's http
  --poll-interval MS  interval of the poll reference pattern           (default 1000)
  --wait-quiet S      before each case wait up to S s for a second with the machine <15% busy
                      (for shared machines; default 0: do not wait)
  --retry-noisy K     run a case again, up to K times, when another process took over 10% of
                      the server's or the load's core during the phase; keeps the quietest run
  --repeat K          run every case K times, report medians            (default 1, 1..10)
  --no-pin            do not pin server and load to separate CPUs
  --out FILE          JSON results                                      (default bench/results/latest.json)
  --profile DIR       write a V8 CPU profile of every server child into DIR
  --write-delay MS    Ladder's writeDelayMs, the longest hold of a busy socket's writes
                      (default: Ladder's default; 0: end-of-turn batching only)
  --engines LIST      memory,redis,nats: ladder alone on each engine, on one node and (redis, nats)
                      on three nodes sharing the broker, subscribers split over them and the publisher
                      on node 0; cross-node p50/p99 next to the single-node figures
                      (patterns default to sse,websocket here)
  --workers LIST      e.g. 1,2: ladder serve --workers N on the memory engine (1: the plain single
                      process); the server tree may use N CPUs, the load generator keeps its own
                      (patterns default to sse,websocket here; bench/workers.ts)
  --redis-url URL     the broker of --engines redis                      (default redis://127.0.0.1:6379)
  --nats-url URL      the broker of --engines nats                       (default nats://127.0.0.1:4222)
  --publish LIST      publish mode: http,http-batch,ws,ws-batch,history (nobody subscribed; ladder on
                      each of --engines, default memory; the baseline and Nchan where they have
                      the form; --repeat and --wait-quiet apply)
  --batch N           messages per request / frame in http-batch and ws-batch  (default 100, 2..1000)
  --ws-connections L  WebSocket publishers of the ws scenarios, one case each  (default 1,100)
  --h2load-connections N  h2load connections of the HTTP scenarios           (default 20)
  --publish-count N   messages per measured publish run                      (default 60000)
  --history N         messages per channel in the history scenario           (default 10)
  --help
`;

export class UsageError extends Error {}

function number(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) throw new UsageError(`--${name} must be a number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  return value;
}

function list<T extends string>(name: string, raw: string | undefined, allowed: readonly T[]): readonly T[] {
  if (raw === undefined) return allowed;
  const items = raw.split(",").map((s) => s.trim()).filter(Boolean);
  const bad = items.filter((s) => !(allowed as readonly string[]).includes(s));
  if (bad.length > 0 || items.length === 0) throw new UsageError(`--${name} takes a comma list of ${allowed.join(", ")}; got ${JSON.stringify(raw)}`);
  return allowed.filter((a) => items.includes(a));
}

function workerList(raw: string): number[] {
  const items = raw.split(",").map((s) => Number(s.trim()));
  if (items.length === 0 || items.some((n) => !Number.isInteger(n) || n < 1 || n > 64)) throw new UsageError(`--workers takes a comma list of worker counts from 1 to 64; got ${JSON.stringify(raw)}`);
  return items;
}

export function parseOptions(argv: readonly string[]): BenchOptions | "help" {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      subscribers: { type: "string" },
      channels: { type: "string" },
      rate: { type: "string" },
      publisher: { type: "string" },
      "publisher-connections": { type: "string" },
      seconds: { type: "string" },
      warmup: { type: "string" },
      patterns: { type: "string" },
      impls: { type: "string" },
      "poll-interval": { type: "string" },
      "h2-streams": { type: "string" },
      "no-pin": { type: "boolean" },
      repeat: { type: "string" },
      "wait-quiet": { type: "string" },
      "retry-noisy": { type: "string" },
      out: { type: "string" },
      profile: { type: "string" },
      "write-delay": { type: "string" },
      engines: { type: "string" },
      workers: { type: "string" },
      "redis-url": { type: "string" },
      "nats-url": { type: "string" },
      publish: { type: "string" },
      batch: { type: "string" },
      "ws-connections": { type: "string" },
      "h2load-connections": { type: "string" },
      "publish-count": { type: "string" },
      history: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  const seconds = number("seconds", values.seconds, 10, 1, 300);
  const subscribers = Math.round(number("subscribers", values.subscribers, 1000, 1, 20_000));
  const channels = Math.round(number("channels", values.channels, 1, 1, 20_000));
  const patterns = list("patterns", values.patterns ?? (values.engines !== undefined || values.workers !== undefined ? "sse,websocket" : undefined), PATTERNS);
  if (channels > 1 && values.publish === undefined) {
    if (subscribers % channels !== 0) throw new UsageError(`--subscribers (${subscribers}) must be a multiple of --channels (${channels})`);
    // The baseline routes by channel for SSE and WebSocket only; its polls read one shared history.
    const other = patterns.filter((p) => p !== "sse" && p !== "websocket");
    if (other.length > 0 || values.patterns === undefined) throw new UsageError(`--channels needs --patterns sse and/or websocket`);
  }
  const publisher = values.publisher ?? "http";
  if (!(PUBLISHER_KINDS as readonly string[]).includes(publisher)) throw new UsageError(`--publisher takes ${PUBLISHER_KINDS.join(" or ")}; got ${JSON.stringify(publisher)}`);
  if (publisher !== "http" && (values.engines !== undefined || values.workers !== undefined || values.publish !== undefined)) {
    throw new UsageError(`--publisher ${publisher} applies to the fan-out cases, not to --engines, --workers or --publish`);
  }
  if (values["publisher-connections"] !== undefined && publisher !== "ws") throw new UsageError("--publisher-connections needs --publisher ws");
  return {
    subscribers,
    channels,
    rate: number("rate", values.rate, 200, 1, 20_000),
    publisher: publisher as PublisherKind,
    publisherConnections: Math.round(number("publisher-connections", values["publisher-connections"], 1, 1, 1000)),
    seconds,
    warmupSeconds: number("warmup", values.warmup, Math.min(1, seconds / 6), 0, 60),
    patterns,
    // The floor (bench/floor.ts) is a measuring stick, run only when named.
    impls: list<Impl>("impls", values.impls ?? "ladder,baseline,nchan", ["ladder", "baseline", "nchan", "floor"]),
    pollIntervalMs: number("poll-interval", values["poll-interval"], 1000, 10, 60_000),
    longPollWaitSeconds: 25,
    h2StreamsPerSession: Math.round(number("h2-streams", values["h2-streams"], 100, 1, 10_000)),
    pin: !values["no-pin"],
    waitQuietSeconds: number("wait-quiet", values["wait-quiet"], 0, 0, 3600),
    retryNoisy: Math.round(number("retry-noisy", values["retry-noisy"], 0, 0, 10)),
    repeat: Math.round(number("repeat", values.repeat, 1, 1, 10)),
    out: values.out ?? null,
    profileDir: values.profile ?? null,
    writeDelayMs: values["write-delay"] === undefined ? null : number("write-delay", values["write-delay"], 0, 0, 1000),
    engines: values.engines === undefined ? null : list<EngineName>("engines", values.engines, ENGINE_NAMES),
    workers: values.workers === undefined ? null : workerList(values.workers),
    redisUrl: values["redis-url"] ?? "redis://127.0.0.1:6379",
    natsUrl: values["nats-url"] ?? "nats://127.0.0.1:4222",
    publish: values.publish === undefined ? null : list<PublishScenario>("publish", values.publish, PUBLISH_SCENARIOS),
    batch: Math.round(number("batch", values.batch, 100, 2, 1000)),
    wsConnections: (values["ws-connections"] ?? "1,100").split(",").map((v) => Math.round(number("ws-connections", v, 1, 1, 5000))),
    h2loadConnections: Math.round(number("h2load-connections", values["h2load-connections"], 20, 1, 1000)),
    publishCount: Math.round(number("publish-count", values["publish-count"], 60_000, 100, 10_000_000)),
    history: Math.round(number("history", values.history, 10, 1, 1000)),
  };
}
