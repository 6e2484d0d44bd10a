/**
 * Server-Sent Events: `GET /api/stream?channel=a&channel=b`. A `retry:` first, then one event per message
 * with `id:` and `data:`. A one-channel stream puts the published data itself in `data:` (what the
 * guide's `JSON.parse(event.data)` expects); a stream of several channels sends an envelope
 * `{channel,id,data,time}` and a composite id `a=<id>;b=<id>` so one Last-Event-ID resumes all of them.
 */
import type { Target } from "../edge/target.js";
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
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Identity } from "../presence/member.js";
import { presenceEnabled } from "../options.js";
import type { Delivery } from "../core/delivery.js";
import { NO_EXPIRY, watchExpiry } from "../auth/expiry.js";
import type { Principal } from "../auth/rules.js";
import { abortResponse, isHttp2, outboundBytes, writeChunk, type HubRequest, type HubResponse } from "../edge/http.js";
import { parseChannels } from "../edge/params.js";
import { takeSocket } from "../edge/take-socket.js";
import type { TransportContext } from "../core/context.js";
import { onceEither, StreamConnection } from "../core/stream-connection.js";
import type { Connection } from "./transport.js";

const HEARTBEAT = Buffer.from(encodeComment());
/** Sent when the stream's token expires, just before the stream ends; EventSource reconnects, so the app should refresh the token first. */
const TOKEN_EXPIRED = Buffer.from(encodeEvent({ event: "error", data: JSON.stringify(errorBody(new LadderError("token_expired", "token expired")).error) }));
/** The last chunk of a chunked body: what res.end() writes. */
const LAST_CHUNK = Buffer.from("0\r\n\r\n", "latin1");
/** How long an ended stream's socket of its own waits for the client to close before it is cut. */
const LINGER_MS = 5000;

const CRLF = Buffer.from("\r\n", "latin1");

