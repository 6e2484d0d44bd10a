/**
 * Interval polling and long-polling: `GET /api/messages?channel=&since=&limit=&wait=`.
 * Without `wait` the answer comes at once; with it, the request is held until a message after `since`
 * exists or the wait runs out (`200 []`). A held request whose client leaves is released at once.
 */
import type { Target } from "../edge/target.js";
import { CURSOR_HEADER, GAP_HEADER, LadderError, START_CURSOR, type Gap, type Message, type MessageId } from "../../protocol/index.js";
import type { Delivery } from "../core/delivery.js";
import type { Fanout } from "../core/fanout.js";
import { sendJsonText, type ExchangeRequest, type ExchangeResponse } from "../edge/http.js";
import { parseChannel, parseLimit, parseSince, parseWait } from "../edge/params.js";
import type { TransportContext } from "../core/context.js";
import { Subscription, type SubscriptionSink } from "../core/subscription.js";
import { Lifecycle } from "../core/lifecycle.js";
import type { Connection } from "./transport.js";

export interface PollRequest {
  readonly channel: string;
  /** Null for `since=now`. */
  readonly since: MessageId | null;
  readonly limit: number;
  readonly waitMs: number;
}

export function parsePollRequest(url: Target, context: TransportContext): PollRequest {
  const channels = url.searchParams.getAll("channel");
  if (channels.length > 1) throw new LadderError("bad_channel", "a poll reads one channel; use the stream for several");
  const { options } = context;
  return {
    channel: parseChannel(url.searchParams.get("channel")),
    since: parseSince(url.searchParams.get("since")),
    limit: parseLimit(url.searchParams.get("limit"), options.pollDefaultLimit, options.pollMaxLimit),
    waitMs: Math.round(parseWait(url.searchParams.get("wait"), options.maxWaitSeconds) * 1000),
  };
}

/**
 * What the backfill hook adds to a poll answer, as elements before the messages: the backfilled messages
 * (`{"channel","data","backfilled":true}`), or the gap's snapshot (`{"channel","snapshot"}`; the snapshot
 * would not fit a header, so the `ladder-gap` header carries the gap without it).
 */
interface Filled {
  gap: Gap | null;
  readonly before: string[];
}

function fill(channel: string, gap: Gap | null, backfilled: readonly unknown[] | null): Filled {
  const before: string[] = [];
  if (backfilled) for (const data of backfilled) before.push(JSON.stringify({ channel, data, backfilled: true }));
  if (gap?.snapshot !== undefined) {
    const { snapshot, ...plain } = gap;
    before.push(JSON.stringify({ channel, snapshot }));
    return { gap: plain, before };
  }
  return { gap, before };
}

/**
 * The body is what `JSON.stringify(messages)` gives, put together from each message's cached encoding:
 * every subscriber answered with the same message reuses one serialisation.
 */
function answer(res: ExchangeResponse, body: string, cursor: MessageId, filled: Filled): void {
  const headers: Record<string, string> = { [CURSOR_HEADER]: cursor };
  if (filled.gap) headers[GAP_HEADER] = JSON.stringify(filled.gap);
  if (filled.before.length > 0) body = "[" + filled.before.join(",") + (body === "[]" ? "]" : "," + body.slice(1));
  sendJsonText(res, 200, body, headers);
}

/** A poll answer's body, messages in order: the first, then the rest (null when there are none). */
function bodyOf(first: Delivery | null, rest: readonly Delivery[] | null): string {
  if (first === null) return "[]";
  if (rest === null || rest.length === 0) return first.pollBody;
  const parts = [first.json];
  for (const delivery of rest) parts.push(delivery.json);
  return "[" + parts.join(",") + "]";
}

function historyBody(fanout: Fanout, messages: readonly Message[]): string {
  if (messages.length === 0) return "[]";
  return bodyOf(fanout.deliveryFor(messages[0]!), messages.slice(1).map((m) => fanout.deliveryFor(m)));
}

