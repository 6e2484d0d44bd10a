/**
 * One `ladder bench` run: for each pattern, connect the subscribers, publish at a steady rate through the
 * hub's own API, wait until every subscriber has everything (or stops getting anything), and turn what
 * was counted into the figures of the guide's comparison table. Nothing here needs more than the hub's
 * URL (and a token when it has access control).
 */
import { readFileSync } from "node:fs";
import { compareIds, type Gap } from "../protocol/index.js";
import { nowMs, type LatencyHistogram } from "./histogram.js";
import { httpClient, offersH2, readAll, WireCounter, type Target } from "./connections.js";
import { Publisher, type Acked } from "./publisher.js";
import { createSubscriber, Tally, type Pattern, type Subscriber, type SubscriberContext } from "./subscribers.js";

export interface BenchOptions {
  readonly url: URL;
  readonly patterns: readonly Pattern[];
  readonly subscribers: number;
  /** Messages per second, all channels together. */
  readonly rate: number;
  readonly durationSeconds: number;
  /** Approximate size of each message's data, bytes. */
  readonly size: number;
  readonly channels: number;
  /** Channel names are `<prefix>-<run>-<pattern>-<k>`: a token's rules can allow the prefix. */
  readonly prefix: string;
  readonly token?: string;
  readonly apiKey?: string;
  readonly insecure: boolean;
  readonly pollIntervalMs: number;
  readonly longPollWaitSeconds: number;
  /** Use HTTP/2 when the hub offers it (https only). Default true. */
  readonly http2: boolean;
}

export type BenchPhase = "connect" | "publish" | "drain";

export interface Progress {
  phase(pattern: Pattern, phase: BenchPhase, fraction: number, tally: Tally): void;
}

export interface Quantiles {
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
  readonly mean: number;
}

export interface PatternResult {
  readonly pattern: Pattern;
  readonly protocol: "http/1.1" | "h2";
  readonly subscribers: number;
  readonly connected: number;
  readonly connectMs: Quantiles;
  readonly published: number;
  readonly publishFailures: number;
  readonly lastPublishFailure: string;
  readonly expected: number;
  readonly delivered: number;
  readonly lost: number;
  readonly duplicated: number;
  /** Deliveries the hub said it skipped (a gap signal covered them): not counted as lost. */
  readonly gapped: number;
  readonly gaps: number;
  readonly latencyMs: Quantiles;
  readonly deliveriesPerSecond: number;
  readonly bytesInPerDelivery: number;
  readonly bytesOutPerDelivery: number;
  readonly requestsPerDelivery: number;
  readonly requests: number;
  readonly emptyAnswers: number;
  readonly reconnects: number;
  readonly errors: number;
  readonly lastError: string;
  /** This process's CPU over the publish and drain phases, % of one core. */
  readonly clientCpuPercent: number;
  /** True when the load generator itself was the bottleneck: its figures are a floor, not the hub's limit. */
  readonly clientSaturated: boolean;
  readonly perSecond: { readonly delivered: readonly number[]; readonly published: readonly number[] };
  readonly histogram: ReadonlyArray<readonly [number, number]>;
}

export interface BenchReport {
  readonly version: string;
  readonly startedAt: string;
  readonly url: string;
  readonly readyz: { readonly status: number; readonly body: unknown };
  readonly options: Omit<BenchOptions, "url" | "token" | "apiKey"> & { readonly auth: "none" | "token" | "api-key" };
  readonly results: readonly PatternResult[];
}

const PATHS = { messages: "/api/messages", stream: "/api/stream", websocket: "/api/ws" } as const;
const CONNECT_BATCH = 50;
/** A drain ends when every subscriber has everything, or when nothing arrived for this long (plus a poll interval). */
const DRAIN_IDLE_MS = 3000;
const DRAIN_MAX_MS = 60_000;
/** Above this share of one core the load generator, not the hub, may be what limits the figures. */
const SATURATED_PERCENT = 90;

export function ladderVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

