/**
 * `npm run bench -- --workers 1,2`: Ladder on the memory engine as `ladder serve --workers N`, one
 * channel, every subscriber on the one port (node:cluster spreads the connections over the workers).
 * `1` is the plain single process (no cluster, no IPC); N ≥ 2 is a primary holding the log and N
 * workers reaching it over IPC. The server tree may use CPUs 0…N-1 (taskset), the load generator stays
 * on its own CPU — which, with N = 2 on a 2-core machine, is one of the servers' CPUs: there is no free
 * core, and the report says how much of it the load generator took.
 *
 * Reported per case: delivered/s, latencies, the whole tree's CPU µs per delivery, and apart from it the
 * primary's CPU µs per published message (the per-message work every worker shares: id, append, IPC
 * fan-out) — the two inputs of the scaling model in docs/performance.md.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { deliveryCells, fixed, runEngineCase, textTable, type BenchServer, type EngineCaseResult } from "./engines.js";
import type { BenchOptions } from "./options.js";
import { readCpuUs, trackChild, waitForQuiet, type Pinning } from "./proc.js";
import type { Pattern } from "./load.js";

export interface WorkersCaseResult extends EngineCaseResult {
  readonly workers: number;
  readonly cpuUsPerDelivered: number;
  /** The primary's CPU over the phase ÷ messages published; NaN for the single process. */
  readonly primaryUsPerMessage: number;
  /** The load generator's share of its core during the case. */
  readonly loadCpuPercent: number;
}

const BIN = fileURLToPath(new URL("../../bin/ladder.js", import.meta.url));

/** One `ladder serve` process tree; CPU is summed over the primary and its workers. */
class ServeTree implements BenchServer {
  readonly url: string;
  readonly #child: ChildProcess;
  /** The primary's CPU at each reading, so the case's first and last readings give its share. */
  readonly primaryReadings: number[] = [];

  private constructor(child: ChildProcess, url: string) {
    this.#child = child;
    this.url = url;
  }

  static async start(workers: number, cpus: string | null, taskset: string | null, maxConnections: number): Promise<ServeTree> {
    const args = [BIN, "serve", "--port", "0", "--no-demo", "--log-level", "warn", "--workers", String(workers), "--max-connections", String(maxConnections)];
    const [command, argv] = cpus !== null && taskset ? [taskset, ["-c", cpus, process.execPath, ...args]] : [process.execPath, args];
    const child = spawn(command, argv, { stdio: ["ignore", "pipe", "inherit"] });
    trackChild(child);
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`ladder serve --workers ${workers} did not start within 30 s`)), 30_000);
      child.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        const match = /ladder listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`ladder serve --workers ${workers} exited early (code ${code})`));
      });
    });
    return new ServeTree(child, url);
  }

  #pids(): number[] {
    const pid = this.#child.pid!;
    const out = spawnSync("pgrep", ["-P", String(pid)], { encoding: "utf8" });
    return [pid, ...out.stdout.split("\n").filter(Boolean).map(Number)];
  }

  cpuUs(): number {
    let sum = 0;
    for (const [i, pid] of this.#pids().entries()) {
      try {
        const us = readCpuUs(pid);
        if (i === 0) this.primaryReadings.push(us);
        sum += us;
      } catch {
        // A process that exited between listing and reading.
      }
    }
    return sum;
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      child.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill("SIGTERM");
    });
  }
}

export async function runWorkersBench(options: BenchOptions, pinning: Pinning, log: (line: string) => void): Promise<WorkersCaseResult[]> {
  const results: WorkersCaseResult[] = [];
  for (const pattern of options.patterns) {
    for (const workers of options.workers ?? []) {
      log(`[${pattern} / ${workers} worker${workers > 1 ? "s" : ""}]`);
      if (options.waitQuietSeconds > 0) await waitForQuiet(options.waitQuietSeconds);
      results.push(await runWorkersCase(pattern, workers, options, pinning, log));
      const r = results.at(-1)!;
      log(
        `  delivered ${r.delivered}/${r.expected} (${Math.round(r.deliveredPerSec)}/s), p50 ${r.latencyMs.p50.toFixed(2)} ms, p99 ${r.latencyMs.p99.toFixed(2)} ms, ` +
          `${r.cpuUsPerDelivered.toFixed(2)} µs CPU/delivery, server tree ${r.serverCpuPercent.toFixed(0)}% / load ${r.loadCpuPercent.toFixed(0)}% of a core` +
          (r.notes.length ? `; ${r.notes.join("; ")}` : ""),
      );
    }
  }
  return results;
}

async function runWorkersCase(pattern: Pattern, workers: number, options: BenchOptions, pinning: Pinning, log: (line: string) => void): Promise<WorkersCaseResult> {
  // One worker stays on the server core, as in the other modes; N workers get N cores (counting from the server's).
  const first = pinning.serverCpu;
  const cpus = first === null ? null : Array.from({ length: workers }, (_, i) => first + i).join(",");
  let tree: ServeTree | null = null;
  const loadBefore = process.cpuUsage();
  const started = performance.now();
  const result = await runEngineCase(pattern, "memory", 1, options, pinning, log, async () => {
    tree = await ServeTree.start(workers, cpus, pinning.taskset, options.subscribers * 2 + 100);
    return [tree];
  });
  const load = process.cpuUsage(loadBefore);
  const loadCpuPercent = ((load.user + load.system) / ((performance.now() - started) * 1000)) * 100;
  const readings = (tree as ServeTree | null)?.primaryReadings ?? [];
  const primaryUs = readings.length >= 2 ? readings.at(-1)! - readings[0]! : NaN;
  return {
    ...result,
    workers,
    cpuUsPerDelivered: result.serverCpuUs / Math.max(1, result.delivered),
    primaryUsPerMessage: workers > 1 ? primaryUs / Math.max(1, result.published) : NaN,
    loadCpuPercent,
  };
}

export function workersTable(results: readonly WorkersCaseResult[]): string {
  const headers = ["pattern", "workers", "subscribers", "delivered/s", "p50 ms", "p99 ms", "CPU µs/delivery", "primary µs/msg", "srv CPU%", "load CPU%"];
  const rows = results.map((r) => [
    r.pattern,
    String(r.workers),
    ...deliveryCells(r),
    fixed(r.cpuUsPerDelivered, 2),
    fixed(r.primaryUsPerMessage, 1),
    fixed(r.serverCpuPercent, 0),
    fixed(r.loadCpuPercent, 0),
  ]);
  return textTable(headers, rows, 1);
}
