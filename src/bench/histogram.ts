/**
 * Publish-to-delivery latency without allocation: a log-bucketed histogram (1% relative precision from
 * 1 µs to ~2 minutes) instead of a list of samples. Shared by `ladder bench` and the repo's bench/.
 */

/** Wall-clock milliseconds with sub-millisecond precision; the publisher and every receiver share this process's clock. */
export const nowMs = (): number => performance.timeOrigin + performance.now();

const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
/** Bucket 0 holds everything under 1 µs; bucket i ≥ 1 holds [GROWTH^(i-1), GROWTH^i) µs. */
const BUCKETS = 1 + Math.ceil(Math.log(120e6) / LOG_GROWTH);

export class LatencyHistogram {
  readonly #counts = new Float64Array(BUCKETS);
  #count = 0;
  #max = 0;
  #sum = 0;

  record(ms: number): void {
    const us = ms * 1000;
    let i = us < 1 ? 0 : 1 + Math.floor(Math.log(us) / LOG_GROWTH);
    if (i >= BUCKETS) i = BUCKETS - 1;
    this.#counts[i]!++;
    this.#count++;
    this.#sum += ms;
    if (ms > this.#max) this.#max = ms;
  }

  get count(): number {
    return this.#count;
  }

  get mean(): number {
    return this.#count === 0 ? NaN : this.#sum / this.#count;
  }

  get max(): number {
    return this.#count === 0 ? NaN : this.#max;
  }

  /** The latency (ms) below which a fraction `q` of the samples fall: the geometric middle of its bucket. */
  quantile(q: number): number {
    if (this.#count === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.#count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i]!;
      if (seen >= rank) {
        if (i === 0) return 0.0005;
        const lowUs = GROWTH ** (i - 1);
        return Math.min(this.#max, (lowUs * Math.sqrt(GROWTH)) / 1000);
      }
    }
    return this.#max;
  }

  /** Non-empty buckets as [upper bound in ms, count], lowest first: what a histogram chart draws. */
  buckets(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = 0; i < BUCKETS; i++) {
      const count = this.#counts[i]!;
      if (count > 0) out.push([i === 0 ? 0.001 : GROWTH ** i / 1000, count]);
    }
    return out;
  }

  reset(): void {
    this.#counts.fill(0);
    this.#count = 0;
    this.#sum = 0;
    this.#max = 0;
  }
}
