/**
 * The primary of `ladder serve --workers N`: it forks the workers (node:cluster shares the listening
 * socket; on Linux cluster hands connections round-robin), owns the memory engine's log and serves it to
 * every worker over IPC, restarts a worker that dies (with a backoff that bounds a crash loop), drains
 * every worker on close, and answers `/metrics` for the whole node by summing the workers' registries.
 * It serves no request itself.
 */
import cluster, { type Worker } from "node:cluster";
import { pino } from "pino";
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry } from "prom-client";
import { createEngine } from "../engines/create.js";
import type { Engine } from "../engines/engine.js";
import { IpcEngineHost } from "../engines/ipc/host.js";
import { workerPort } from "../engines/ipc/port.js";
import { MemoryEngine } from "../engines/memory.js";
import { registerLogMetrics } from "../server/metrics.js";
import { resolveOptions, type HubOptions } from "../server/options.js";
import { CONTROL_TAG, hostsEngine, isControlFrame, type MetricsJson, type PrimaryToWorker, type WorkerToPrimary } from "./control.js";

export interface PrimaryOptions extends Pick<HubOptions, "historySize" | "historyMaxAgeMs" | "maxLogBytes" | "maxChannels" | "logger"> {
  readonly workers: number;
  /** An engine URL: `memory` (the default) is held here and shared; a broker URL makes each worker a node of it. */
  readonly engine?: string;
  /** Time each worker has to drain on close before it is killed, ms. Default 10000. */
  readonly drainTimeoutMs?: number;
  /**
   * A worker whose event loop has not answered the primary's ping for this long is killed and restarted:
   * stuck, it would hold its clients and let the primary queue its live messages without bound. Default 30000 ms.
   */
  readonly workerTimeoutMs?: number;
  /** Time the workers have to start listening, ms. Default 30000. */
  readonly startTimeoutMs?: number;
  /** The script and arguments workers run (node:cluster's `exec`, `args`); default: this process's own. */
  readonly exec?: string;
  readonly args?: readonly string[];
  /** Extra environment for the workers. */
  readonly env?: Readonly<Record<string, string>>;
}

export interface RunningPrimary {
  /** The URL the workers listen on (they share one port). */
  readonly url: string;
  /** Process ids of the workers alive now. */
  pids(): number[];
  /** Workers restarted after dying, so far. */
  readonly restarts: number;
  /** Drains every worker (each runs its hub's drain), waits for them to exit, then releases the engine. */
  close(): Promise<void>;
}

/** A worker that dies again within this window counts towards the backoff. */
const CRASH_WINDOW_MS = 60_000;
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 30_000;
/** A worker's answer to a metrics collection; a silent worker is left out of the sum. */
const COLLECT_TIMEOUT_MS = 2000;
const SWEEP_INTERVAL_MS = 60_000;
/** How often the primary pings each worker, as a share of the worker timeout. */
const PINGS_PER_TIMEOUT = 6;

/** Restart delay after `recent` deaths within {@link CRASH_WINDOW_MS}: at once for one, then doubling, capped. */
export function restartDelay(recent: number): number {
  if (recent <= 1) return 0;
  return Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** (recent - 2));
}

