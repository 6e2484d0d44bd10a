/**
 * One measured case: a fresh server child (ladder or baseline), N idle subscribers of one pattern for
 * the memory figure, then a warm-up and a steady publish phase for throughput, latency and CPU.
 */
import type { Impl } from "./ipc.js";
import { H2Pool, openSubscribers, protocolFor, type ClientOptions, type Pattern, type Subscriber } from "./load.js";
import { DeliveryMetrics, nowMs } from "./metrics.js";
import { NCHAN_LONG_POLL, NCHAN_PUBLISH, nchanWebSocketPublishRefusal, NchanServer, type NchanInstall } from "./nchan.js";
import type { BenchOptions } from "./options.js";
import { HTTP_PUBLISH_CONNECTIONS, LADDER_PUBLISH, Publisher, publisherLabel, type PublishDialect, type PublisherKind } from "./publisher.js";
import { readCpuTimes, readSchedTimes, ServerHandle, type BenchServer, type Pinning, type SchedTimes } from "./proc.js";

export interface CaseResult {
  readonly pattern: Pattern;
  readonly impl: Impl;
  readonly subscribers: number;
  readonly rate: number;
  readonly seconds: number;
  /** How messages were published: `http`, or `ws×N` (N publisher WebSockets); see {@link publisherPlan}. */
  readonly publisher: string;
  /** Publishes acknowledged (2xx, or an ack without error) in the phase. */
  readonly published: number;
  /** Publishes of the phase that were not acknowledged: refused + unanswered. */
  readonly publishFailed: number;
  /** Answered with an error (non-2xx, an error frame). */
  readonly publishRefused: number;
  /** Never answered (failed request, timeout, closed connection). */
  readonly publishUnanswered: number;
  readonly expected: number;
  readonly delivered: number;
  /** Expected deliveries that never came within the drain window (negative: duplicates). */
  readonly missing: number;
  readonly offeredPerSec: number;
  readonly deliveredPerSec: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly mean: number; readonly max: number };
  readonly publishRoundTripMs: { readonly p50: number; readonly max: number };
  /** Server utime+stime over the publish phase and its drain, from /proc/<pid>/stat. */
  readonly serverCpuUs: number;
  readonly cpuUsPerDelivered: number;
  /**
   * The kernel's share of {@link cpuUsPerDelivered}: stime of the serving process ({@link BenchServer.pid})
   * per delivery. On loopback the sender's write also runs the receiver's TCP input, so this is mostly
   * the system calls, which every server pays alike; the rest is the server's own user-space work.
   */
  readonly systemUsPerDelivered: number;
  /** Share of one core the server used during the phase; near 100 means it was saturated. */
  readonly serverCpuPercent: number;
  /** Share of one core the load generator used; near 100 means the client, not the server, may be the limit. */
  readonly clientCpuPercent: number;
  readonly phaseMs: number;
  /**
   * Time the server's and the load generator's event-loop threads waited for their CPU during the phase
   * (/proc/<pid>/task/<tid>/schedstat), whether for their own helper threads or for other processes.
   */
  readonly runQueueWaitMs: { readonly server: number; readonly load: number };
  /** CPU time of each process's own helper threads (GC, compiler), which share its pinned core, ms. */
  readonly helperThreadsMs: { readonly server: number; readonly load: number };
  /** Event-loop waiting not explained by the process's own helper threads: other processes on the core, ms. */
  readonly foreignWaitMs: { readonly server: number; readonly load: number };
  readonly idle: {
    readonly connections: number;
    readonly rssKbBefore: number;
    readonly rssKbAfter: number;
    readonly kbPerConnection: number;
    readonly heapBytesPerConnection: number;
    readonly gc: boolean;
  };
  readonly clientErrors: number;
  readonly notes: string[];
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(predicate: () => Promise<boolean> | boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return true;
    if (performance.now() > deadline) return false;
    await sleep(stepMs);
  }
}

