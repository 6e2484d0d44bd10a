/**
 * The demo page's built-in publisher. While running it feeds three channels through the hub's own
 * publish, so the page shows real traffic on real channels:
 *
 * - `demo.prices` — a random-walk price about once a second (the guide's `{"price": 142.10}`), for SSE;
 * - `demo.feed`   — a short status line at irregular intervals (1–5 s), so interval polling meets empty
 *                   answers and long-polling shows it does not;
 * - `demo.chat`   — now and then a line from `ladder-bot`, so the WebSocket chat is alive in one tab.
 *
 * Every message carries `n` (a per-channel sequence, so the page can prove nothing was lost across a cut)
 * and `ts` (publish time in ms, for the delivery latency). It starts only when asked — `POST /demo/publisher
 * {"running": true}` — and stops by itself `leaseMs` after the last start, so a forgotten tab does not keep a
 * hub publishing forever; the page renews the lease while it is open. Hub core knows nothing of it: `ladder
 * serve` mounts {@link demoRoutes} in front of the static files when the demo is on.
 */
import { LadderError } from "../protocol/index.js";
import { closeAfterResponse, readJsonBody, sendJson, type HubRequest, type HubResponse } from "../server/edge/http.js";
import { sendError } from "../server/edge/refusal.js";

export const DEMO_CHANNELS = { prices: "demo.prices", feed: "demo.feed", chat: "demo.chat" } as const;
export const DEMO_PUBLISHER_PATH = "/demo/publisher";

export type DemoPublish = (channel: string, data: unknown) => Promise<unknown>;

export interface DemoPublisherOptions {
  /** Interval of `demo.prices`, ms. Default 1000. */
  readonly priceIntervalMs?: number;
  /** Bounds of the random interval of `demo.feed`, ms. Default 1000–5000. */
  readonly feedIntervalMs?: readonly [number, number];
  /** Bounds of the random interval of the chat bot, ms. Default 9000–16000. */
  readonly chatIntervalMs?: readonly [number, number];
  /** The publisher stops by itself this long after the last start request, ms. Default 10 min. */
  readonly leaseMs?: number;
  readonly random?: () => number;
  readonly now?: () => number;
}

export interface DemoPublisherStatus {
  readonly running: boolean;
  /** Server clock, ms since the epoch: lets the page estimate its clock offset for latencies. */
  readonly now: number;
  /** When the lease runs out (ms since the epoch), or null when stopped. */
  readonly stopsAt: number | null;
  readonly channels: typeof DEMO_CHANNELS;
  readonly priceIntervalMs: number;
  readonly feedIntervalMs: readonly [number, number];
  readonly chatIntervalMs: readonly [number, number];
  /** Messages published per channel since the process started. */
  readonly published: { readonly prices: number; readonly feed: number; readonly chat: number };
  /** Publishes the hub refused (it was draining or closing, say). */
  readonly failed: number;
}

const FEED = [
  "Build #{n} passed on main",
  "Deploy to staging finished in 42 s",
  "New sign-up from Lisbon",
  "Order #{n} paid — 3 items",
  "Nightly backup completed",
  "Cache hit rate back above 95 %",
  "Invoice #{n} sent",
  "Alice closed issue #{n}",
  "Search index rebuilt",
  "Support ticket #{n} answered",
];

const BOT = [
  "Hi! Open this page in a second tab and say hello — it arrives over the same WebSocket.",
  "Press “Cut connections”: the client backs off, reconnects and re-joins with since=<last id>.",
  "Every message has an id; a resume asks only for what came after it.",
  "This socket also carries pings: WebSockets leave heartbeats to you (or to a client library).",
  "Send while the socket is down and the client posts over HTTP instead — nothing is dropped.",
];

export class DemoPublisher {
  readonly #priceIntervalMs: number;
  readonly #feedIntervalMs: readonly [number, number];
  readonly #chatIntervalMs: readonly [number, number];
  readonly #leaseMs: number;
  readonly #random: () => number;
  readonly #now: () => number;
  #publish: DemoPublish | null = null;
  #timers: Array<ReturnType<typeof setTimeout>> = [];
  #lease: ReturnType<typeof setTimeout> | undefined;
  #stopsAt: number | null = null;
  #closed = false;
  #price = 142.1;
  #feedLine = -1;
  readonly #seq = { prices: 0, feed: 0, chat: 0 };
  #failed = 0;

  constructor(options: DemoPublisherOptions = {}) {
    this.#priceIntervalMs = options.priceIntervalMs ?? 1000;
    this.#feedIntervalMs = options.feedIntervalMs ?? [1000, 5000];
    this.#chatIntervalMs = options.chatIntervalMs ?? [9000, 16_000];
    this.#leaseMs = options.leaseMs ?? 10 * 60_000;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
  }

  /** Where messages go: `(channel, data) => hub.publish(channel, data)`. */
  attach(publish: DemoPublish): void {
    this.#publish = publish;
  }

  get running(): boolean {
    return this.#stopsAt !== null;
  }