/** `chunk` as one HTTP/1.1 chunk (size line, data, CRLF): the bytes res.write() puts on a chunked response. */
function asChunk(chunk: string | Buffer): Buffer {
  const body = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
  return Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`, "latin1"), body, CRLF]);
}
const HEARTBEAT_CHUNK = asChunk(HEARTBEAT);

/** Bytes a client sends on a stream's socket of its own can only be a pipelined request, never answered (as behind any endless response): read and dropped, so its close is still seen. */
function discard(): void {}

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
export function parseSseRequest(req: HubRequest, url: Target, context: TransportContext): SseRequest {
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
  #request: SseRequest | null;
  #req: HubRequest | null;
  /** Null once the stream owns its socket (see #own): node:http's request and response are let go then. */
  #res: HubResponse | null;
  /** The HTTP/1.1 socket this stream took over from node:http, written with chunks of its own. */
  #socket: Socket | null = null;
  /** Something other than a heartbeat went out since the last heartbeat tick. */
  #wrote = false;
  readonly #principal: Principal;
  readonly #multi: boolean;
  readonly #takeSocket: boolean;
  #stopExpiry: () => void = NO_EXPIRY;

  /** `takeSocket`: the hub serves its own HTTP server, so nothing else holds on to this request's response. */
  constructor(context: TransportContext, request: SseRequest, req: HubRequest, res: HubResponse, principal: Principal, identity: Identity | null, takeSocket = false) {
    super(context, identity);
    this.#request = request;
    this.#req = req;
    this.#res = res;
    this.#principal = principal;
    this.#multi = request.channels.length > 1 || request.envelope;
    this.#takeSocket = takeSocket;
    for (const [channel, id] of request.since) this.sent.set(channel, id);
  }

  /** Opens the stream and subscribes every channel, then tells the browser the cursor so a reconnect resumes from here. */
  async start(): Promise<void> {
    const req = this.#req!;
    const res = this.#res!;
    const request = this.#request!;
    this.#request = null;
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
    // Only now: node:http has read the whole request by the time a subscription took its turn. (A
    // response that is not HTTP/2's answers a node:http request.)
    if (this.#takeSocket && !isHttp2(res)) this.#own(req as IncomingMessage, res);
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

  /**
   * Takes the socket from node:http (take-socket.ts) and lets go of the request and response: an idle
   * stream then keeps its socket, this object and its subscriptions, not node:http's per-connection
   * objects. Reads are dropped, the client's end or an error closes the stream, as node:http did.
   */
  #own(req: IncomingMessage, res: ServerResponse): void {
    const socket = takeSocket(req, res);
    if (socket === null) return;
    this.#socket = socket;
    this.#req = null;
    this.#res = null;
    socket.on("data", discard);
    socket.on("end", () => this.destroy());
    socket.on("error", () => this.#cut());
    socket.once("close", () => this.destroy());
  }

  protected socketBytes(): number {
    return this.#socket !== null ? this.#socket.writableLength : outboundBytes(this.#res!);
  }

  protected onceDrained(callback: () => void): void {
    if (this.#socket !== null) {
      onceEither(this.#socket, "drain", "close", callback);
      return;
    }
    // Over HTTP/1.1 messages are written to the socket itself (see #rawSocket), so only the socket says
    // when they drained; it also drains for what res.write queued.
    const res = this.#res!;
    onceEither(isHttp2(res) ? res : (res.socket ?? res), "drain", "close", callback);
  }

  protected messageBytes(channel: string, delivery: Delivery): Buffer | null {
    if (this.#socket === null && this.#rawSocket() === null) return null;
    return this.#multi ? asChunk(this.#envelope(channel, delivery)) : delivery.sseChunk;
  }

  protected writeQueued(bytes: Buffer): void {
    // Queued only while #rawSocket() was there; a response ended since (#end flushes first) takes nothing more.
    const socket = this.#socket ?? (this.#res!.writableEnded ? null : this.#res!.socket);
    if (socket && socket.writable && !socket.writableEnded) {
      this.#wrote = true;
      socket.write(bytes);
    }
  }

  /** Where the socket is not the stream's to write (HTTP/2, HTTP/1.0): through the response. */
  protected writeMessage(channel: string, delivery: Delivery): void {
    this.#write(this.#multi ? this.#envelope(channel, delivery) : delivery.sseEvent);
  }

  /** A message of a stream of several channels (or `envelope=1`): the envelope and the composite id. */
  #envelope(channel: string, delivery: Delivery): string {
    const { id, time } = delivery.message;
    const envelope = `{"channel":${JSON.stringify(channel)},"id":"${id}","data":${delivery.dataJson},"time":${time}}`;
    return encodeEvent({ id: this.#cursorFor(channel), data: envelope });
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
    this.#cut();
  }

  heartbeat(): void {
    // A stream that carried anything since the last tick needs no comment: any byte proves it alive to
    // the client and resets a proxy's idle timer, and a client still never sees more than two intervals
    // of silence. Skipping them spares a busy hub one write per stream per tick (10,000 streams: 10,000
    // writes every heartbeatMs).
    if (this.#wrote) {
      this.#wrote = false;
      return;
    }
    if (this.#socket !== null) this.#writeOwn(HEARTBEAT_CHUNK);
    else this.#write(HEARTBEAT);
    this.#wrote = false;
  }

  drain(): void {
    this.#end();
  }

  destroy(): void {
    if (!this.finishClose()) return;
    this.#stopExpiry();
    this.releaseSubscriptions();
    this.#end();
  }

  /** Ends the body. A socket of its own closes with it: node:http cannot take it back for another request. */
  #end(): void {
    this.flushQueue();
    const socket = this.#socket;
    if (socket === null) {
      if (!this.#res!.writableEnded) this.#res!.end();
      return;
    }
    if (socket.writableEnded || socket.destroyed) return;
    socket.end(LAST_CHUNK, () => socket.destroy());
    // A client that stops reading would otherwise hold the socket: node:http bounds that with its keep-alive timeout.
    socket.setTimeout(LINGER_MS, () => socket.destroy());
  }

  /** Breaks the stream off (the client sees it cut, not ended) and releases it. */
  #cut(): void {
    if (this.#socket !== null) this.#socket.destroy();
    else abortResponse(this.#res!);
    this.destroy();
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
    const res = this.#res!;
    if (this.state === "closed" || isHttp2(res) || !res.headersSent || res.writableEnded || !res.chunkedEncoding) return null;
    const socket = res.socket;
    return socket !== null && socket.writable ? socket : null;
  }

  #write(chunk: string | Buffer): void {
    this.flushQueue();
    if (this.#socket !== null) {
      this.#writeOwn(asChunk(chunk));
      return;
    }
    if (this.state === "closed" || this.#res!.writableEnded) return;
    this.#wrote = true;
    writeChunk(this.#res!, chunk);
  }

  #writeOwn(chunk: Buffer): void {
    this.flushQueue();
    const socket = this.#socket!;
    if (this.state !== "closed" && socket.writable && !socket.writableEnded) {
      this.#wrote = true;
      socket.write(chunk);
    }
  }
}
