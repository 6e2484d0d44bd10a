/**
 * Webhooks: the hub tells the app what happened (`channel_occupied`, `channel_vacated`, `member_added`,
 * `member_removed`), fire-and-forget for the caller, at least once for the app. Events of one channel go
 * out one at a time, in order; a failed one is retried with exponential backoff and jitter, up to
 * `attempts`, and then given up — logged at error level and counted, never dropped silently. The queue is
 * bounded over all channels; an event past it is dropped the same loud way.
 *
 * Each POST carries `ladder-webhook-timestamp` (unix seconds) and `ladder-webhook-signature: v1=<hex>`, the
 * HMAC-SHA256 of `<timestamp>.<body>` with the shared secret (docs/hooks.md shows the check).
 */
import { createHmac, randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { HookFailure, Signed, type HookCaller, type HookObserver } from "./caller.js";
import type { WebhookOptions } from "./options.js";

export type WebhookEventName = "channel_occupied" | "channel_vacated" | "member_added" | "member_removed";

export interface WebhookEvent {
  /** Unique per event: a retried delivery repeats it, so the app can drop duplicates. */
  readonly id: string;
  readonly event: WebhookEventName;
  readonly channel: string;
  /** Ms since the epoch, when the hub saw it happen. */
  readonly time: number;
  /** For presence events: the member (user and info) as presence reports it. */
  readonly member?: unknown;
}

export const TIMESTAMP_HEADER = "ladder-webhook-timestamp";
export const SIGNATURE_HEADER = "ladder-webhook-signature";

const DEFAULT_ATTEMPTS = 5;
const DEFAULT_BACKOFF_MS = 500;
const DEFAULT_MAX_QUEUE = 10_000;
/** No single wait between attempts grows past this. */
const MAX_BACKOFF_MS = 30_000;

/** The signature header's value for a body sent at `timestamp` (unix seconds). */
export function sign(secret: string, timestamp: number, body: string): string {
  return "v1=" + createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
}

export class Webhooks {
  readonly #options: WebhookOptions;
  readonly #caller: HookCaller;
  readonly #logger: Logger;
  readonly #observer: HookObserver | null;
  /** Waiting events per channel; a channel is in the map while one of its events is in flight or waiting. */
  readonly #queues = new Map<string, WebhookEvent[]>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #queued = 0;
  #closed = false;
  /** Events the app confirmed with a 2xx, and events given up; for tests and the close log. */
  delivered = 0;
  gaveUp = 0;

  constructor(options: WebhookOptions, caller: HookCaller, logger: Logger, observer: HookObserver | null) {
    this.#options = options;
    this.#caller = caller;
    this.#logger = logger;
    this.#observer = observer;
  }

  /** Queues an event; returns at once. The hook point presence calls for member_added / member_removed. */
  emit(event: WebhookEventName, channel: string, member?: unknown): void {
    const entry: WebhookEvent = member === undefined ? { id: randomUUID(), event, channel, time: Date.now() } : { id: randomUUID(), event, channel, time: Date.now(), member };
    if (this.#closed || this.#queued >= (this.#options.maxQueue ?? DEFAULT_MAX_QUEUE)) {
      this.#giveUp(entry, this.#closed ? "hub closed" : "webhook queue full");
      return;
    }
    this.#queued++;
    const queue = this.#queues.get(channel);
    if (queue) {
      queue.push(entry);
      return;
    }
    this.#queues.set(channel, [entry]);
    this.#send(channel, entry, 1);
  }

  /** Events waiting or in flight. */
  get pending(): number {
    return this.#queued;
  }

  /** Stops retrying; what is still queued is logged as lost. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const queue of this.#queues.values()) for (const event of queue) this.#giveUp(event, "hub closed");
    this.#queues.clear();
    this.#queued = 0;
  }

  #send(channel: string, event: WebhookEvent, attempt: number): void {
    const body = JSON.stringify(event);
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = { [TIMESTAMP_HEADER]: String(timestamp), [SIGNATURE_HEADER]: sign(this.#options.secret, timestamp, body) };
    this.#caller.call("webhook", this.#options.url, new Signed(body), () => undefined, undefined, headers).then(
      () => {
        this.delivered++;
        this.#next(channel);
      },
      (error: unknown) => {
        if (this.#closed) return;
        const attempts = this.#options.attempts ?? DEFAULT_ATTEMPTS;
        if (attempt >= attempts) {
          this.#giveUp(event, `${attempts} attempts failed, last: ${(error as HookFailure).reason ?? String(error)}`);
          this.#next(channel);
          return;
        }
        const base = Math.min(MAX_BACKOFF_MS, (this.#options.backoffMs ?? DEFAULT_BACKOFF_MS) * 2 ** (attempt - 1));
        // Jitter spreads the retries of many nodes that saw the app fail at the same moment.
        const timer = setTimeout(() => {
          this.#timers.delete(timer);
          this.#send(channel, event, attempt + 1);
        }, base / 2 + Math.random() * (base / 2));
        timer.unref();
        this.#timers.add(timer);
      },
    );
  }

  /** The channel's head is done (delivered or given up): the next event of the channel goes. */
  #next(channel: string): void {
    if (this.#closed) return;
    const queue = this.#queues.get(channel);
    if (!queue) return;
    queue.shift();
    this.#queued--;
    const head = queue[0];
    if (head) this.#send(channel, head, 1);
    else this.#queues.delete(channel);
  }

  #giveUp(event: WebhookEvent, why: string): void {
    this.gaveUp++;
    this.#observer?.hookFailed("webhook", "dropped");
    this.#logger.error({ webhook: event, reason: why }, "webhook event lost");
  }
}
