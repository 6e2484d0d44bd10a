/**
 * The presence bus over Redis pub/sub (classic PUBLISH/SUBSCRIBE, which a Redis Cluster forwards to every
 * node): topics are `<prefix>presence:<topic>` with the engine URL's key prefix. Nothing is stored in
 * Redis, so presence adds no keys to budget for. A publish during an outage is dropped (logged once);
 * watchers re-read the whole list when the connection is back (presence.ts resyncs).
 */
import type { BusContext, BusHandler, PresenceBus } from "./bus.js";
import { parseRedisUrl } from "../../engines/redis.js";

interface PubSubClient {
  connect(): Promise<unknown>;
  publish(channel: string, message: string): Promise<number>;
  subscribe(channel: string, listener: (message: string) => void): Promise<void>;
  unsubscribe(channel: string, listener: (message: string) => void): Promise<void>;
  on(event: "error", listener: (error: Error) => void): unknown;
  close?(): Promise<void>;
  quit?(): Promise<unknown>;
  destroy?(): void;
}

export class RedisBus implements PresenceBus {
  readonly #publisher: PubSubClient;
  readonly #subscriber: PubSubClient;
  readonly #prefix: string;
  readonly #context: BusContext;
  #warned = false;

  private constructor(publisher: PubSubClient, subscriber: PubSubClient, prefix: string, context: BusContext) {
    this.#publisher = publisher;
    this.#subscriber = subscriber;
    this.#prefix = prefix;
    this.#context = context;
  }

  static async connect(url: string, context: BusContext): Promise<RedisBus> {
    const parsed = parseRedisUrl(url);
    const redis = await import("redis");
    const make = (): PubSubClient =>
      (parsed.cluster
        ? redis.createCluster({ rootNodes: [{ url: parsed.url }], defaults: { disableOfflineQueue: true } })
        : redis.createClient({ url: parsed.url, disableOfflineQueue: true })) as unknown as PubSubClient;
    const publisher = make();
    const subscriber = make();
    for (const client of [publisher, subscriber]) client.on("error", () => undefined);
    await Promise.all([publisher.connect(), subscriber.connect()]);
    return new RedisBus(publisher, subscriber, parsed.prefix ?? "ladder:", context);
  }

  publish(topic: string, payload: string): void {
    this.#publisher.publish(`${this.#prefix}presence:${topic}`, payload).catch((error: unknown) => {
      if (this.#warned) return;
      this.#warned = true;
      this.#context.logger?.warn({ err: error }, "presence: a change could not be sent to the other nodes (they resync)");
    });
  }

  async subscribe(topic: string, handler: BusHandler): Promise<() => void> {
    const channel = `${this.#prefix}presence:${topic}`;
    const listener = (message: string): void => handler(message);
    await this.#subscriber.subscribe(channel, listener);
    return () => void this.#subscriber.unsubscribe(channel, listener).catch(() => undefined);
  }

  async close(): Promise<void> {
    await Promise.all(
      [this.#publisher, this.#subscriber].map(async (client) => {
        try {
          if (client.close) await client.close();
          else await client.quit?.();
        } catch {
          client.destroy?.();
        }
      }),
    );
  }
}