export async function startPrimary(options: PrimaryOptions): Promise<RunningPrimary> {
  if (!cluster.isPrimary) throw new Error("startPrimary runs in a cluster's primary process");
  const count = options.workers;
  if (!Number.isInteger(count) || count < 1 || count > 1024) throw new TypeError(`option workers must be a whole number from 1 to 1024, got ${String(count)}`);
  const logger = options.logger ?? pino({ level: "silent" });
  const { historySize, historyMaxAgeMs, maxLogBytes, maxChannels } = options;
  const resolved = resolveOptions({ historySize, historyMaxAgeMs, maxLogBytes, maxChannels });
  // The one log every worker shares, with the budget a single process would have (docs/security.md).
  const engine: Engine | null = hostsEngine(options.engine)
    ? createEngine("memory", { maxCount: resolved.historySize, maxAgeMs: resolved.historyMaxAgeMs, maxLogBytes: resolved.maxLogBytes, maxChannels: resolved.maxChannels, logger })
    : null;
  const host = engine ? new IpcEngineHost(engine) : null;
  const sweep = engine instanceof MemoryEngine ? setInterval(() => engine.sweep(), SWEEP_INTERVAL_MS).unref() : null;
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const workersGauge = new Gauge({ name: "ladder_workers", help: "Worker processes alive in this node (ladder serve --workers)", registers: [registry], aggregator: "sum" });
  const restartsCounter = new Counter({ name: "ladder_worker_restarts_total", help: "Workers restarted after dying", registers: [registry] });
  // The workers' engine is a port to this log (IpcEngine has no stats), so its budget is reported here, once.
  if (engine instanceof MemoryEngine) registerLogMetrics(registry, () => engine.stats());

  cluster.setupPrimary({
    ...(options.exec !== undefined ? { exec: options.exec } : {}),
    ...(options.args !== undefined ? { args: [...options.args] } : {}),
  });

  const alive = new Set<Worker>();
  /** When each worker last answered (a pong, or its start); a worker still starting is not in it. */
  const answeredAt = new Map<Worker, number>();
  const workerTimeoutMs = options.workerTimeoutMs ?? 30_000;
  const restartTimers = new Set<NodeJS.Timeout>();
  let crashes: number[] = [];
  let restarts = 0;
  let closing = false;
  let nextRef = 1;
  const collections = new Map<number, (metrics: MetricsJson | null, worker: Worker) => void>();
  let started: ((url: string) => void) | null = null;
  let failedToStart: ((error: Error) => void) | null = null;
  let listening = 0;
  let url = "";

  const send = (worker: Worker, frame: PrimaryToWorker): void => {
    if (worker.isConnected()) worker.send(frame, undefined, () => {});
  };

  /** Every worker's registry plus this process's, summed metric by metric (AggregatorRegistry.aggregate). */
  const nodeMetrics = async (): Promise<{ contentType: string; body: string }> => {
    const ref = nextRef++;
    const workers = [...alive].filter((w) => w.isConnected());
    const answers: MetricsJson[] = [await registry.getMetricsAsJSON()];
    await new Promise<void>((resolve) => {
      let waiting = workers.length;
      if (waiting === 0) return resolve();
      const timer = setTimeout(finish, COLLECT_TIMEOUT_MS);
      function finish(): void {
        clearTimeout(timer);
        collections.delete(ref);
        resolve();
      }
      collections.set(ref, (metrics) => {
        if (metrics) answers.push(metrics);
        if (--waiting === 0) finish();
      });
      for (const worker of workers) send(worker, { tag: CONTROL_TAG, kind: "collect", ref });
    });
    const aggregated = AggregatorRegistry.aggregate(answers);
    return { contentType: aggregated.contentType, body: await aggregated.metrics() };
  };

  const onControl = (worker: Worker, frame: WorkerToPrimary): void => {
    switch (frame.kind) {
      case "pong":
        answeredAt.set(worker, Date.now());
        return;
      case "listening":
        answeredAt.set(worker, Date.now());
        url = frame.url;
        if (++listening === count) started?.(url);
        return;
      case "failed":
        if (!failedToStart) logger.error({ pid: worker.process.pid, reason: frame.message }, "worker could not start");
        failedToStart?.(new Error(`worker ${worker.process.pid ?? "?"} could not start: ${frame.message}`));
        return;
      case "metrics-json":
        collections.get(frame.ref)?.(frame.metrics, worker);
        return;
      case "metrics-request":
        nodeMetrics().then(
          ({ contentType, body }) => send(worker, { tag: CONTROL_TAG, kind: "metrics", ref: frame.ref, contentType, body }),
          (error: unknown) => {
            logger.warn({ err: error }, "could not aggregate the workers' metrics");
            send(worker, { tag: CONTROL_TAG, kind: "metrics", ref: frame.ref, contentType: "text/plain", body: null });
          },
        );
        return;
    }
  };

  const fork = (): Worker => {
    const worker = cluster.fork(options.env ? { ...options.env } : undefined);
    alive.add(worker);
    workersGauge.set(alive.size);
    host?.serve(workerPort(worker));
    worker.on("message", (frame: unknown) => {
      if (isControlFrame(frame)) onControl(worker, frame as WorkerToPrimary);
    });
    worker.once("exit", (code, signal) => {
      alive.delete(worker);
      answeredAt.delete(worker);
      workersGauge.set(alive.size);
      // Its share of a collection in progress will not come.
      for (const answer of collections.values()) answer(null, worker);
      if (closing) return;
      if (listening < count) {
        failedToStart?.(new Error(`worker ${worker.process.pid ?? "?"} exited (${signal ?? `code ${code}`}) before listening`));
        return;
      }
      const now = Date.now();
      crashes = crashes.filter((t) => now - t < CRASH_WINDOW_MS);
      crashes.push(now);
      const delay = restartDelay(crashes.length);
      logger.warn({ pid: worker.process.pid, code, signal, restartInMs: delay }, "worker died; restarting it");
      const timer = setTimeout(() => {
        restartTimers.delete(timer);
        if (closing) return;
        restarts++;
        restartsCounter.inc();
        fork();
      }, delay);
      restartTimers.add(timer);
    });
    return worker;
  };

  const watchdog = setInterval(() => {
    const now = Date.now();
    for (const [worker, at] of answeredAt) {
      if (now - at > workerTimeoutMs) {
        logger.error({ pid: worker.process.pid, silentMs: now - at }, "worker stopped answering; killing it");
        answeredAt.delete(worker);
        worker.process.kill("SIGKILL");
      } else {
        send(worker, { tag: CONTROL_TAG, kind: "ping" });
      }
    }
  }, Math.max(10, Math.floor(workerTimeoutMs / PINGS_PER_TIMEOUT)));
  watchdog.unref();

  const close = async (): Promise<void> => {
    closing = true;
    clearInterval(watchdog);
    for (const timer of restartTimers) clearTimeout(timer);
    restartTimers.clear();
    await Promise.all(
      [...alive].map(
        (worker) =>
          new Promise<void>((resolve) => {
            if (worker.isDead()) return resolve();
            worker.once("exit", () => resolve());
            // A worker still starting may not listen for frames yet; it takes SIGTERM as the same request.
            if (answeredAt.has(worker)) send(worker, { tag: CONTROL_TAG, kind: "drain" });
            else worker.process.kill("SIGTERM");
            // A worker that cannot drain in time (or lost its channel) is stopped the hard way.
            const kill = setTimeout(() => worker.process.kill("SIGKILL"), drainTimeoutMs + 2000);
            kill.unref();
            worker.once("exit", () => clearTimeout(kill));
          }),
      ),
    );
    host?.close();
    if (sweep) clearInterval(sweep);
    await engine?.close();
  };

  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  let startTimer: NodeJS.Timeout | undefined;
  try {
    url = await new Promise<string>((resolve, reject) => {
      started = resolve;
      failedToStart = reject;
      startTimer = setTimeout(() => reject(new Error(`workers did not start listening within ${startTimeoutMs} ms`)), startTimeoutMs);
      for (let i = 0; i < count; i++) fork();
    });
  } catch (error) {
    await close();
    throw error;
  } finally {
    clearTimeout(startTimer);
    started = null;
    failedToStart = null;
  }
  let closed: Promise<void> | null = null;
  return {
    url,
    pids: () => [...alive].map((w) => w.process.pid).filter((pid): pid is number => pid !== undefined),
    get restarts() {
      return restarts;
    },
    close: () => (closed ??= close()),
  };
}
