/**
 * Interval polling and long-polling: `GET /api/messages?channel=&since=&limit=&wait=`.
 * Without `wait` the answer comes at once; with it, the request is held until a message after `since`
 * exists or the wait runs out (`200 []`). A held request whose client leaves is released at once.
 */
import { CURSOR_HEADER, GAP_HEADER, LadderError, type Gap, type Message, type MessageId } from "../../protocol/index.js";
import type { Delivery } from "../delivery.js";
import { sendJson, type HubRequest, type HubResponse } from "../http.js";
import { parseChannel, parseLimit, parseSince, parseWait } from "../params.js";
import type { StreamContext } from "../stream-connection.js";
import { Subscription, type SubscriptionSink } from "../subscription.js";
import type { Connection, ConnectionRegistry } from "./transport.js";

export interface PollRequest {
  readonly channel: string;
  /** Null for `since=now`. */
  readonly since: MessageId | null;
  readonly limit: number;
  readonly waitMs: number;
}

export function parsePollRequest(url: URL, context: StreamContext): PollRequest {
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

function answer(res: HubResponse, messages: readonly Message[], cursor: MessageId, gap: Gap | null): void {
  const headers: Record<string, string> = { [CURSOR_HEADER]: cursor };
  if (gap) headers[GAP_HEADER] = JSON.stringify(gap);
  sendJson(res, 200, messages, headers);
}

/** Answers a poll at once from history. */
export async function poll(context: StreamContext, request: PollRequest, res: HubResponse): Promise<void> {
  const result = await context.engine.read(request.channel, request.since, request.limit);
  answer(res, result.messages, result.cursor, result.gap);
}

/** A held long-poll: a subscription whose first delivery (or a gap, or the timeout) answers the request. */
export class LongPoll implements Connection, SubscriptionSink {
  readonly kind = "long-poll";
  readonly #res: HubResponse;
  readonly #request: PollRequest;
  readonly #registry: ConnectionRegistry;
  readonly #subscription: Subscription;
  readonly #collected: Message[] = [];
  #gap: Gap | null = null;
  #timer: NodeJS.Timeout | null = null;
  #flushScheduled = false;
  #done = false;

  constructor(context: StreamContext, request: PollRequest, req: HubRequest, res: HubResponse, registry: ConnectionRegistry) {
    this.#res = res;
    this.#request = request;
    this.#registry = registry;
    this.#subscription = new Subscription(context.engine, context.fanout, request.channel, request.since, this);
    registry.add(this);
    res.once("close", () => this.destroy());
    req.once("close", () => {
      if (!res.writableEnded) this.destroy();
    });
  }

  async start(): Promise<void> {
    await this.#subscription.start();
    if (this.#done) return;
    if (this.#collected.length > 0 || this.#gap) {
      this.#respond();
      return;
    }
    this.#timer = setTimeout(() => this.#respond(), this.#request.waitMs);
  }

  message(_channel: string, delivery: Delivery): void {
    if (this.#done || this.#collected.length >= this.#request.limit) return;
    this.#collected.push(delivery.message);
    if (this.#collected.length >= this.#request.limit) this.#respond();
    else this.#scheduleFlush();
  }

  gap(gap: Gap): void {
    this.#gap = gap;
    this.#scheduleFlush();
  }

  heartbeat(): void {}

  drain(): void {
    this.#respond();
  }

  destroy(): void {
    if (this.#done) return;
    this.#done = true;
    this.#release();
    if (!this.#res.writableEnded) this.#res.destroy();
  }

  /** Answers after the current burst: messages published in the same tick go out in one response. */
  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#respond());
  }

  #respond(): void {
    if (this.#done) return;
    this.#done = true;
    const cursor = this.#collected.at(-1)?.id ?? this.#subscription.cursor ?? this.#request.since ?? "0";
    this.#release();
    answer(this.#res, this.#collected, cursor, this.#gap);
  }

  #release(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#subscription.close();
    this.#registry.remove(this);
  }
}