function quantiles(h: LatencyHistogram): Quantiles {
  const round = (v: number): number => (Number.isFinite(v) ? Math.round(v * 1000) / 1000 : 0);
  return { p50: round(h.quantile(0.5)), p90: round(h.quantile(0.9)), p99: round(h.quantile(0.99)), p999: round(h.quantile(0.999)), max: round(h.max), mean: round(h.mean) };
}

function covered(id: string, gaps: readonly Gap[]): boolean {
  for (const gap of gaps) {
    try {
      if (compareIds(gap.since, id) < 0 && compareIds(id, gap.resume) <= 0) return true;
    } catch {
      // A cursor that is not a plain id (a composite of several channels): it cannot be placed, so it covers nothing.
    }
  }
  return false;
}

/** What one subscriber missed of what the hub acknowledged on its channel, and what a gap signal excused. */
export function account(received: ReadonlyMap<number, number>, gaps: readonly Gap[], acked: readonly Acked[]): { lost: number; gapped: number } {
  let lost = 0;
  let gapped = 0;
  for (const { seq, id } of acked) {
    if (received.has(seq)) continue;
    if (covered(id, gaps)) gapped++;
    else lost++;
  }
  return { lost, gapped };
}

function targetFor(options: BenchOptions, credential: string | undefined): Target {
  return { base: options.url, headers: credential ? { authorization: `Bearer ${credential}` } : {}, insecure: options.insecure };
}

/** GET /readyz: the hub is there and says what it runs on. Throws with a readable reason when it is not. */
export async function readyz(options: BenchOptions): Promise<{ status: number; body: unknown }> {
  const http = httpClient(targetFor(options, options.token ?? options.apiKey), new WireCounter(), false);
  try {
    const answer = await http.request("GET", "/readyz");
    const text = await readAll(answer, 64 * 1024);
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // Not a Ladder hub, or a proxy's page: kept as text for the report.
    }
    return { status: answer.status, body };
  } finally {
    http.close();
  }
}

