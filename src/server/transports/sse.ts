/**
 * Server-Sent Events: `GET /api/stream?channel=a&channel=b`. A `retry:` first, then one event per message
 * with `id:` and `data:`. A one-channel stream puts the published data itself in `data:` (what the
 * guide's `JSON.parse(event.data)` expects); a stream of several channels sends an envelope
 * `{channel,id,data,time}` and a composite id `a=<id>;b=<id>` so one Last-Event-ID resumes all of them.
 */
import {
  decodeCursor,
  encodeComment,
  encodeCursorMap,
  encodeEvent,
  BACKFILL_EVENT,
  GAP_EVENT,
  JOIN_EVENT,
  errorBody,
  LadderError,
  LEAVE_EVENT,
  PRESENCE_EVENT,
  READY_EVENT,
  START_CURSOR,
  type Gap,
  type MessageId,
  type PresenceEvent,
  type PresenceList,
} from "../../protocol/index.js";
import type { Socket } from "node:net";
import type { Identity } from "../presence/member.js";
import { presenceEnabled } from "../options.js";
import type { Corkable } from "../core/cork.js";
import type { Delivery } from "../core/delivery.js";
import { NO_EXPIRY, watchExpiry } from "../auth/expiry.js";
import type { Principal } from "../auth/rules.js";
import { abortResponse, isHttp2, outboundBytes, writeChunk, type HubRequest, type HubResponse } from "../edge/http.js";
import { parseChannels } from "../edge/params.js";
import type { TransportContext } from "../core/context.js";
import { onceEither, StreamConnection } from "../core/stream-connection.js";
import type { Connection } from "./transport.js";

const HEARTBEAT = Buffer.from(encodeComment());
/** Sent when the stream's token expires, just before the stream ends; EventSource reconnects, so the app should refresh the token first. */
const TOKEN_EXPIRED = Buffer.from(encodeEvent({ event: "error", data: JSON.stringify(errorBody(new LadderError("token_expired", "token expired")).error) }));

export interface SseRequest {
  readonly channels: readonly string[];
  /** Resume cursor per channel; channels without one start live. */
  readonly since: ReadonlyMap<string, MessageId>;
  /** Envelopes and composite ids even for one channel (`?envelope=1`): what Ladder's own client asks for. */
  readonly envelope: boolean;
  /** `presence=1`: the members of each presence channel, then its joins and leaves. */
  readonly presence: boolean;
  /** `client=`: the id the client keeps across reconnects, for presence lists. */
  readonly client: string | null;
  /** `info=`: what an anonymous client declares about itself (when the hub allows it). */
  readonly info: string | null;
}

/** Last-Event-ID (set by EventSource on reconnect) wins over `since`/`lastEventId` in the query. */
export function parseSseRequest(req: HubRequest, url: URL, context: TransportContext): SseRequest {
  const channels = parseChannels(url.searchParams.getAll("channel"), context.options.maxChannelsPerConnection);
  const header = req.headers["last-event-id"];
  const text = (typeof header === "string" && header !== "" ? header : null) ?? url.searchParams.get("since") ?? url.searchParams.get("lastEventId");
  const envelope = url.searchParams.get("envelope") === "1";
  const extra = { envelope, presence: url.searchParams.get("presence") === "1", client: url.searchParams.get("client"), info: url.searchParams.get("info") };
  if (text === null || text === "") return { channels, since: new Map(), ...extra };
  const since = decodeCursor(text, channels);
  if (!since) throw new LadderError("bad_since", "Last-Event-ID or since must be a message id or channel=id;… pairs");
  return { channels, since, ...extra };
}

export class SseConnection extends StreamConnection implements Connection {
  readonly kind = "sse";
  readonly #request: SseRequest;
  readonly #req: HubRequest;
  readonly #res: HubResponse;
  readonly #principal: Principal;
  readonly #multi: boolean;
  #stopExpiry: () => void = NO_EXPIRY;

  constructor(context: TransportContext, request: SseRequest, req: HubRequest, res: HubResponse, principal: Principal, identity: Identity | null) {
    super(context, identity);
    this.#request = request;
    this.#req = req;
    this.#res = res;
    this.#principal = principal;
    this.#multi = request.channels.length > 1 || request.envelope;
    for (const [channel, id] of request.since) this.sent.set(channel, id);
  }

