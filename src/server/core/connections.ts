/**
 * The hub's open connections (streams, sockets, held polls): registered when made, out when closed, each
 * with the IP slot it frees. The registry beats the heartbeat over them, drains them for a graceful
 * shutdown, and counts them by kind for stats and the connection limit.
 */
import { TRANSPORTS } from "../../protocol/index.js";
import type { Connection, TransportKind } from "../transports/transport.js";

/** Connections a heartbeat tick visits per event-loop turn. */
const HEARTBEAT_SLICE = 500;

export class Connections {
  readonly #open = new Set<Connection>();
  #drainWaiters: Array<() => void> = [];
  readonly #heartbeat: NodeJS.Timeout;

  constructor(heartbeatMs: number) {
    this.#heartbeat = setInterval(() => this.#beat(), heartbeatMs);
    this.#heartbeat.unref();
  }

  get size(): number {
    return this.#open.size;
  }

  /**
   * Adds a connection, constructed but not yet started; its one close callback takes it out and frees
   * its IP slot.
   */
  add(connection: Connection, release: () => void): void {
    this.#open.add(connection);
    connection.onClose(() => {
      this.#open.delete(connection);
      release();
      if (this.#open.size === 0 && this.#drainWaiters.length > 0) {
        for (const resolve of this.#drainWaiters.splice(0)) resolve();
      }
    });
  }

  byKind(): Record<TransportKind, number> {
    const counts = Object.fromEntries(TRANSPORTS.map((kind) => [kind, 0])) as Record<TransportKind, number>;
    for (const connection of this.#open) counts[connection.kind]++;
    return counts;
  }

  /** Asks every connection to end gracefully; resolves when all are gone or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    for (const connection of [...this.#open]) connection.drain();
    if (this.#open.size === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      timer.unref();
      this.#drainWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Stops the heartbeat and cuts every connection. */
  close(): void {
    clearInterval(this.#heartbeat);
    for (const connection of [...this.#open]) connection.destroy();
  }

  /**
   * One heartbeat tick over every connection, in slices of {@link HEARTBEAT_SLICE} a turn: at 10,000
   * connections a tick is thousands of writes, and done in one turn it held every delivery behind it
   * (p99 ~80 ms in the many-small-channels bench). A connection closed before its slice is skipped.
   */
  #beat(): void {
    const now = Date.now();
    const all = [...this.#open];
    const open = this.#open;
    const slice = (from: number): void => {
      const end = Math.min(all.length, from + HEARTBEAT_SLICE);
      for (let i = from; i < end; i++) if (open.has(all[i]!)) all[i]!.heartbeat(now);
      if (end < all.length) setImmediate(slice, end);
    };
    slice(0);
  }
}