async function runPattern(options: BenchOptions, pattern: Pattern, runId: string, h2: boolean, progress: Progress): Promise<PatternResult> {
  const counter = new WireCounter();
  const useH2 = h2 && pattern !== "websocket";
  const subscriberTarget = targetFor(options, options.token ?? options.apiKey);
  const http = httpClient(subscriberTarget, counter, useH2);
  const publishHttp = httpClient(targetFor(options, options.apiKey ?? options.token), new WireCounter(), h2);
  const tally = new Tally();
  const context: SubscriberContext = {
    target: subscriberTarget,
    http,
    counter,
    tally,
    paths: PATHS,
    pollIntervalMs: options.pollIntervalMs,
    longPollWaitSeconds: options.longPollWaitSeconds,
  };
  const channels = Array.from({ length: options.channels }, (_, k) => `${options.prefix}-${runId}-${pattern}-${k}`);
  const subscribers: Subscriber[] = [];
  let connected = 0;
  try {
    for (let i = 0; i < options.subscribers; i += CONNECT_BATCH) {
      const batch: Subscriber[] = [];
      for (let j = i; j < Math.min(options.subscribers, i + CONNECT_BATCH); j++) {
        const subscriber = createSubscriber(pattern, context, channels[j % channels.length]!);
        subscribers.push(subscriber);
        batch.push(subscriber);
        subscriber.start();
      }
      const settled = await Promise.allSettled(batch.map((s) => s.ready));
      connected += settled.filter((s) => s.status === "fulfilled").length;
      progress.phase(pattern, "connect", subscribers.length / options.subscribers, tally);
    }
    if (connected === 0) throw new Error(`no ${pattern} subscriber could connect: ${tally.lastError}`);

    // Steady state only from here: the connect phase's handshakes are not charged per delivery.
    const bytesIn0 = counter.bytesIn;
    const bytesOut0 = counter.bytesOut;
    const requests0 = tally.requests;
    const empty0 = tally.emptyAnswers;
    const errors0 = tally.errors;
    const reconnects0 = tally.reconnects;
    const cpu0 = process.cpuUsage();
    const wall0 = nowMs();
    tally.start = wall0;
    const publisher = new Publisher(publishHttp, PATHS.messages, channels, options.size);
    const total = Math.round(options.rate * options.durationSeconds);
    await publisher.run(options.rate, options.durationSeconds, () => progress.phase(pattern, "publish", total === 0 ? 1 : publisher.sent / total, tally));

    const live = subscribers.filter((s) => s.active);
    const due = (s: Subscriber): number => publisher.acked.get(s.channel)!.length;
    const expected = live.reduce((sum, s) => sum + due(s), 0);
    const drainStart = nowMs();
    for (;;) {
      const have = live.reduce((sum, s) => sum + Math.min(s.received.size, due(s)), 0);
      progress.phase(pattern, "drain", expected === 0 ? 1 : have / expected, tally);
      if (have >= expected) break;
      const idle = nowMs() - Math.max(tally.lastDeliveryAt, drainStart);
      if (idle > DRAIN_IDLE_MS + options.pollIntervalMs || nowMs() - drainStart > DRAIN_MAX_MS) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const cpu = process.cpuUsage(cpu0);
    const wall = nowMs() - wall0;
    const clientCpuPercent = Math.round(((cpu.user + cpu.system) / 1000 / wall) * 1000) / 10;

    let lost = 0;
    let gapped = 0;
    for (const s of live) {
      const counted = account(s.received, s.gapsSeen, publisher.acked.get(s.channel)!);
      lost += counted.lost;
      gapped += counted.gapped;
    }
    const delivered = tally.delivered;
    const per = (n: number): number => (delivered === 0 ? 0 : Math.round((n / delivered) * 100) / 100);
    const span = tally.lastDeliveryAt > wall0 ? (tally.lastDeliveryAt - wall0) / 1000 : options.durationSeconds;
    return {
      pattern,
      protocol: http.protocol,
      subscribers: options.subscribers,
      connected,
      connectMs: quantiles(tally.connect),
      published: publisher.sent,
      publishFailures: publisher.failed,
      lastPublishFailure: publisher.lastFailure,
      expected,
      delivered,
      lost,
      duplicated: tally.duplicates,
      gapped,
      gaps: tally.gaps,
      latencyMs: quantiles(tally.latency),
      deliveriesPerSecond: Math.round(delivered / span),
      bytesInPerDelivery: per(counter.bytesIn - bytesIn0),
      bytesOutPerDelivery: per(counter.bytesOut - bytesOut0),
      requestsPerDelivery: per(tally.requests - requests0),
      requests: tally.requests - requests0,
      emptyAnswers: tally.emptyAnswers - empty0,
      reconnects: tally.reconnects - reconnects0,
      errors: tally.errors - errors0,
      lastError: tally.lastError,
      clientCpuPercent,
      clientSaturated: clientCpuPercent >= SATURATED_PERCENT,
      perSecond: { delivered: tally.perSecond.slice(), published: publisher.perSecond.slice() },
      histogram: tally.latency.buckets(),
    };
  } finally {
    for (const s of subscribers) s.close();
    http.close();
    publishHttp.close();
  }
}

export async function runBench(options: BenchOptions, progress: Progress): Promise<BenchReport> {
  const startedAt = new Date().toISOString();
  const ready = await readyz(options);
  const h2 = options.http2 && (await offersH2(targetFor(options, undefined)));
  const runId = Math.random().toString(36).slice(2, 8);
  const results: PatternResult[] = [];
  for (const pattern of options.patterns) results.push(await runPattern(options, pattern, runId, h2, progress));
  const { url: _url, token, apiKey, ...rest } = options;
  return {
    version: ladderVersion(),
    startedAt,
    url: options.url.href,
    readyz: ready,
    options: { ...rest, auth: apiKey ? "api-key" : token ? "token" : "none" },
    results,
  };
}
