/**
 * `npm run bench -- --engines memory,redis,nats`: Ladder on each engine, one node and three nodes.
 *
 * Single node: one ladder server on the engine, every subscriber on it. Three nodes (broker engines only;
 * the memory engine cannot share): three ladder servers on one broker, the subscribers split evenly over
 * them, the publisher posting to node 0 — so two thirds of the deliveries cross nodes through the broker.
 * Reported per case: delivered/s, publish-to-delivery p50/p99 over all deliveries and over the
 * cross-node ones only, and the servers' CPU. Every case uses its own Redis key prefix or JetStream
 * stream, removed after it.
 */
import { ServerHandle, waitForQuiet, type Pinning } from "./proc.js";
import { openSubscribers, protocolFor, type ClientOptions, type Pattern, type Subscriber } from "./load.js";
import { Publisher } from "./publisher.js";
import { DeliveryMetrics } from "./metrics.js";
import type { BenchOptions } from "./options.js";

export type EngineName = "memory" | "redis" | "nats";
export const ENGINE_NAMES: readonly EngineName[] = ["memory", "redis", "nats"];

export interface EngineCaseResult {
  readonly engine: EngineName;
  readonly nodes: number;
  readonly pattern: Pattern;
  readonly subscribers: number;
  readonly published: number;
  readonly publishFailed: number;
  readonly expected: number;
  readonly delivered: number;
  readonly deliveredPerSec: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number };
  /** Deliveries to subscribers of nodes other than the publisher's; NaN with one node. */
  readonly crossNodeLatencyMs: { readonly p50: number; readonly p99: number };
  readonly publishRoundTripMs: { readonly p50: number; readonly max: number };
  /** Sum over the nodes of their share of a core during the phase. */
  readonly serverCpuPercent: number;
  /** The nodes' CPU time over the phase and the drain, µs. */
  readonly serverCpuUs: number;
  readonly notes: string[];
}

/** Records into its own figures and into the overall ones: the cross-node subscribers use it. */
class TeeMetrics extends DeliveryMetrics {
  readonly #also: DeliveryMetrics;

  constructor(also: DeliveryMetrics) {
    super();
    this.#also = also;
  }

