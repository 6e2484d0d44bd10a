/**
 * Write batching for the fan-out hot path. Most of what a delivery costs is the write into the kernel and
 * Node's stream machinery in front of it, not the bytes, so every message for a socket that reaches it
 * within a short span goes out in one write. A batched connection queues its messages' bytes itself while
 * held (a Buffer, or a few) and writes them with one `socket.write` when the batcher flushes it: cheaper
 * per message than a `socket.write` into a corked socket, which runs the whole Writable path each time.
 *
 * - A connection that has not been flushed for `holdMs` (idle) is held until the end of this event-loop
 *   turn (setImmediate runs after the I/O callbacks of the turn): whatever arrived in the same turn shares
 *   one write and nothing waits longer than the turn. This is the whole behaviour with `holdMs` 0.
 * - A connection flushed less than `holdMs` ago (messages come faster than that) is held until `holdMs`
 *   after its last flush, so a busy socket gets at most one write per `holdMs` carrying every message of
 *   that span. The hold is the cap on the added latency; it applies only under load.
 * - A connection whose queued bytes pass {@link FLUSH_BYTES} is flushed at once, so holding never pushes a
 *   connection towards the slow-consumer bound or keeps large bursts in memory.
 */

/** A connection the batcher holds: its last flush time, whether it is held, and how to write what it queued. */
export interface Batched {
  /** performance.now() at the last flush; -Infinity before the first. */
  flushedAt: number;
  /** True from {@link WriteBatcher.hold} until the batcher flushes it. */
  held: boolean;
  /** Writes what the connection queued while held (nothing when it has nothing queued). */
  flushHeld(): void;
}

/** Bytes queued by a held connection past which it is flushed without waiting out the hold. */
export const FLUSH_BYTES = 64 * 1024;

export class WriteBatcher {
  readonly holdMs: number;
  /** Connections held until the end of the turn. */
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

  /** Holds `target` (once per batch) as it queues a write; the batcher flushes it. */
  hold(target: Batched): void {
    if (target.held) return;
    target.held = true;
    const now = performance.now();
    const due = target.flushedAt + this.holdMs;
    if (this.holdMs === 0 || now >= due) {
      this.#untilTurnEnd(target);
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

  /**
   * Holds `target` until the end of this turn at the latest, however recently it was flushed: for an
   * answer its peer waits on (a publish's ack). Holding that for `holdMs` would let a publisher that awaits
   * each ack publish once per `holdMs`; answers to frames read in one turn still share one write. A slot
   * the target was already held in finds it settled when its time comes.
   */
  holdForTurn(target: Batched): void {
    target.held = true;
    this.#untilTurnEnd(target);
  }

  #untilTurnEnd(target: Batched): void {
    this.#turn.push(target);
    if (!this.#turnScheduled) {
      this.#turnScheduled = true;
      setImmediate(this.#flushTurn);
    }
  }

  /** Flushes a held connection now (it queued {@link FLUSH_BYTES}); its pending slot then finds it settled. */
  flush(target: Batched): void {
    flush(target, performance.now());
  }

  /** Connections held right now (for tests and metrics). */
  get pending(): number {
    let count = this.#turn.length;
    for (const slot of this.#slots.values()) count += slot.length;
    return count;
  }
}

function flush(target: Batched, now: number): void {
  // Flushed early (FLUSH_BYTES): this entry was already settled; a later hold has its own entry.
  if (!target.held) return;
  target.held = false;
  target.flushedAt = now;
  target.flushHeld();
}

function flushAll(list: readonly Batched[]): void {
  const now = performance.now();
  for (const target of list) flush(target, now);
}
