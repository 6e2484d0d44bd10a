/**
 * The bench's publisher: `POST /api/messages` at a steady rate, round robin over the run's channels,
 * each message stamped just before it is sent and numbered, each acknowledgement kept (the id the hub gave
 * it) so subscribers can be checked against exactly what the hub accepted.
 */
import { nowMs } from "./histogram.js";
import { readAll, type HttpClient } from "./connections.js";
import type { BenchPayload } from "./subscribers.js";

export interface Acked {
  readonly seq: number;
  readonly id: string;
}

/** Requests in flight at once before the publisher waits: past it the hub (or the network) is the limit. */
const MAX_IN_FLIGHT = 256;
const TICK_MS = 5;

export class Publisher {
  readonly #http: HttpClient;
  readonly #path: string;
  readonly #channels: readonly string[];
  readonly #padding: string;
  /** Acknowledged publishes per channel, in the order they were sent. */
  readonly acked = new Map<string, Acked[]>();
  sent = 0;
  failed = 0;
  lastFailure = "";
  /** Ticks on which the rate could not be kept because MAX_IN_FLIGHT requests were still open. */
  behind = 0;
  readonly perSecond: number[] = [];
  #inFlight = 0;
  #seq = 0;
  #start = 0;

  constructor(http: HttpClient, path: string, channels: readonly string[], size: number) {
    this.#http = http;
    this.#path = path;
    this.#channels = channels;
    // Padding brings the encoded payload to about `size` bytes (the stamp and number take ~40).
    this.#padding = "x".repeat(Math.max(0, size - 40));
    for (const channel of channels) this.acked.set(channel, []);
  }

  /** Publishes at `rate` per second for `seconds`, then waits for every answer. */
  async run(rate: number, seconds: number, onTick?: () => void): Promise<void> {
    this.#start = nowMs();
    const total = Math.round(rate * seconds);
    const pending = new Set<Promise<void>>();
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const due = Math.min(total, Math.floor(((nowMs() - this.#start) / 1000) * rate));
        while (this.sent < due) {
          if (this.#inFlight >= MAX_IN_FLIGHT) {
            this.behind++;
            break;
          }
          const p = this.#publishOne();
          pending.add(p);
          void p.finally(() => pending.delete(p));
        }
        onTick?.();
        if (this.sent >= total) {
          clearInterval(timer);
          resolve();
        }
      }, TICK_MS);
    });
    await Promise.all(pending);
  }

  async #publishOne(): Promise<void> {
    const seq = ++this.#seq;
    const channel = this.#channels[seq % this.#channels.length]!;
    this.sent++;
    this.#inFlight++;
    const t = nowMs();
    const data: BenchPayload = this.#padding ? { t, s: seq, p: this.#padding } : { t, s: seq };
    const second = Math.floor((t - this.#start) / 1000);
    while (this.perSecond.length <= second) this.perSecond.push(0);
    this.perSecond[second]!++;
    try {
      const answer = await this.#http.request("POST", this.#path, JSON.stringify({ channel, data }), { "content-type": "application/json" });
      const body = await readAll(answer);
      if (answer.status === 201) {
        this.acked.get(channel)!.push({ seq, id: (JSON.parse(body) as { id: string }).id });
      } else {
        this.failed++;
        this.lastFailure = `${answer.status} ${body.slice(0, 200)}`;
      }
    } catch (error) {
      this.failed++;
      this.lastFailure = (error as Error).message;
    } finally {
      this.#inFlight--;
    }
  }
}
