/**
 * Every core: `serveWorkers({ workers: "auto", ... })` runs the same script in N worker processes that
 * share one port (node:cluster). Call it at the top level of the script: in the primary it forks the
 * workers and returns `{ role: "primary" }`; in each worker it serves and returns `{ role: "worker" }`.
 */
import cluster from "node:cluster";
import { availableParallelism } from "node:os";
import type { RunningServer, ServeOptions } from "../server/server.js";
import { startPrimary, type PrimaryOptions, type RunningPrimary } from "./primary.js";
import { serveWorker } from "./worker.js";

export { startPrimary, type PrimaryOptions, type RunningPrimary } from "./primary.js";
export { serveWorker } from "./worker.js";

export interface ServeWorkersOptions extends Omit<ServeOptions, "engine">, Pick<PrimaryOptions, "drainTimeoutMs" | "startTimeoutMs" | "workerTimeoutMs"> {
  /** Worker processes: a number, or `"auto"` for one per core (os.availableParallelism()). */
  readonly workers: number | "auto";
  /** An engine URL: `memory` (the default, held by the primary and shared) or a broker URL (each worker a node). */
  readonly engine?: string;
}

export type ServeWorkersResult = { readonly role: "primary"; readonly primary: RunningPrimary } | { readonly role: "worker"; readonly server: RunningServer };

export function workerCount(workers: number | "auto"): number {
  return workers === "auto" ? availableParallelism() : workers;
}

export async function serveWorkers(options: ServeWorkersOptions): Promise<ServeWorkersResult> {
  const { workers, drainTimeoutMs, startTimeoutMs, workerTimeoutMs, ...serveOptions } = options;
  if (cluster.isWorker) return { role: "worker", server: await serveWorker(serveOptions) };
  const primary = await startPrimary({
    workers: workerCount(workers),
    ...(serveOptions.engine !== undefined ? { engine: serveOptions.engine } : {}),
    ...(serveOptions.historySize !== undefined ? { historySize: serveOptions.historySize } : {}),
    ...(serveOptions.historyMaxAgeMs !== undefined ? { historyMaxAgeMs: serveOptions.historyMaxAgeMs } : {}),
    ...(serveOptions.maxLogBytes !== undefined ? { maxLogBytes: serveOptions.maxLogBytes } : {}),
    ...(serveOptions.maxChannels !== undefined ? { maxChannels: serveOptions.maxChannels } : {}),
    ...(serveOptions.logger ? { logger: serveOptions.logger } : {}),
    ...(drainTimeoutMs !== undefined ? { drainTimeoutMs } : {}),
    ...(startTimeoutMs !== undefined ? { startTimeoutMs } : {}),
    ...(workerTimeoutMs !== undefined ? { workerTimeoutMs } : {}),
  });
  return { role: "primary", primary };
}
