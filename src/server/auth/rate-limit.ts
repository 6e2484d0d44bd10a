/**
 * Token buckets keyed by who is asking (a token's subject or an IP): `ratePerSecond` tokens refill
 * continuously up to `burst`. Buckets that have refilled completely carry no information and are dropped,
 * so memory stays bounded by the number of recently active keys.
 */

export interface BucketOptions {
  readonly ratePerSecond: number;
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

export class RateLimiter {
  readonly #options: BucketOptions;
  readonly #buckets = new Map<string, Bucket>();
  readonly #now: () => number;

  constructor(options: BucketOptions, now: () => number = Date.now) {
    this.#options = options;
    this.#now = now;
  }

  /** Takes one token; returns 0 when allowed, or the seconds to wait before the next one (for Retry-After). */
  take(key: string): number {
    const now = this.#now();
    const { ratePerSecond, burst } = this.#options;
    const bucket = this.#buckets.get(key) ?? { tokens: burst, updatedAt: now };
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * ratePerSecond);
    bucket.updatedAt = now;
    this.#buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / ratePerSecond));
  }

  /** Drops buckets that are full again. */
  sweep(): void {
    const now = this.#now();
    const { ratePerSecond, burst } = this.#options;
    for (const [key, bucket] of this.#buckets) {
      if (bucket.tokens + ((now - bucket.updatedAt) / 1000) * ratePerSecond >= burst) this.#buckets.delete(key);
    }
  }

  get size(): number {
    return this.#buckets.size;
  }
}

/** Counts open connections per key (an IP), refusing past a limit. */
export class ConnectionCounter {
  readonly #limit: number;
  readonly #counts = new Map<string, number>();

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Takes a slot; returns a release function, or null when the key is at its limit. */
  acquire(key: string): (() => void) | null {
    const count = this.#counts.get(key) ?? 0;
    if (count >= this.#limit) return null;
    this.#counts.set(key, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#counts.get(key) ?? 1) - 1;
      if (left <= 0) this.#counts.delete(key);
      else this.#counts.set(key, left);
    };
  }

  count(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  get size(): number {
    return this.#counts.size;
  }
}
