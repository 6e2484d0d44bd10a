/**
 * Publishes on their way to the hub. Every publish gets an idempotency key and waits here until the hub
 * acknowledges or refuses it: while the client is disconnected it is held (bounded by count and bytes),
 * and a send whose outcome is unknown (the connection dropped, the ack timed out, the hub was unavailable)
 * is sent again with the same key, so the hub stores it once (docs/protocol.md, "Idempotent publish").
 * Sends leave in publish order: pipelined over a WebSocket (its frames keep their order), one at a time
 * over HTTP (parallel requests would not).
 */
import { LadderError, type MessageId } from "../protocol/index.js";
import type { PublishQueueOptions } from "./options.js";
import { TimerSlot } from "./rungs/rung.js";

export interface PublishResult {
  readonly id: MessageId;
  readonly channel: string;
  /** The hub already held this publish (a retry after a lost ack): `id` is the first copy's. */
  readonly duplicate?: true;
}

export interface Outgoing {
  readonly channel: string;
  readonly data: unknown;
  readonly key: string;
}

interface Entry extends Outgoing {
  readonly bytes: number;
  sending: boolean;
  attempt: number;
  resolve(result: PublishResult): void;
  reject(error: unknown): void;
}

export interface OutboxHost {
  readonly queue: PublishQueueOptions;
  /** Sends now, or null while no rung is connected. */
  send(entry: Outgoing): Promise<{ id: MessageId; duplicate?: true }> | null;
  /** Whether sends may overlap (the rung keeps their order). */
  pipelined(): boolean;
  /** Delay before sending again after an unknown outcome, for the entry's nth retry. */
  retryDelay(attempt: number): number;
}

/** A key no other publish of this client or another will use within the window (not a secret: ~100 random bits). */
const newKey = (): string => Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);

/** An outcome that may or may not have reached the log: safe to send again with the same key. */
const unknownOutcome = (error: unknown): boolean => !(error instanceof LadderError) || error.status === 503;

export class Outbox {
  readonly #host: OutboxHost;
  readonly #entries: Entry[] = [];
  #bytes = 0;
  readonly #retry = new TimerSlot();
  #closed: LadderError | null = null;

  constructor(host: OutboxHost) {
    this.#host = host;
  }

  push(channel: string, data: unknown): Promise<PublishResult> {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(this.#closed);
      const bytes = (JSON.stringify(data) ?? "").length;
      const { maxCount, maxBytes, overflow } = this.#host.queue;
      const full = (): boolean => this.#entries.length >= maxCount || this.#bytes + bytes > maxBytes;
      const error = (): LadderError => new LadderError("queue_full", "publish queue is full");
      for (let old; full() && overflow === "drop-oldest" && (old = this.#entries.find((e) => !e.sending)); ) this.#settle(old, (e) => e.reject(error()));
      if (full()) return reject(error());
      this.#entries.push({ channel, data, key: newKey(), bytes, sending: false, attempt: 0, resolve, reject });
      this.#bytes += bytes;
      this.drain();
    });
  }

  /** Sends what waits, in order (called on every connect and after each ack). */
  drain(): void {
    const pipelined = this.#host.pipelined();
    for (const entry of this.#entries) {
      if (entry.sending) {
        if (pipelined) continue;
        return;
      }
      const sent = this.#host.send(entry);
      if (!sent) return;
      entry.sending = true;
      sent.then(
        (ack) => {
          this.#settle(entry, (e) => e.resolve(ack.duplicate ? { id: ack.id, channel: e.channel, duplicate: true } : { id: ack.id, channel: e.channel }));
          this.drain();
        },
        (error: unknown) => {
          if (!this.#entries.includes(entry)) return;
          if (!unknownOutcome(error)) {
            this.#settle(entry, (e) => e.reject(error));
            this.drain();
            return;
          }
          entry.sending = false;
          // Sent again on the next connect, or after a pause if the rung is still up (a timeout, a 503).
          this.#retry.set(this.#host.retryDelay(entry.attempt++), () => this.drain());
        },
      );
      if (!pipelined) return;
    }
  }

  /** Rejects everything held (the client closed). */
  close(error: LadderError): void {
    this.#closed = error;
    this.#retry.clear();
    for (const entry of [...this.#entries]) this.#settle(entry, (e) => e.reject(error));
  }

  #settle(entry: Entry, action: (entry: Entry) => void): void {
    const at = this.#entries.indexOf(entry);
    if (at < 0) return;
    this.#entries.splice(at, 1);
    this.#bytes -= entry.bytes;
    action(entry);
  }
}