/** Waits until `count()` reaches `expected`, or it has not moved for `quietMs`, or `maxMs` passed. */
async function drain(count: () => number, expected: number, quietMs: number, maxMs: number): Promise<"done" | "quiet" | "deadline"> {
  const deadline = performance.now() + maxMs;
  let last = -1;
  let lastChange = performance.now();
  for (;;) {
    const value = count();
    if (value >= expected) return "done";
    const now = performance.now();
    if (value !== last) {
      last = value;
      lastChange = now;
    } else if (now - lastChange > quietMs) {
      return "quiet";
    }
    if (now > deadline) return "deadline";
    await sleep(10);
  }
}

export interface PublisherPlan {
  readonly via: PublisherKind;
  readonly connections: number;
  readonly dialect: PublishDialect;
  /** `http` or `ws×N`, as the report shows it. */
  readonly label: string;
  /** Why this implementation does not publish as `--publisher` asked, or null. */
  readonly fallback: string | null;
}

/** Why `impl` cannot take the fan-out's WebSocket publishes with this shape, or null when it can. */
function webSocketPublishRefusal(impl: Impl, options: BenchOptions): string | null {
  if (impl === "nchan") return nchanWebSocketPublishRefusal(options.channels);
  return null;
}

/**
 * How an implementation's case publishes: as `--publisher` asks, except where it has no WebSocket
 * publisher for the shape (Nchan on more than one channel: its WebSocket publisher binds one channel per
 * connection), which stays on HTTP and says so. The floor takes Ladder's publish frames (bench/floor-stream.ts).
 */
export function publisherPlan(impl: Impl, options: BenchOptions): PublisherPlan {
  const dialect = impl === "nchan" ? NCHAN_PUBLISH : LADDER_PUBLISH;
  const refusal = options.publisher === "ws" ? webSocketPublishRefusal(impl, options) : null;
  const via = refusal === null ? options.publisher : "http";
  const connections = via === "ws" ? options.publisherConnections : HTTP_PUBLISH_CONNECTIONS;
  return { via, connections, dialect, label: publisherLabel(via, connections), fallback: refusal === null ? null : `published over http, not ws: ${refusal}` };
}

