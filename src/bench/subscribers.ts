/**
 * `ladder bench`'s subscribers: one small class per rung, each speaking the wire protocol as a careful
 * client would (resume by id after a drop, the gap signal honoured) and recording what it got into one
 * {@link Tally} per pattern. Each keeps the sequence numbers it saw, so the run can count what was lost
 * or duplicated against what the publisher had acknowledged.
 */
import { createParser } from "eventsource-parser";
import type { WebSocket } from "ws";
import type { Gap } from "../protocol/index.js";
import { nowMs, LatencyHistogram } from "./histogram.js";
import { openWebSocket, readAll, type Answer, type HttpClient, type Target, type WireCounter } from "./connections.js";

export type Pattern = "poll" | "long-poll" | "sse" | "websocket";
export const PATTERNS: readonly Pattern[] = ["poll", "long-poll", "sse", "websocket"];

/** What every subscriber of one pattern reports into. */
export class Tally {
  readonly latency = new LatencyHistogram();
  readonly connect = new LatencyHistogram();
  delivered = 0;
  duplicates = 0;
  /** HTTP requests, SSE streams and WebSocket handshakes made. */
  requests = 0;
  /** Poll and long-poll answers that carried no message. */
  emptyAnswers = 0;
  /** Connections lost and made again after the subscriber was ready. */
  reconnects = 0;
  gaps = 0;
  errors = 0;
  lastError = "";
  lastDeliveryAt = 0;
  /** Deliveries per second of the run, from `start`. */
  readonly perSecond: number[] = [];
  start = nowMs();

  error(what: string): void {
    this.errors++;
    this.lastError = what;
  }

  delivery(latencyMs: number, at: number): void {
    this.delivered++;
    this.latency.record(Math.max(0, latencyMs));
    this.lastDeliveryAt = at;
    const second = Math.floor((at - this.start) / 1000);
    if (second >= 0) {
      while (this.perSecond.length <= second) this.perSecond.push(0);
      this.perSecond[second]!++;
    }
  }
}

export interface SubscriberContext {
  readonly target: Target;
  readonly http: HttpClient;
  readonly counter: WireCounter;
  readonly tally: Tally;
  readonly paths: { readonly messages: string; readonly stream: string; readonly websocket: string };
  readonly pollIntervalMs: number;
  readonly longPollWaitSeconds: number;
}

/** The payload the bench publishes: a send stamp, a sequence number, padding up to --size. */
export interface BenchPayload {
  readonly t: number;
  readonly s: number;
  readonly p?: string;
}

const RECONNECT_MIN_MS = 100;
const RECONNECT_SPREAD_MS = 400;

export abstract class Subscriber {
  readonly channel: string;
  /** Sequence number → how many times it arrived. */
  readonly received = new Map<number, number>();
  readonly gapsSeen: Gap[] = [];
  readonly ready: Promise<void>;
  protected readonly context: SubscriberContext;
  protected cursor: string | null = null;
  protected closed = false;
  #isReady = false;
  #resolveReady!: () => void;
  #rejectReady!: (error: Error) => void;
  readonly #openedAt = nowMs();
  #retry: NodeJS.Timeout | null = null;

  constructor(context: SubscriberContext, channel: string) {
    this.context = context;
    this.channel = channel;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // A subscriber that fails before it is ready is reported by the run, not as an unhandled rejection.
    this.ready.catch(() => undefined);
  }

  /** False once the subscriber gave up (it failed before it was ready) or was closed. */
  get active(): boolean {
    return !this.closed;
  }

  abstract start(): void;
  protected abstract stop(): void;

  close(): void {
    this.closed = true;
    if (this.#retry) clearTimeout(this.#retry);
    this.stop();
  }

  protected markReady(cursor: string | null): void {
    if (cursor) this.cursor = cursor;
    if (this.#isReady) return;
    this.#isReady = true;
    this.context.tally.connect.record(nowMs() - this.#openedAt);
    this.#resolveReady();
  }

  protected deliver(id: string, data: unknown): void {
    this.cursor = id;
    const payload = data as Partial<BenchPayload> | null;
    if (!payload || typeof payload.s !== "number" || typeof payload.t !== "number") return;
    const count = (this.received.get(payload.s) ?? 0) + 1;
    this.received.set(payload.s, count);
    if (count > 1) {
      this.context.tally.duplicates++;
      return;
    }
    const now = nowMs();
    this.context.tally.delivery(now - payload.t, now);
  }

  protected gap(gap: Gap): void {
    this.gapsSeen.push(gap);
    this.context.tally.gaps++;
    this.cursor = gap.resume;
  }

  /** After a failure: before ready it fails the subscriber; after, it reconnects with jitter and resumes. */
  protected lost(what: string): void {
    if (this.closed) return;
    this.context.tally.error(what);
    if (!this.#isReady) {
      this.closed = true;
      this.stop();
      this.#rejectReady(new Error(what));
      return;
    }
    this.context.tally.reconnects++;
    this.#retry = setTimeout(() => {
      this.#retry = null;
      if (!this.closed) this.start();
    }, RECONNECT_MIN_MS + Math.random() * RECONNECT_SPREAD_MS);
  }
}

function parseGap(header: string | string[] | undefined): Gap | null {
  if (typeof header !== "string") return null;
  try {
    return JSON.parse(header) as Gap;
  } catch {
    return null;
  }
}

class SseSubscriber extends Subscriber {
  #answer: Answer | null = null;