  override record(t: number, now: number): void {
    super.record(t, now);
    this.#also.record(t, now);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(count: () => number, expected: number, quietMs: number, maxMs: number): Promise<void> {
  const deadline = performance.now() + maxMs;
  let last = -1;
  let lastChange = performance.now();
  while (count() < expected && performance.now() < deadline) {
    if (count() !== last) {
      last = count();
      lastChange = performance.now();
    } else if (performance.now() - lastChange > quietMs) {
      return;
    }
    await sleep(10);
  }
}

/** The engine URL of one case, in a namespace of its own. */
export function engineUrl(engine: EngineName, options: BenchOptions, tag: string): string {
  if (engine === "memory") return "memory";
  if (engine === "redis") return `${options.redisUrl}?prefix=${encodeURIComponent(`ladder-bench:${tag}:`)}`;
  return `${options.natsUrl}?stream=LADDER_BENCH_${tag}&prefix=ladder-bench.${tag}`;
}

export async function cleanup(engine: EngineName, options: BenchOptions, tag: string): Promise<void> {
  if (engine === "redis") {
    const { createClient } = await import("redis");
    const client = createClient({ url: options.redisUrl });
    client.on("error", () => {});
    await client.connect();
    for await (const keys of client.scanIterator({ MATCH: `ladder-bench:${tag}:*`, COUNT: 500 })) if (keys.length > 0) await client.del(keys);
    client.destroy();
  } else if (engine === "nats") {
    const { connect } = await import("@nats-io/transport-node");
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const { hostname, port } = new URL(options.natsUrl);
    const nc = await connect({ servers: `${hostname}:${port}` });
    await (await jetstreamManager(nc)).streams.delete(`LADDER_BENCH_${tag}`).catch(() => false);
    await nc.close();
  }
}

let caseSeq = 0;

/** What a case needs of a server: where it listens, its CPU time, and a way to stop it. */
export interface BenchServer {
  readonly url: string;
  cpuUs(): number;
  stop(): Promise<void>;
}

export async function runEngineCase(
  pattern: Pattern,
  engine: EngineName,
  nodeCount: number,
  options: BenchOptions,
  pinning: Pinning,
  log: (line: string) => void,
  /** Starts the servers instead (bench/workers.ts: one `ladder serve --workers N`); `engine` then only names the case. */
  startServers?: () => Promise<BenchServer[]>,
): Promise<EngineCaseResult> {
  const n = options.subscribers;
  const tag = `${process.pid}_${++caseSeq}`;
  const url = engineUrl(engine, options, tag);
  const notes: string[] = [];
  const servers: BenchServer[] = [];
  const subscribers: Subscriber[] = [];
  let publisher: Publisher | null = null;
  try {
    // Every node on the server core: three nodes get no more CPU than one, so the figures show what
    // spreading over a broker costs rather than what more cores buy.
    for (let i = 0; i < nodeCount && !startServers; i++) {
      servers.push(
        await ServerHandle.start("ladder", { cpu: pinning.serverCpu, taskset: pinning.taskset, maxConnections: n * 2 + 100, protocol: protocolFor(pattern), engine: url }),
      );
    }
    if (startServers) servers.push(...(await startServers()));
    const all = new DeliveryMetrics();
    const cross = new TeeMetrics(all);
    for (let i = 0; i < nodeCount; i++) {
      const share = Math.floor(n / nodeCount) + (i < n % nodeCount ? 1 : 0);
      const client: ClientOptions = {
        base: new URL(servers[i]!.url),
        metrics: i === 0 ? all : cross,
        pollIntervalMs: options.pollIntervalMs,
        longPollWaitSeconds: options.longPollWaitSeconds,
      };
      subscribers.push(...(await openSubscribers(pattern, share, client)));
    }
    log(`  ${n} ${pattern} subscribers open on ${nodeCount} node${nodeCount > 1 ? "s" : ""} (${engine})`);
    await sleep(200);
    publisher = new Publisher(new URL(servers[0]!.url));
    if (options.warmupSeconds > 0) {
      const seenBefore = all.seen;
      const warm = await publisher.run(options.rate, options.warmupSeconds);
      await until(() => all.seen - seenBefore, warm.ok * n, 2000, 30_000);
      await sleep(100);
    }
    let cpuBefore = 0;
    let phaseStart = 0;
    const published = await publisher.run(options.rate, options.seconds, (stamp) => {
      all.startMeasuring(stamp);
      cross.startMeasuring(stamp);
      phaseStart = stamp;
      cpuBefore = servers.reduce((sum, s) => sum + s.cpuUs(), 0);
    });
    const expected = published.ok * n;
    const quietMs = (pattern === "poll" ? options.pollIntervalMs : 0) + 2000;
    await until(() => all.delivered, expected, quietMs, Math.max(30_000, options.seconds * 3000));
    const phaseMs = performance.timeOrigin + performance.now() - phaseStart;
    const activeMs = (all.lastDeliveryAt || performance.timeOrigin + performance.now()) - phaseStart;
    const serverCpuUs = servers.reduce((sum, s) => sum + s.cpuUs(), 0) - cpuBefore;
    if (published.failed > 0) notes.push(`${published.failed} publishes failed`);
    if (all.delivered < expected) notes.push(`${expected - all.delivered} of ${expected} expected deliveries missing`);
    if (all.delivered > expected) notes.push(`${all.delivered - expected} deliveries more than expected (duplicates)`);
    return {
      engine,
      nodes: nodeCount,
      pattern,
      subscribers: n,
      published: published.ok,
      publishFailed: published.failed,
      expected,
      delivered: all.delivered,
      deliveredPerSec: all.delivered / (Math.max(activeMs, 1) / 1000),
      latencyMs: { p50: all.latency.quantile(0.5), p99: all.latency.quantile(0.99) },
      crossNodeLatencyMs: { p50: cross.latency.quantile(0.5), p99: cross.latency.quantile(0.99) },
      publishRoundTripMs: { p50: published.roundTripP50Ms, max: published.roundTripMaxMs },
      serverCpuPercent: (serverCpuUs / (phaseMs * 1000)) * 100,
      serverCpuUs,
      notes,
    };
  } finally {
    for (const subscriber of subscribers) subscriber.close();
    publisher?.close();
    await Promise.all(servers.map((s) => s.stop()));
    if (!startServers) await cleanup(engine, options, tag).catch((error: unknown) => log(`  cleanup of ${engine} ${tag} failed: ${String(error)}`));
  }
}

/** Every engine on one node, then the broker engines on three. */
export async function runEngines(options: BenchOptions, pinning: Pinning, log: (line: string) => void): Promise<EngineCaseResult[]> {
  const results: EngineCaseResult[] = [];
  for (const pattern of options.patterns) {
    for (const engine of options.engines ?? []) {
      for (const nodes of engine === "memory" ? [1] : [1, 3]) {
        log(`[${pattern} / ${engine} / ${nodes} node${nodes > 1 ? "s" : ""}]`);
        if (options.waitQuietSeconds > 0) {
          const quiet = await waitForQuiet(options.waitQuietSeconds);
          if (quiet.waitedSeconds > 1.5) log(`  waited ${quiet.waitedSeconds.toFixed(0)} s for a quiet machine (last second ${quiet.busyPercent.toFixed(0)}% busy)`);
        }
        const result = await runEngineCase(pattern, engine, nodes, options, pinning, log);
        log(
          `  delivered ${result.delivered}/${result.expected} (${Math.round(result.deliveredPerSec)}/s), p50 ${result.latencyMs.p50.toFixed(2)} ms, p99 ${result.latencyMs.p99.toFixed(2)} ms` +
            (nodes > 1 ? `, cross-node p50 ${result.crossNodeLatencyMs.p50.toFixed(2)} ms, p99 ${result.crossNodeLatencyMs.p99.toFixed(2)} ms` : "") +
            (result.notes.length ? `; ${result.notes.join("; ")}` : ""),
        );
        results.push(result);
      }
    }
  }
  return results;
}

/** A plain-text table: the first `leftColumns` columns aligned left, the figures right. */
export function textTable(headers: readonly string[], rows: ReadonlyArray<readonly string[]>, leftColumns: number): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

export function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "-";
}

/** Subscribers, delivered/s, p50 and p99: the columns every engine-style table starts with. */
export function deliveryCells(r: EngineCaseResult): string[] {
  const rate = Number.isFinite(r.deliveredPerSec) ? Math.round(r.deliveredPerSec).toLocaleString("en-US") : "-";
  return [String(r.subscribers), rate, fixed(r.latencyMs.p50, 2), fixed(r.latencyMs.p99, 2)];
}

export function engineTable(results: readonly EngineCaseResult[]): string {
  const headers = ["pattern", "engine", "nodes", "subscribers", "delivered/s", "p50 ms", "p99 ms", "cross p50 ms", "cross p99 ms", "publish p50 ms", "srv CPU%"];
  const rows = results.map((r) => [
    r.pattern,
    r.engine,
    String(r.nodes),
    ...deliveryCells(r),
    fixed(r.crossNodeLatencyMs.p50, 2),
    fixed(r.crossNodeLatencyMs.p99, 2),
    fixed(r.publishRoundTripMs.p50, 2),
    fixed(r.serverCpuPercent, 0),
  ]);
  return textTable(headers, rows, 2);
}