/** `nchan` needs where nginx and its module are (see {@link findNchan}). */
export async function runCase(
  pattern: Pattern,
  impl: Impl,
  options: BenchOptions,
  pinning: Pinning,
  log: (line: string) => void,
  nchan: NchanInstall | null = null,
): Promise<CaseResult> {
  const n = options.subscribers;
  const notes: string[] = [];
  const plan = publisherPlan(impl, options);
  if (plan.fallback) notes.push(plan.fallback);
  const maxConnections = n * 2 + 100 + (plan.via === "ws" ? plan.connections : 0);
  let server: BenchServer;
  if (impl === "nchan") {
    if (!nchan) throw new Error("the nchan case needs nginx with its Nchan module");
    server = await NchanServer.start(nchan, { cpu: pinning.serverCpu, taskset: pinning.taskset, maxConnections });
  } else {
    server = await ServerHandle.start(impl, {
      cpu: pinning.serverCpu,
      taskset: pinning.taskset,
      maxConnections,
      profileDir: options.profileDir,
      protocol: protocolFor(pattern),
      maxConcurrentStreams: Math.max(128, options.h2StreamsPerSession),
      writeDelayMs: impl === "ladder" ? options.writeDelayMs : null,
    });
  }
  const base = new URL(server.url);
  const metrics = new DeliveryMetrics();
  const h2 = pattern === "sse-h2" ? new H2Pool(base, options.h2StreamsPerSession) : undefined;
  const channels = options.channels;
  const clientOptions: ClientOptions = {
    base,
    metrics,
    pollIntervalMs: options.pollIntervalMs,
    longPollWaitSeconds: options.longPollWaitSeconds,
    h2,
    channels,
    ...(impl === "nchan" ? { longPoll: NCHAN_LONG_POLL, webSocketSubscribedOnOpen: true } : {}),
  };
  const subscribers: Subscriber[] = [];
  const publisher = new Publisher(base, channels, { via: plan.via, connections: plan.connections, dialect: plan.dialect });
  // Subscribers and messages go round the channels alike, so each message has n / channels subscribers.
  const perMessage = n / channels;
  const holds = pattern !== "poll";
  try {
    // A few connections first, so one-time costs (lazy modules, JIT, first buffers) are not charged per connection.
    const pre = Math.max(1, Math.min(50, Math.floor(n / 10)));
    subscribers.push(...(await openSubscribers(pattern, pre, clientOptions)));
    await sleep(100);
    const gc = await server.gc();
    if (!gc) notes.push("server has no gc(): memory figures include garbage");
    const before = await server.stats();
    const rssBefore = server.rssKb();

    subscribers.push(...(await openSubscribers(pattern, n - pre, clientOptions)));
    const allIn = await waitFor(async () => {
      const stats = await server.stats();
      return holds ? stats.held >= n : stats.sockets >= n;
    }, 15_000);
    if (!allIn) {
      const stats = await server.stats();
      notes.push(`only ${holds ? stats.held : stats.sockets} of ${n} subscribers seen by the server before measuring`);
    }
    await sleep(200);
    await server.gc();
    const after = await server.stats();
    const rssAfter = server.rssKb();
    const added = n - pre;
    const idle = {
      connections: added,
      rssKbBefore: rssBefore,
      rssKbAfter: rssAfter,
      kbPerConnection: added > 0 ? (rssAfter - rssBefore) / added : NaN,
      heapBytesPerConnection: added > 0 ? (after.heapUsed + after.external - before.heapUsed - before.external) / added : NaN,
      gc,
    };
    log(`  ${n} ${pattern} subscribers open; idle RSS ${rssBefore} -> ${rssAfter} kB`);
    if (h2) notes.push(`${h2.sessions} HTTP/2 connections carry the ${n} streams; KB/idle conn is per stream`);
    // After the idle figures, so the publisher's own connections are not charged to the subscribers.
    await publisher.open();

    if (options.warmupSeconds > 0) {
      // Warm-up messages carry stamps before the phase starts, so any still arriving later are not counted.
      const seenBefore = metrics.seen;
      const warm = await publisher.run(options.rate, options.warmupSeconds);
      if (warm.failed > 0) notes.push(`warm-up: ${warm.failed} of ${warm.attempted} publishes failed`);
      // Let a saturated server finish the warm-up before the phase, so the phase measures only itself.
      await drain(() => metrics.seen - seenBefore, warm.ok * perMessage, 2000, 30_000);
      await sleep(100);
    }

    let cpuBefore = 0;
    let systemBefore = 0;
    let serverSchedBefore: SchedTimes = { mainWaitMs: 0, helpersRunMs: 0 };
    let loadSchedBefore: SchedTimes = { mainWaitMs: 0, helpersRunMs: 0 };
    let clientBefore = process.cpuUsage();
    let phaseStart = 0;
    const published = await publisher.run(options.rate, options.seconds, (stamp) => {
      metrics.startMeasuring(stamp);
      phaseStart = stamp;
      cpuBefore = server.cpuUs();
      systemBefore = readCpuTimes(server.pid).systemUs;
      clientBefore = process.cpuUsage();
      serverSchedBefore = readSchedTimes(server.pid);
      loadSchedBefore = readSchedTimes(process.pid);
    });
    const expected = published.ok * perMessage;
    // Drain: until every expected delivery came, or nothing new arrived for a while.
    const quietMs = (pattern === "poll" ? options.pollIntervalMs : 0) + 2000;
    const stop = await drain(() => metrics.delivered, expected, quietMs, Math.max(30_000, options.seconds * 3000));
    if (stop === "quiet") notes.push(`drain stopped: no delivery for ${quietMs} ms`);
    if (stop === "deadline") notes.push("drain stopped at the hard deadline");
    const cpuAfter = server.cpuUs();
    const systemUs = readCpuTimes(server.pid).systemUs - systemBefore;
    const clientCpu = process.cpuUsage(clientBefore);
    const serverSched = readSchedTimes(server.pid);
    const loadSched = readSchedTimes(process.pid);
    const runQueueWaitMs = { server: serverSched.mainWaitMs - serverSchedBefore.mainWaitMs, load: loadSched.mainWaitMs - loadSchedBefore.mainWaitMs };
    const helperThreadsMs = { server: serverSched.helpersRunMs - serverSchedBefore.helpersRunMs, load: loadSched.helpersRunMs - loadSchedBefore.helpersRunMs };
    const foreignWaitMs = {
      server: Math.max(0, runQueueWaitMs.server - helperThreadsMs.server),
      load: Math.max(0, runQueueWaitMs.load - helperThreadsMs.load),
    };
    const phaseEnd = nowMs();
    const phaseMs = phaseEnd - phaseStart;
    const activeMs = (metrics.lastDeliveryAt || phaseEnd) - phaseStart;
    const serverCpuUs = cpuAfter - cpuBefore;
    if (foreignWaitMs.server > phaseMs * 0.05) notes.push(`other processes held the server's core for ~${Math.round(foreignWaitMs.server)} ms`);
    if (foreignWaitMs.load > phaseMs * 0.05) notes.push(`other processes held the load generator's core for ~${Math.round(foreignWaitMs.load)} ms`);
    const serverCpuPercent = (serverCpuUs / (phaseMs * 1000)) * 100;
    if (serverCpuPercent > 90) notes.push(`server saturated (${Math.round(serverCpuPercent)}% of its core): delivered/s is its capacity, latencies are mostly queueing`);
    if (published.failed > 0) {
      notes.push(`${published.failed} of ${published.attempted} publishes (${plan.label}) failed: ${published.refused} refused, ${published.unanswered} never answered`);
    }
    if (publisher.unmatchedAnswers > 0) notes.push(`${publisher.unmatchedAnswers} publish answers matched no publish in flight`);
    if (metrics.errors > 0) notes.push(`${metrics.errors} client errors`);
    if (metrics.delivered < expected) notes.push(`${expected - metrics.delivered} of ${expected} expected deliveries missing`);
    if (metrics.delivered > expected) notes.push(`${metrics.delivered - expected} deliveries more than expected (duplicates)`);
    return {
      pattern,
      impl,
      subscribers: n,
      rate: options.rate,
      seconds: options.seconds,
      publisher: plan.label,
      published: published.ok,
      publishFailed: published.failed,
      publishRefused: published.refused,
      publishUnanswered: published.unanswered,
      expected,
      delivered: metrics.delivered,
      missing: expected - metrics.delivered,
      offeredPerSec: options.rate * perMessage,
      deliveredPerSec: metrics.delivered / (Math.max(activeMs, 1) / 1000),
      latencyMs: {
        p50: metrics.latency.quantile(0.5),
        p99: metrics.latency.quantile(0.99),
        mean: metrics.latency.mean,
        max: metrics.latency.max,
      },
      publishRoundTripMs: { p50: published.roundTripP50Ms, max: published.roundTripMaxMs },
      serverCpuUs,
      cpuUsPerDelivered: metrics.delivered > 0 ? serverCpuUs / metrics.delivered : NaN,
      systemUsPerDelivered: metrics.delivered > 0 ? systemUs / metrics.delivered : NaN,
      serverCpuPercent,
      clientCpuPercent: ((clientCpu.user + clientCpu.system) / (phaseMs * 1000)) * 100,
      phaseMs,
      runQueueWaitMs,
      helperThreadsMs,
      foreignWaitMs,
      idle,
      clientErrors: metrics.errors,
      notes,
    };
  } finally {
    for (const subscriber of subscribers) subscriber.close();
    h2?.close();
    publisher.close();
    await server.stop();
  }
}
