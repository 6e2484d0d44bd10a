/**
 * The soak's own event-loop delay. The soak is one process — load generator, front proxy, thirty
 * subscribers and the checker — so when the machine is saturated it can fall behind reading what the nodes
 * have already sent, and a silence it measures may be its own. A timer ticks every {@link TICK_MS}; how late
 * each tick fires is this process's delay at that moment, and the ticks of the last minute are kept so a
 * stall can be reported with how much of it the soak itself was not running.
 */
const TICK_MS = 100;
const KEEP_MS = 60_000;

export interface LagWindow {
  /** Longest single delay of a tick in the window, ms. */
  readonly maxMs: number;
  /** Sum of the ticks' delays in the window, ms: time the soak's loop was busy or not scheduled past its tick. */
  readonly totalMs: number;
}

export class LoopLag {
  /** [time the tick fired, its delay], oldest first. */
  readonly #ticks: Array<[number, number]> = [];
  #last = performance.now();
  #timer: ReturnType<typeof setInterval> | null = null;
  /** Longest delay since the last {@link takeMax}. */
  #max = 0;
  /** Longest delay over the whole run. */
  maxMs = 0;

  start(): void {
    this.#last = performance.now();
    this.#timer = setInterval(() => {
      const now = performance.now();
      const delay = Math.max(0, now - this.#last - TICK_MS);
      this.#last = now;
      const at = Date.now();
      this.#ticks.push([at, delay]);
      while (this.#ticks.length > 0 && this.#ticks[0]![0] < at - KEEP_MS) this.#ticks.shift();
      if (delay > this.#max) this.#max = delay;
      if (delay > this.maxMs) this.maxMs = delay;
    }, TICK_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** The longest delay since the previous call (for the progress line). */
  takeMax(): number {
    const max = this.#max;
    this.#max = 0;
    return Math.round(max);
  }

  /** Delays of the ticks that fired in [from, to] (Date.now() times). */
  window(from: number, to: number): LagWindow {
    let maxMs = 0;
    let totalMs = 0;
    for (const [at, delay] of this.#ticks) {
      if (at < from || at > to) continue;
      totalMs += delay;
      if (delay > maxMs) maxMs = delay;
    }
    return { maxMs: Math.round(maxMs), totalMs: Math.round(totalMs) };
  }
}
