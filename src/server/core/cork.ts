/**
 * Write batching for the fan-out hot path. Most of what a delivery costs is the write into the kernel, not
 * the bytes, so every message for a socket that reaches it within a short span goes out in one writev.
 *
 * - A socket that has not been flushed for `holdMs` (idle) is corked until the end of this event-loop turn
 *   (setImmediate runs after the I/O callbacks of the turn): whatever arrived in the same turn shares one
 *   writev and nothing waits longer than the turn. This is the whole behaviour with `holdMs` 0.
 * - A socket flushed less than `holdMs` ago (messages come faster than that) stays corked until `holdMs`
 *   after its last flush, so a busy socket gets at most one write per `holdMs` carrying every message of
 *   that span. The hold is the cap on the added latency; it applies only under load.
 * - A held socket whose queued bytes pass {@link FLUSH_BYTES} is flushed at once, so holding never pushes a
 *   connection towards the slow-consumer bound or keeps large bursts in memory.
 */

export interface Corkable {
  cork(): void;
  uncork(): void;
  readonly destroyed?: boolean;
  readonly writableLength?: number;
}

/** A connection the batcher corks: its last flush time and the socket it holds corked, if any. */
export interface Batched {
  /** performance.now() at the last flush; -Infinity before the first. */
  flushedAt: number;
  /** The socket the batcher holds corked for this connection, or null. */
  heldSocket: Corkable | null;
}

/** Bytes queued on a held socket past which it is flushed without waiting out the hold. */
export const FLUSH_BYTES = 64 * 1024;

export class WriteBatcher {
  readonly holdMs: number;
  /** Connections corked until the end of the turn. */
  #turn: Batched[] = [];
  #turnScheduled = false;
  /** Connections held until a due time (integer ms of performance.now()); one timer per due time. */
  readonly #slots = new Map<number, Batched[]>();
  readonly #flushTurn = (): void => {
    const list = this.#turn;
    this.#turn = [];
    this.#turnScheduled = false;
    flushAll(list);
  };

  constructor(holdMs: number) {
    this.holdMs = holdMs;
  }

  /** Corks `socket` for `target` (once per batch) before a write; it is uncorked by the batcher. */
  hold(target: Batched, socket: Corkable): void {
    if (target.heldSocket !== null) return;
    socket.cork();
    target.heldSocket = socket;
    const now = performance.now();
    const due = target.flushedAt + this.holdMs;
    if (this.holdMs === 0 || now >= due) {
      this.#turn.push(target);
      if (!this.#turnScheduled) {
        this.#turnScheduled = true;
        setImmediate(this.#flushTurn);
      }
      return;
    }
    const at = Math.ceil(due);
    let slot = this.#slots.get(at);
    if (slot === undefined) {
      slot = [];
      this.#slots.set(at, slot);
      setTimeout(() => {
        this.#slots.delete(at);
        flushAll(slot!);
      }, at - now);
    }
    slot.push(target);
  }

  /** After a write: flushes a held socket at once when it has queued {@link FLUSH_BYTES}. */
  afterWrite(target: Batched): void {
    const socket = target.heldSocket;
    if (socket !== null && (socket.writableLength ?? 0) >= FLUSH_BYTES) flush(target, performance.now());
  }

  /** Connections held or corked for the turn right now (for tests and metrics). */
  get pending(): number {
    let count = this.#turn.length;
    for (const slot of this.#slots.values()) count += slot.length;
    return count;
  }
}

function flush(target: Batched, now: number): void {
  const socket = target.heldSocket;
  // Flushed early (FLUSH_BYTES): this entry was already settled; a later hold has its own entry.
  if (socket === null) return;
  target.heldSocket = null;
  target.flushedAt = now;
  if (!socket.destroyed) socket.uncork();
}

function flushAll(list: readonly Batched[]): void {
  const now = performance.now();
  for (const target of list) flush(target, now);
}
