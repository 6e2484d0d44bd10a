/**
 * Reconnect delays: exponential backoff with full jitter — a uniform draw between 0 and the capped
 * exponential — so that many clients losing one server at once spread their returns over the whole window
 * instead of arriving together (AWS Architecture Blog, "Exponential Backoff and Jitter").
 */

export interface BackoffOptions {
  /** Ceiling of the first draw, in ms. */
  readonly minMs: number;
  /** Largest ceiling, in ms. */
  readonly maxMs: number;
  readonly factor: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { minMs: 500, maxMs: 30_000, factor: 2 };
/** The slower backoff of attempts to climb back to a higher rung. */
export const DEFAULT_PROBE: BackoffOptions = { minMs: 5000, maxMs: 120_000, factor: 2 };

/** The ceiling for attempt `n` (0-based): min(maxMs, minMs · factor^n). */
export function backoffCeiling(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  const n = Math.max(0, Math.floor(attempt));
  return Math.min(options.maxMs, options.minMs * Math.pow(options.factor, n));
}

/** A full-jitter delay for attempt `n`: uniform in [0, ceiling). `random` returns [0, 1) like Math.random. */
export function backoffDelay(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeiling(attempt, options));
}