  /** Starts publishing, or renews the lease when already running. */
  start(): void {
    if (this.#closed) throw new LadderError("unavailable", "the demo publisher is shut down");
    if (!this.#publish) throw new LadderError("unavailable", "the demo publisher is not attached to a hub yet");
    clearTimeout(this.#lease);
    this.#lease = setTimeout(() => this.stop(), this.#leaseMs);
    this.#lease.unref?.();
    this.#stopsAt = this.#now() + this.#leaseMs;
    if (this.#timers.length > 0) return;
    this.#loop(() => this.#priceIntervalMs, () => this.#tickPrice());
    this.#loop(() => this.#between(this.#feedIntervalMs), () => this.#tickFeed());
    // The bot says hello soon after a start, so a single tab sees its chat come alive.
    this.#loop(() => this.#between(this.#chatIntervalMs), () => this.#tickChat(), Math.min(1500, this.#chatIntervalMs[0]));
  }

  stop(): void {
    clearTimeout(this.#lease);
    this.#lease = undefined;
    this.#stopsAt = null;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers = [];
  }

  /** Stops for good (the server is shutting down). */
  close(): void {
    this.#closed = true;
    this.stop();
  }

  status(): DemoPublisherStatus {
    return {
      running: this.running,
      now: this.#now(),
      stopsAt: this.#stopsAt,
      channels: DEMO_CHANNELS,
      priceIntervalMs: this.#priceIntervalMs,
      feedIntervalMs: this.#feedIntervalMs,
      chatIntervalMs: this.#chatIntervalMs,
      published: { ...this.#seq },
      failed: this.#failed,
    };
  }

  /** One self-rescheduling timer slot; `first` overrides the first delay. */
  #loop(delay: () => number, tick: () => void, first?: number): void {
    const slot = this.#timers.length;
    const schedule = (ms: number): void => {
      const timer = setTimeout(() => {
        if (!this.running) return;
        tick();
        schedule(delay());
      }, ms);
      timer.unref?.();
      this.#timers[slot] = timer;
    };
    schedule(first ?? delay());
  }

  #between([min, max]: readonly [number, number]): number {
    return Math.round(min + this.#random() * (max - min));
  }

  #send(channel: string, data: unknown): void {
    const publish = this.#publish;
    if (!publish) return;
    publish(channel, data).catch(() => {
      this.#failed++;
    });
  }

  #tickPrice(): void {
    // A random walk of at most ±0.35 a tick, kept positive.
    this.#price = Math.max(1, Math.round((this.#price + (this.#random() - 0.5) * 0.7) * 100) / 100);
    const n = ++this.#seq.prices;
    this.#send(DEMO_CHANNELS.prices, { price: this.#price, n, ts: this.#now() });
  }

  #tickFeed(): void {
    const n = ++this.#seq.feed;
    // A random line, never the same one twice in a row.
    this.#feedLine = (this.#feedLine + 1 + Math.floor(this.#random() * (FEED.length - 1))) % FEED.length;
    const template = FEED[this.#feedLine]!;
    const text = template.replace("{n}", String(1000 + n));
    this.#send(DEMO_CHANNELS.feed, { text, n, ts: this.#now() });
  }

  #tickChat(): void {
    const n = ++this.#seq.chat;
    const text = BOT[(n - 1) % BOT.length]!;
    this.#send(DEMO_CHANNELS.chat, { name: "ladder-bot", bot: true, text, n, ts: this.#now() });
  }
}

/**
 * `GET /demo/publisher` → its status; `POST /demo/publisher {"running": true|false}` → starts (renewing the
 * lease) or stops it, answering the new status. Every other path goes to `next` (the static files).
 */
export function demoRoutes(publisher: DemoPublisher, next: (req: HubRequest, res: HubResponse) => void): (req: HubRequest, res: HubResponse) => void {
  return (req, res) => {
    const pathname = new URL(req.url ?? "/", "http://x").pathname;
    if (pathname !== DEMO_PUBLISHER_PATH) {
      next(req, res);
      return;
    }
    const method = req.method ?? "GET";
    if (method === "GET" || method === "HEAD") {
      sendJson(res, 200, publisher.status());
      return;
    }
    if (method !== "POST") {
      closeAfterResponse(req, res);
      sendError(res, new LadderError("method_not_allowed", "use GET or POST"), { allow: "GET, HEAD, POST" });
      return;
    }
    readJsonBody(req, 1024)
      .then((body) => {
        const running = typeof body === "object" && body !== null ? (body as { running?: unknown }).running : undefined;
        if (typeof running !== "boolean") throw new LadderError("bad_request", 'body must be {"running": true} or {"running": false}');
        if (running) publisher.start();
        else publisher.stop();
        sendJson(res, 200, publisher.status());
      })
      .catch((error: unknown) => {
        // An unread body must not linger on a kept-alive connection.
        closeAfterResponse(req, res);
        sendError(res, error instanceof LadderError ? error : new LadderError("internal", "internal error"));
      });
  };
}
