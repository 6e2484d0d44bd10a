/**
 * How a broker engine starts: it connects in the background from its constructor (a node may start before
 * its broker), and a read or subscribe made meanwhile waits for that first start, until a deadline
 * (`startTimeoutMs` after construction). Once started, an outage fails at once: the engine's own
 * readiness check says so, not this gate.
 */
export class StartGate {
  readonly #started: Promise<void>;
  readonly #deadline: number;

  constructor(start: () => Promise<void>, timeoutMs: number) {
    this.#deadline = Date.now() + timeoutMs;
    // A start that fails shows in the engine's readiness, which every caller checks after waiting.
    this.#started = start().catch(() => undefined);
  }

  /** Waits for the first start unless `settled`, for at most `timeoutMs` (by default, until the deadline). */
  async wait(settled: boolean, timeoutMs = this.#deadline - Date.now()): Promise<void> {
    if (settled || timeoutMs <= 0) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      timer.unref();
    });
    await Promise.race([this.#started, timeout]);
    clearTimeout(timer);
  }
}
