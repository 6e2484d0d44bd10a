/**
 * A rung is one way of reaching the hub (WebSocket, SSE, long-poll, poll) behind one interface, so the
 * client's single reconnection policy does not care which it is driving. A rung reports what it receives
 * and how it ended; it never decides to reconnect by itself.
 */
import type { Gap, Message, MessageId } from "../../protocol/index.js";
import type { ResolvedClientOptions, TransportName } from "../options.js";

export interface RungHost {
  readonly options: ResolvedClientOptions;
  /** The subscribed channels and the cursor to resume each from (null: start live). */
  cursors(): ReadonlyMap<string, MessageId | null>;
  /** The rung proved it works: its handshake or first answer arrived. */
  opened(rung: Rung): void;
  message(rung: Rung, message: Message): void;
  gap(rung: Rung, gap: Gap): void;
  /** The server told where a channel stands (a fresh subscription learns its cursor this way). */
  cursor(rung: Rung, channel: string, cursor: MessageId): void;
  /** The rung ended by itself. `delivered` says whether it had opened; the client's policy decides what next. */
  closed(rung: Rung, info: { readonly delivered: boolean; readonly reason: string }): void;
}

export interface Rung {
  readonly name: TransportName;
  open(): void;
  /** A channel was subscribed or unsubscribed while the rung is running. */
  add(channel: string): void;
  remove(channel: string): void;
  /** Rungs with an upstream of their own (WebSocket) publish over it. */
  publish?(channel: string, data: unknown): Promise<{ id: MessageId }>;
  /** Ends the rung without reporting `closed`. */
  close(): void;
}

/** One timer slot that replaces its previous timer; keeps rung code free of stray timers. */
export class TimerSlot {
  #handle: ReturnType<typeof setTimeout> | undefined;

  set(ms: number, callback: () => void): void {
    this.clear();
    this.#handle = setTimeout(() => {
      this.#handle = undefined;
      callback();
    }, ms);
  }

  clear(): void {
    if (this.#handle !== undefined) clearTimeout(this.#handle);
    this.#handle = undefined;
  }

  get pending(): boolean {
    return this.#handle !== undefined;
  }
}

export function endpoint(options: ResolvedClientOptions, path: string): URL {
  return new URL(path, options.base);
}