  start(): void {
    const { http, paths, tally } = this.context;
    const query = new URLSearchParams({ channel: this.channel });
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (this.cursor) headers["last-event-id"] = this.cursor;
    tally.requests++;
    http.request("GET", `${paths.stream}?${query}`, undefined, headers).then(
      (answer) => {
        if (this.closed) return answer.abort();
        if (answer.status !== 200) {
          answer.abort();
          return this.lost(`SSE answered ${answer.status}`);
        }
        this.#answer = answer;
        const parser = createParser({
          onEvent: (event) => {
            if (event.event === "ready") this.markReady(event.id ?? null);
            else if (event.event === "gap") this.gap(JSON.parse(event.data) as Gap);
            else if (event.event === undefined || event.event === "message") this.deliver(event.id ?? "", JSON.parse(event.data));
            else if (event.event === "error") this.context.tally.error(`SSE error event ${event.data}`);
          },
        });
        answer.body.setEncoding("utf8");
        answer.body.on("data", (chunk: string) => parser.feed(chunk));
        answer.body.once("close", () => {
          if (this.#answer === answer) this.#answer = null;
          this.lost("SSE stream ended");
        });
        answer.body.once("error", () => undefined);
      },
      (error: Error) => this.lost(`SSE request failed: ${error.message}`),
    );
  }

  protected stop(): void {
    this.#answer?.abort();
    this.#answer = null;
  }
}

class WebSocketSubscriber extends Subscriber {
  #ws: WebSocket | null = null;

  start(): void {
    const { target, counter, paths, tally } = this.context;
    tally.requests++;
    const ws = openWebSocket(target, counter, paths.websocket);
    this.#ws = ws;
    ws.on("open", () => ws.send(JSON.stringify(this.cursor ? { type: "join", room: this.channel, since: this.cursor } : { type: "join", room: this.channel })));
    ws.on("message", (raw: Buffer) => {
      const frame = JSON.parse(raw.toString("utf8")) as { type: string; id?: string; data?: unknown; cursor?: string; message?: string; code?: string } & Partial<Gap>;
      switch (frame.type) {
        case "message":
          this.deliver(frame.id ?? "", frame.data);
          return;
        case "joined":
          this.markReady(frame.cursor ?? null);
          return;
        case "gap":
          this.gap({ channel: this.channel, reason: frame.reason!, since: frame.since!, resume: frame.resume! });
          return;
        case "error":
          this.context.tally.error(`WebSocket error frame ${frame.code}: ${frame.message}`);
      }
    });
    ws.on("unexpected-response", (_req, res) => {
      ws.terminate();
      this.lost(`WebSocket upgrade answered ${res.statusCode}`);
    });
    ws.on("error", () => undefined);
    ws.on("close", () => {
      if (this.#ws === ws) this.#ws = null;
      this.lost("WebSocket closed");
    });
  }

  protected stop(): void {
    this.#ws?.terminate();
    this.#ws = null;
  }
}

/** Interval polling (`wait` 0) or long-polling (`wait` > 0): one request after another, resuming by cursor. */
class PollSubscriber extends Subscriber {
  readonly #waitSeconds: number;
  #answer: Answer | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(context: SubscriberContext, channel: string, waitSeconds: number) {
    super(context, channel);
    this.#waitSeconds = waitSeconds;
  }

  start(): void {
    void this.#loop();
  }

  async #loop(): Promise<void> {
    const { http, paths, tally, pollIntervalMs } = this.context;
    while (!this.closed) {
      const query = new URLSearchParams({ channel: this.channel, since: this.cursor ?? "now" });
      // The first request only places the cursor; a long-poll waits from then on.
      if (this.#waitSeconds > 0 && this.cursor) query.set("wait", String(this.#waitSeconds));
      const started = nowMs();
      tally.requests++;
      let answer: Answer;
      try {
        answer = await http.request("GET", `${paths.messages}?${query}`);
      } catch (error) {
        return this.lost(`poll failed: ${(error as Error).message}`);
      }
      this.#answer = answer;
      let body: string;
      try {
        body = await readAll(answer);
      } catch (error) {
        return this.lost(`poll answer cut: ${(error as Error).message}`);
      } finally {
        this.#answer = null;
      }
      if (this.closed) return;
      if (answer.status !== 200) {
        this.context.tally.error(`poll answered ${answer.status}`);
        await this.#sleep(Math.max(pollIntervalMs, 500));
        continue;
      }
      const gap = parseGap(answer.headers["ladder-gap"]);
      if (gap) this.gap(gap);
      const messages = JSON.parse(body) as Array<{ id: string; data: unknown }>;
      if (messages.length === 0) tally.emptyAnswers++;
      for (const message of messages) this.deliver(message.id, message.data);
      const cursor = answer.headers["ladder-cursor"];
      this.markReady(typeof cursor === "string" && cursor !== "" ? cursor : this.cursor);
      if (this.#waitSeconds === 0) await this.#sleep(pollIntervalMs - (nowMs() - started));
    }
  }

  #sleep(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        resolve();
      }, ms);
    });
  }

  protected stop(): void {
    this.#answer?.abort();
    if (this.#timer) clearTimeout(this.#timer);
  }
}

export function createSubscriber(pattern: Pattern, context: SubscriberContext, channel: string): Subscriber {
  switch (pattern) {
    case "sse":
      return new SseSubscriber(context, channel);
    case "websocket":
      return new WebSocketSubscriber(context, channel);
    case "long-poll":
      return new PollSubscriber(context, channel, context.longPollWaitSeconds);
    case "poll":
      return new PollSubscriber(context, channel, 0);
  }
}
