/**
 * Publish-to-delivery latency and delivery counts, recorded in the load process without allocation:
 * a log-bucketed histogram (1% relative precision from 1 µs to ~2 minutes) instead of a list of samples.
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

  reset(): void {
    this.#counts.fill(0);
    this.#count = 0;
    this.#sum = 0;
    this.#max = 0;
  }
}

/** What every client of one run reports into. Messages published before `measureFrom` (the warm-up) are not counted. */
export class DeliveryMetrics {
  readonly latency = new LatencyHistogram();
  delivered = 0;
  /** Every delivery, warm-up included, since the metrics were made. */
  seen = 0;
  /** Messages that came twice or out of order on one connection, as far as a client can tell. */
  anomalies = 0;
  lastDeliveryAt = 0;
  measureFrom = Number.POSITIVE_INFINITY;
  /** Client-side errors (failed requests, unexpected closes) during the run. */
  errors = 0;

  /** Records one delivery of a message stamped `t` at publish time, received at `now`. */
  record(t: number, now: number): void {
    this.seen++;
    if (!(t >= this.measureFrom)) return;
    this.delivered++;
    this.latency.record(now - t);
    this.lastDeliveryAt = now;
  }

  startMeasuring(from: number): void {
    this.latency.reset();
    this.delivered = 0;
    this.anomalies = 0;
    this.errors = 0;
    this.lastDeliveryAt = 0;
    this.measureFrom = from;
  }
}

/**
 * Reads the publish stamp out of a delivered payload without parsing all of it: the bench publishes
 * `{"t":<ms>,"seq":<n>}`, so the number after the first `{"t":` is the stamp. Returns NaN when absent.
 */
export function extractStamp(text: string, from = 0): number {
  const at = text.indexOf('{"t":', from);
  if (at < 0) return Number.NaN;
  let end = at + 5;
  for (;;) {
    const c = text.charCodeAt(end);
    // digits, '.', '-', '+', 'e', 'E'
    if ((c >= 48 && c <= 57) || c === 46 || c === 45 || c === 43 || c === 101 || c === 69) end++;
    else break;
  }
  return Number(text.slice(at + 5, end));
}
