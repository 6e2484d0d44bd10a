/**
 * Publish-to-delivery latency and delivery counts, recorded in the load process without allocation (the
 * histogram lives in src/bench/histogram.ts, shared with `ladder bench`).
 */

import { LatencyHistogram, nowMs } from "../src/bench/histogram.js";

export { LatencyHistogram, nowMs };

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
