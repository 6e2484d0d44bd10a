/**
 * How presence travels between the nodes of a hub: plain publish/subscribe on named topics, nothing
 * stored. Each node announces its own members and answers list requests for them; a node that dies stops
 * sending heartbeats and its members are dropped by everyone else (see presence.ts). The in-memory bus
 * serves one process; Redis pub/sub and core NATS serve many nodes sharing that broker.
 */
import type { Logger } from "pino";

export type BusHandler = (payload: string) => void;

export interface PresenceBus {
  publish(topic: string, payload: string): void;
  /** Resolves once messages on the topic are being received; the function stops them. */
  subscribe(topic: string, handler: BusHandler): Promise<() => void>;
  close(): Promise<void>;
}

/** One process: topics are a map of handler sets; delivery is deferred a microtask, as a broker's would be. */
export class MemoryBus implements PresenceBus {
  readonly #topics = new Map<string, Set<BusHandler>>();

  publish(topic: string, payload: string): void {
    const handlers = this.#topics.get(topic);
    if (!handlers) return;
    for (const handler of [...handlers]) queueMicrotask(() => handler(payload));
  }

  async subscribe(topic: string, handler: BusHandler): Promise<() => void> {
    let handlers = this.#topics.get(topic);
    if (!handlers) this.#topics.set(topic, (handlers = new Set()));
    const own = handlers;
    // The same function may subscribe twice; each subscription is its own entry.
    const entry: BusHandler = (payload) => handler(payload);
    own.add(entry);
    return () => {
      own.delete(entry);
      if (own.size === 0 && this.#topics.get(topic) === own) this.#topics.delete(topic);
    };
  }

  async close(): Promise<void> {
    this.#topics.clear();
  }
}

export interface BusContext {
  readonly logger?: Pick<Logger, "warn">;
}

/** The bus for an engine URL: the engine's own broker, or the in-memory bus for `memory`. */
export async function createBus(engineUrl: string, context: BusContext = {}): Promise<PresenceBus> {
  if (engineUrl.startsWith("redis:") || engineUrl.startsWith("rediss:")) {
    const { RedisBus } = await import("./redis-bus.js");
    return RedisBus.connect(engineUrl, context);
  }
  if (engineUrl.startsWith("nats:")) {
    const { NatsBus } = await import("./nats-bus.js");
    return NatsBus.connect(engineUrl, context);
  }
  return new MemoryBus();
}
