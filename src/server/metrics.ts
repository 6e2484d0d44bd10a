/**
 * Prometheus metrics (`GET /metrics` with the `metrics` option). Each hub has its own registry, so two hubs
 * in one process (tests, embedding) never share or clash over series. Gauges are read from the hub when
 * scraped; the hot path only bumps plain counters (a publish, a refusal), never a label lookup per delivery.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { LadderError } from "../protocol/index.js";
import type { FailureReason, HookName, HookObserver } from "./hooks/caller.js";
import type { EngineStats } from "../engines/engine.js";
import type { TransportKind } from "./transports/transport.js";

/** What the metrics read from the hub at scrape time. */
/** Where Prometheus scrapes, with the `metrics` option; the usual path, so a scrape config needs no path. */
export const METRICS_PATH = "/metrics";

/** Said to a scraper, or a person, that asks for metrics the hub was not told to keep. */
export const METRICS_OFF = new LadderError("metrics_disabled", 'metrics are off: start with --metrics (LADDER_METRICS=true, config "metrics": true, or createHub({ metrics: true }))');

export interface MetricsSource {
  stats(): { readonly byKind: Readonly<Record<TransportKind, number>>; readonly channels: number; readonly draining: boolean };
  /** Live messages handed to subscribers on this node so far (one per subscriber per message). */
  liveDeliveries(): number;
  engineReady(): boolean;
  /** The engine's retained bytes, channels and evictions, when its history lives in this process (memory). */
  engineStats(): EngineStats | undefined;
  readonly engineName: string;
}

export class HubMetrics implements HookObserver {
  readonly registry = new Registry();
  readonly #published: Counter;
  readonly #refused: Counter<"code">;
  readonly #socketsRefused: Counter;
  #render: (() => Promise<{ contentType: string; body: string }>) | null = null;
  readonly #hookDuration: Histogram<"hook">;
  readonly #hookFailures: Counter<"hook" | "reason">;

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: "ladder_connections",
      help: "Open SSE streams, WebSockets and held long-polls, by transport",
      labelNames: ["transport"],
      registers,
      collect() {
        for (const [transport, count] of Object.entries(source.stats().byKind)) this.set({ transport }, count);
      },
    });
    new Gauge({
      name: "ladder_channels",
      help: "Channels with at least one subscriber on this node",
      registers,
      collect() {
        this.set(source.stats().channels);
      },
    });
    new Counter({
      name: "ladder_live_deliveries_total",
      help: "Live messages handed to subscribers on this node (one per subscriber per message)",
      registers,
      collect() {
        this.reset();
        this.inc(source.liveDeliveries());
      },
    });
    new Gauge({
      name: "ladder_engine_ready",
      help: "1 when the engine (memory, redis, nats) can publish and read",
      labelNames: ["engine"],
      registers,
      // Over a cluster's workers (src/cluster), the node is ready only if every worker is.
      aggregator: "min",
      collect() {
        this.set({ engine: source.engineName }, source.engineReady() ? 1 : 0);
      },
    });
    new Gauge({
      name: "ladder_draining",
      help: "1 while the hub drains for shutdown",
      registers,
      aggregator: "max",
      collect() {
        this.set(source.stats().draining ? 1 : 0);
      },
    });
    if (source.engineStats()) registerLogMetrics(this.registry, () => source.engineStats());
    this.#published = new Counter({ name: "ladder_messages_published_total", help: "Messages published through this node", registers });
    this.#refused = new Counter({
      name: "ladder_refusals_total",
      help: "HTTP requests and WebSocket upgrades answered with an error, by error code (docs/protocol.md)",
      labelNames: ["code"],
      registers,
    });
    this.#socketsRefused = new Counter({
      name: "ladder_sockets_refused_total",
      help: "TCP connections closed at once because their address held limits.socketsPerIp already",
      registers,
    });
    this.#hookDuration = new Histogram({
      name: "ladder_hook_duration_seconds",
      help: "Time from a hook call's start (waiting for a slot included) to its answer or failure, by hook",
      labelNames: ["hook"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers,
    });
    this.#hookFailures = new Counter({
      name: "ladder_hook_failures_total",
      help: "Hook calls without a usable answer, by hook and reason (timeout, network, status, too_large, invalid, overloaded; dropped: a webhook event given up)",
      labelNames: ["hook", "reason"],
      registers,
    });
  }

  hookCalled(hook: HookName, seconds: number): void {
    this.#hookDuration.observe({ hook }, seconds);
  }

  hookFailed(hook: HookName, reason: FailureReason): void {
    this.#hookFailures.inc({ hook, reason });
  }

  published(): void {
    this.#published.inc();
  }

  refused(error: LadderError): void {
    this.#refused.inc({ code: error.code });
  }

  socketRefused(): void {
    this.#socketsRefused.inc();
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return this.#render ? this.#render() : { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /** Serves another exposition at `/metrics`: a cluster worker serves the whole node's (src/cluster). */
  renderWith(render: () => Promise<{ contentType: string; body: string }>): void {
    this.#render = render;
  }
}

/**
 * The memory engine's budget: how full it is and what it evicted (docs/security.md, "Memory budget").
 * Registered by the hub whose engine it is, and by a cluster's primary for the log its workers share.
 */
export function registerLogMetrics(registry: Registry, stats: () => EngineStats | undefined): void {
  const registers = [registry];
  const read = <K extends keyof EngineStats>(key: K): EngineStats[K] | 0 => stats()?.[key] ?? 0;
  const gauges: Array<[string, string, keyof EngineStats]> = [
    ["ladder_log_retained_bytes", "Bytes of retained messages as the memory engine's budget counts them (data JSON + per-message overhead)", "retainedBytes"],
    ["ladder_log_max_bytes", "The memory engine's budget of retained bytes (maxLogBytes)", "maxLogBytes"],
    ["ladder_log_channels", "Channels the memory engine holds (retained messages or subscribers)", "channels"],
    ["ladder_log_max_channels", "The memory engine's budget of channels (maxChannels)", "maxChannels"],
  ];
  for (const [name, help, key] of gauges) {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read(key));
      },
    });
  }
  const counters: Array<[string, string, keyof EngineStats]> = [
    ["ladder_log_evicted_messages_total", "Messages the memory engine evicted to stay within its budget (not count or age trims)", "evictedMessages"],
    ["ladder_log_evicted_channels_total", "Channels without subscribers the memory engine evicted to stay within its budget", "evictedChannels"],
  ];
  for (const [name, help, key] of counters) {
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read(key));
      },
    });
  }
}
