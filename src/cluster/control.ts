/** Frames between a cluster's primary and its workers, beside the engine's own (src/engines/ipc). */
import type { MetricObjectWithValues, MetricValue } from "prom-client";

export const CONTROL_TAG = "ladder.cluster";

export type MetricsJson = Array<MetricObjectWithValues<MetricValue<string>>>;

export type WorkerToPrimary =
  | { readonly tag: typeof CONTROL_TAG; readonly kind: "listening"; readonly url: string }
  | { readonly tag: typeof CONTROL_TAG; readonly kind: "failed"; readonly message: string }
  /** A worker serving `/metrics` asks for the whole node's. */
  | { readonly tag: typeof CONTROL_TAG; readonly kind: "metrics-request"; readonly ref: number }
  | { readonly tag: typeof CONTROL_TAG; readonly kind: "pong" }
  /** A worker's own metrics, answering `collect`. */
  | { readonly tag: typeof CONTROL_TAG; readonly kind: "metrics-json"; readonly ref: number; readonly metrics: MetricsJson | null };

export type PrimaryToWorker =
  | { readonly tag: typeof CONTROL_TAG; readonly kind: "drain" }
  | { readonly tag: typeof CONTROL_TAG; readonly kind: "ping" }
  | { readonly tag: typeof CONTROL_TAG; readonly kind: "collect"; readonly ref: number }
  | { readonly tag: typeof CONTROL_TAG; readonly kind: "metrics"; readonly ref: number; readonly contentType: string; readonly body: string | null };

export function isControlFrame(frame: unknown): frame is { readonly tag: typeof CONTROL_TAG; readonly kind: string } {
  return typeof frame === "object" && frame !== null && (frame as { tag?: unknown }).tag === CONTROL_TAG;
}

/** The engine URL the primary hosts for its workers: the memory engine (the default); a broker URL makes each worker a node. */
export function hostsEngine(engine: string | undefined): boolean {
  return engine === undefined || /^memory(:(\/\/)?)?$/.test(engine);
}