/** Answers a poll at once from history. */
export async function poll(context: TransportContext, request: PollRequest, res: ExchangeResponse): Promise<void> {
  const result = await context.engine.read(request.channel, request.since, request.limit);
  const filled = result.gap && context.backfill ? await context.backfill(result.gap) : null;
  const gap = result.gap && filled?.kind === "snapshot" ? { ...result.gap, snapshot: filled.snapshot } : result.gap;
  answer(res, historyBody(context.fanout, result.messages), result.cursor, fill(request.channel, filled?.kind === "messages" ? null : gap, filled?.kind === "messages" ? filled.messages : null));
}

/** A held long-poll: a subscription whose first delivery (or a gap, or the timeout) answers the request. */
export class LongPoll extends Lifecycle implements Connection, SubscriptionSink {
  readonly kind = "long-poll";
  readonly #req: ExchangeRequest;
  readonly #res: ExchangeResponse;
  readonly #request: PollRequest;
  readonly #subscription: Subscription;
  /** Most answers carry one message: it waits here, and an array is made only for a second. */
  #first: Delivery | null = null;
  #more: Delivery[] | null = null;
  #gap: Gap | null = null;
  #backfilled: readonly unknown[] | null = null;
  #timer: NodeJS.Timeout | null = null;
  #flushScheduled = false;

  constructor(context: TransportContext, request: PollRequest, req: ExchangeRequest, res: ExchangeResponse) {
    super();
    this.#req = req;
    this.#res = res;
    this.#request = request;
    this.#subscription = new Subscription(context.engine, context.fanout, request.channel, request.since, this, context.backfill);
  }

  /** Returns a promise only when catching up had to wait (a broker engine, a feed not yet flowing). */
  start(): Promise<void> | undefined {
    const res = this.#res;
    // `on`, not `once`: each emitter closes once, and once() would wrap every listener per request.
    res.on("close", () => this.destroy());
    this.#req.on("close", () => {
      if (!res.writableEnded) this.destroy();
    });
    const starting = this.#subscription.start();
    if (this.#subscription.settled) {
      this.#started();
      return undefined;
    }
    return starting.then(() => this.#started());
  }

  #started(): void {
    if (this.state !== "open") return;
    if (this.#first || this.#gap || this.#backfilled) {
      this.#respond();
      return;
    }
    this.#timer = setTimeout(() => this.#respond(), this.#request.waitMs);
  }

  message(_channel: string, delivery: Delivery): void {
    if (this.state !== "open") return;
    if (this.#first === null) this.#first = delivery;
    else (this.#more ??= []).push(delivery);
    if (1 + (this.#more?.length ?? 0) >= this.#request.limit) this.#respond();
    else this.#scheduleFlush();
  }

  gap(gap: Gap): void {
    this.#gap = gap;
    this.#scheduleFlush();
  }

  backfill(_channel: string, data: readonly unknown[]): void {
    this.#backfilled = data;
    this.#scheduleFlush();
  }

  heartbeat(): void {}

  drain(): void {
    this.#respond();
  }

  destroy(): void {
    if (!this.finishClose()) return;
    this.#release();
    if (!this.#res.writableEnded) this.#res.destroy();
  }

  /**
   * Answers after the current burst: messages published in the same tick go out in one response. One
   * message wakes every held poll of its channel, so they share one setImmediate instead of one each.
   */
  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    if (LongPoll.#flushing.push(this) === 1) setImmediate(LongPoll.#flush);
  }

  static #flushing: LongPoll[] = [];

  static #flush(): void {
    const due = LongPoll.#flushing;
    LongPoll.#flushing = [];
    for (const poll of due) poll.#respond();
  }

  #respond(): void {
    if (!this.finishClose()) return;
    // Answered, the client will poll again in a moment: let the channel's feed linger for it.
    this.#release(true);
    const last = this.#more?.at(-1) ?? this.#first;
    const cursor = last ? last.id : (this.#subscription.cursor ?? this.#request.since ?? START_CURSOR);
    answer(this.#res, bodyOf(this.#first, this.#more), cursor, fill(this.#request.channel, this.#gap, this.#backfilled));
  }

  #release(answered = false): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#subscription.close(answered);
  }
}
