/**
 * The presence bus over core NATS (no JetStream: nothing is stored): topics are subjects
 * `<prefix>.presence.<topic>` with the engine URL's subject prefix. NATS reconnects by itself and keeps
 * the subscriptions; what was published while it was away is gone, and watchers resync (presence.ts).
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { parseNatsUrl } from "../../engines/nats.js";
import type { BusContext, BusHandler, PresenceBus } from "./bus.js";

export class NatsBus implements PresenceBus {
  readonly #nc: NatsConnection;
  readonly #prefix: string;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder();

  private constructor(nc: NatsConnection, prefix: string) {
    this.#nc = nc;
    this.#prefix = prefix;
  }

  static async connect(url: string, _context: BusContext): Promise<NatsBus> {
    const parsed = parseNatsUrl(url);
    const { connect } = await import("@nats-io/transport-node");
    const nc = await connect({
      servers: parsed.servers,
      name: "ladder-presence",
      ...(parsed.user !== undefined ? { user: parsed.user } : {}),
      ...(parsed.pass !== undefined ? { pass: parsed.pass } : {}),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      timeout: 2000,
    });
    return new NatsBus(nc, parsed.prefix ?? "ladder");
  }

  publish(topic: string, payload: string): void {
    if (this.#nc.isClosed()) return;
    this.#nc.publish(`${this.#prefix}.presence.${topic}`, this.#encoder.encode(payload));
  }

  async subscribe(topic: string, handler: BusHandler): Promise<() => void> {
    const sub = this.#nc.subscribe(`${this.#prefix}.presence.${topic}`, { callback: (_error, msg) => handler(this.#decoder.decode(msg.data)) });
    // The subscription is registered with the server once a round trip has passed.
    await this.#nc.flush();
    return () => sub.unsubscribe();
  }

  async close(): Promise<void> {
    if (!this.#nc.isClosed()) await this.#nc.drain().catch(() => this.#nc.close());
  }
}