  /** Opens the stream and subscribes every channel, then tells the browser the cursor so a reconnect resumes from here. */
  async start(): Promise<void> {
    const req = this.#req;
    const res = this.#res;
    const request = this.#request;
    res.once("close", () => this.destroy());
    req.socket.setNoDelay(true);
    const headers: Record<string, string> = {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      // Asks nginx-like proxies not to buffer the stream.
      "x-accel-buffering": "no",
    };
    if (req.httpVersionMajor === 1) headers.connection = "keep-alive";
    res.writeHead(200, headers);
    writeChunk(res, encodeEvent({ retry: this.context.options.sseRetryMs }));
    // An SSE stream cannot be re-authenticated in place: when its token expires it says why and ends.
    this.#stopExpiry = watchExpiry(this.#principal, () => {
      this.#write(TOKEN_EXPIRED);
      this.destroy();
    });
    await Promise.all(request.channels.map((channel) => this.subscribe(channel, request.since.get(channel) ?? null)));
    if (this.state !== "open") return;
    // A named event: EventSource's onmessage ignores it, but it sets lastEventId, so a reconnect before the
    // first message still resumes exactly; clients that listen for it learn each channel's cursor.
    const cursors: Record<string, MessageId> = {};
    for (const channel of request.channels) cursors[channel] = this.sent.get(channel) ?? START_CURSOR;
    this.#write(encodeEvent({ event: READY_EVENT, id: this.#cursorFor(request.channels[0]!), data: JSON.stringify(cursors) }));
    if (!request.presence) return;
    // Channels without presence are skipped here: the stream asked for presence wherever there is some.
    const watched = request.channels.filter((channel) => presenceEnabled(this.context.options, channel));
    await Promise.all(watched.map((channel) => this.watchPresence(channel)));
  }

  protected corkable(): Corkable | null {
    return isHttp2(this.#res) ? null : (this.#res.socket ?? null);
  }

  protected bufferedBytes(): number {
    return outboundBytes(this.#res);
  }

  protected onceDrained(callback: () => void): void {
    // Over HTTP/1.1 messages are written to the socket itself (see #rawSocket), so only the socket says
    // when they drained; it also drains for what res.write queued.
    const res = this.#res;
    onceEither(isHttp2(res) ? res : (res.socket ?? res), "drain", "close", callback);
  }

  protected writeMessage(channel: string, delivery: Delivery): void {
    if (!this.#multi) {
      const socket = this.#rawSocket();
      if (socket !== null) socket.write(delivery.sseChunk);
      else this.#write(delivery.sseEvent);
      return;
    }
    const { id, time } = delivery.message;
    const envelope = `{"channel":${JSON.stringify(channel)},"id":"${id}","data":${delivery.dataJson},"time":${time}}`;
    this.#write(encodeEvent({ id: this.#cursorFor(channel), data: envelope }));
  }

  protected writeGap(gap: Gap): void {
    this.#write(encodeEvent({ event: GAP_EVENT, id: this.#cursorFor(gap.channel), data: JSON.stringify(gap) }));
  }

  // Presence events carry no id: they are not in the channel's history and must not move the resume cursor.
  protected writePresenceList(list: PresenceList): void {
    this.#write(encodeEvent({ event: PRESENCE_EVENT, data: JSON.stringify(list) }));
  }

  protected writePresenceEvent(event: PresenceEvent): void {
    const data = this.#multi ? JSON.stringify({ channel: event.channel, member: event.member }) : JSON.stringify(event.member);
    this.#write(encodeEvent({ event: event.type === "join" ? JOIN_EVENT : LEAVE_EVENT, data }));
  }

  protected writeBackfill(channel: string, data: unknown): void {
    // No `id:`: EventSource keeps its lastEventId, so a reconnect resumes where history goes on.
    this.#write(encodeEvent({ event: BACKFILL_EVENT, data: JSON.stringify({ channel, data, backfilled: true }) }));
  }

  protected dropSlowConsumer(): void {
    // Abort rather than end: ending would wait behind the very backlog that made it slow.
    abortResponse(this.#res);
    this.destroy();
  }

  heartbeat(): void {
    // Written on every tick, busy or not, so a client can bound the silence it tolerates at two intervals.
    this.#write(HEARTBEAT);
  }

  drain(): void {
    this.#res.end();
  }

  destroy(): void {
    if (!this.finishClose()) return;
    this.#stopExpiry();
    this.releaseSubscriptions();
    if (!this.#res.writableEnded) this.#res.end();
  }

  #cursorFor(channel: string): string {
    return this.#multi ? encodeCursorMap(this.sent) : (this.sent.get(channel) ?? START_CURSOR);
  }

  /**
   * The socket, when `res.write(event)` would put exactly `delivery.sseChunk` on it: a chunked HTTP/1.1
   * response whose head is out and which owns its socket (not queued behind a pipelined request). One
   * write of bytes shared by every stream then replaces res.write's three (size line, event, CRLF).
   */
  #rawSocket(): Socket | null {
    const res = this.#res;
    if (this.state === "closed" || isHttp2(res) || !res.headersSent || res.writableEnded || !res.chunkedEncoding) return null;
    const socket = res.socket;
    return socket !== null && socket.writable ? socket : null;
  }

  #write(chunk: string | Buffer): void {
    if (this.state === "closed" || this.#res.writableEnded) return;
    writeChunk(this.#res, chunk);
  }
}
