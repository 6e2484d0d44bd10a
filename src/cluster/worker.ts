/**
 * A worker of `ladder serve --workers N`: an ordinary {@link serve} whose engine, with the memory
 * engine, is the primary's log over IPC ({@link IpcEngine}), so every worker hands out the same ids and
 * history. It drains and exits when the primary asks (SIGTERM to the primary), on SIGTERM/SIGINT of its
 * own, and when the primary goes away; its `/metrics` are the whole node's, summed by the primary.
 */
import { pino } from "pino";
import { IpcEngine } from "../engines/ipc/engine.js";
import { parentPort } from "../engines/ipc/port.js";
import { serve, type RunningServer, type ServeOptions } from "../server/server.js";
import { CONTROL_TAG, hostsEngine, isControlFrame, type PrimaryToWorker, type WorkerToPrimary } from "./control.js";

/** A worker's wait for the primary's sum of every worker's metrics. */
const METRICS_TIMEOUT_MS = 5000;

export async function serveWorker(options: ServeOptions): Promise<RunningServer> {
  if (!process.send) throw new Error("serveWorker runs in a cluster worker (a process with an IPC channel to its primary)");
  if (typeof options.engine === "object") throw new TypeError("with workers, option engine must be a URL: each worker makes its own");
  const send = (frame: WorkerToPrimary): void => {
    if (process.connected) process.send!(frame, undefined, undefined, () => {});
  };
  // Listened for from the start: a drain asked while this worker is still starting is honoured once it has.
  let drainAsked = false;
  let onDrain = (): void => {
    drainAsked = true;
  };
  const early = (frame: unknown): void => {
    if (isControlFrame(frame) && (frame as PrimaryToWorker).kind === "drain") onDrain();
  };
  process.on("message", early);
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => onDrain());
  process.once("disconnect", () => onDrain());
  const logger = options.logger ?? pino({ level: "silent" });
  const engine = hostsEngine(options.engine) ? new IpcEngine({ port: parentPort(), logger }) : null;
  let running: RunningServer;
  try {
    running = await serve({ ...options, ...(engine ? { engine } : {}) });
  } catch (error) {
    await engine?.close();
    // Said to the primary, then the channel let go, so that this process can end with the error.
    await new Promise<void>((resolve) => {
      if (!process.connected) return resolve();
      process.send!({ tag: CONTROL_TAG, kind: "failed", message: error instanceof Error ? error.message : String(error) } satisfies WorkerToPrimary, undefined, undefined, () => resolve());
    });
    if (process.connected) process.disconnect();
    throw error;
  }

  const metricsWaiters = new Map<number, (frame: Extract<PrimaryToWorker, { kind: "metrics" }>) => void>();
  let nextRef = 1;
  running.hub.metrics?.renderWith(
    () =>
      new Promise((resolve, reject) => {
        const ref = nextRef++;
        const timer = setTimeout(() => {
          metricsWaiters.delete(ref);
          reject(new Error("the primary did not answer with the node's metrics"));
        }, METRICS_TIMEOUT_MS);
        metricsWaiters.set(ref, (frame) => {
          clearTimeout(timer);
          metricsWaiters.delete(ref);
          if (frame.body === null) reject(new Error("the primary could not aggregate the node's metrics"));
          else resolve({ contentType: frame.contentType, body: frame.body });
        });
        send({ tag: CONTROL_TAG, kind: "metrics-request", ref });
      }),
  );

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await running.close();
      await engine?.close();
    })());
  const exit = (): void => {
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };

  process.off("message", early);
  process.on("message", (frame: unknown) => {
    if (!isControlFrame(frame)) return;
    const control = frame as PrimaryToWorker;
    switch (control.kind) {
      case "drain":
        exit();
        return;
      case "ping":
        send({ tag: CONTROL_TAG, kind: "pong" });
        return;
      case "collect": {
        const metrics = running.hub.metrics;
        if (!metrics) return send({ tag: CONTROL_TAG, kind: "metrics-json", ref: control.ref, metrics: null });
        metrics.registry.getMetricsAsJSON().then(
          (json) => send({ tag: CONTROL_TAG, kind: "metrics-json", ref: control.ref, metrics: json }),
          () => send({ tag: CONTROL_TAG, kind: "metrics-json", ref: control.ref, metrics: null }),
        );
        return;
      }
      case "metrics":
        metricsWaiters.get(control.ref)?.(control);
        return;
    }
  });
  // Without its primary the worker has no log (memory engine) and nobody to restart it: drain and go.
  onDrain = exit;
  if (drainAsked) exit();
  else send({ tag: CONTROL_TAG, kind: "listening", url: running.url });
  return { ...running, close };
}
