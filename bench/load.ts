/**
 * The load generator's subscribers, for each pattern (the publisher is bench/publisher.ts), all in this
 * process and all on 127.0.0.1. Clients are kept cheap on purpose so the client core is not what is measured: raw
 * node:http for SSE and polling (no fetch/undici), `ws` for WebSockets, and the publish stamp read out of
 * the payload text instead of parsing every frame.
 */
import { request, type ClientRequest, type IncomingMessage } from "node:http";
import { connect as connectH2, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import { request as httpsRequest } from "node:https";
import { connect, type Socket } from "node:net";
import { WebSocket } from "ws";
import { extractStamp, nowMs, type DeliveryMetrics } from "./metrics.js";

/**
 * `sse-tls` is SSE over HTTP/1.1 with TLS, one connection per stream; `sse-h2` is SSE over HTTP/2 with
 * TLS, many streams multiplexed on few connections. With `sse` (cleartext HTTP/1.1) they separate what
 * TLS costs from what HTTP/2 framing saves or costs.
 */
export type Pattern = "sse" | "websocket" | "long-poll" | "poll" | "sse-tls" | "sse-h2";
export const PATTERNS: readonly Pattern[] = ["sse", "websocket", "long-poll", "poll", "sse-tls", "sse-h2"];

/** How the server under test listens for a pattern: cleartext HTTP/1.1, TLS with HTTP/1.1 only, or TLS with HTTP/2. */
export type ServerProtocol = "http1" | "tls" | "h2";

export function protocolFor(pattern: Pattern): ServerProtocol {
  return pattern === "sse-tls" ? "tls" : pattern === "sse-h2" ? "h2" : "http1";
}

export const CHANNEL = "bench";

/**
 * The channel of the i-th subscriber or message when the load is spread over `channels` channels (the
 * many-small-channels shape); one channel is the usual fan-out shape.
 */
export function channelOf(i: number, channels: number): string {
  return channels <= 1 ? CHANNEL : `${CHANNEL}-${i % channels}`;
}

/** `?channel=…`: how a server that reads no JSON body or `join` frame (Nchan) learns the channel. */
export function channelQuery(channel: string): string {
  return `?channel=${encodeURIComponent(channel)}`;
}
const CURSOR_HEADER = /\r\nladder-cursor:\s*([^\r]*)/i;

export interface Subscriber {
  /** Resolves once the subscriber is in place (joined, stream open, first poll answered or poll sent). */
  readonly ready: Promise<void>;
  close(): void;
}

export interface ClientOptions {
  readonly base: URL;
  readonly metrics: DeliveryMetrics;
  readonly pollIntervalMs: number;
  readonly longPollWaitSeconds: number;
  /** The HTTP/2 connections `sse-h2` streams are spread over. */
  readonly h2?: H2Pool;
  /** How long-polls carry their cursor (default: Ladder's `since` query and `id`s). */
  readonly longPoll?: LongPollDialect;
  /**
   * A WebSocket is subscribed once open (no `join`), and every text frame is a message (Nchan); its URL
   * then names the channel ({@link channelQuery}), since no frame does.
   */
  readonly webSocketSubscribedOnOpen?: boolean;
  /** Channels the subscribers are spread over, one after another (default 1: all on {@link CHANNEL}). */
  readonly channels?: number;
}

/** Subscribers opened so far with each options object: the next one takes the next channel. */
const opened = new WeakMap<ClientOptions, number>();

/** A server's long-poll cursor: how a request carries it and how an answer moves it. */
export interface LongPollDialect {
  /** Path and extra header lines (each ending in CRLF) of the next poll after `since` (null: the first). */
  request(channel: string, since: string | null, waitSeconds: number, limit: number): { path: string; headers: string };
  /** The cursor after an answer with this head and body, or undefined to keep the last one. */
  cursor(head: string, body: string): string | undefined;
}

/** Ladder's (and the baseline's): `since` in the query; the last `id` of the body, else the cursor header. */
export const LADDER_LONG_POLL: LongPollDialect = {
  request(channel, since, waitSeconds, limit) {
    return { path: `/api/messages?channel=${channel}&since=${encodeURIComponent(since ?? "0")}&limit=${limit}&wait=${waitSeconds}`, headers: "" };
  },
  cursor(head, body) {
    const idAt = body.lastIndexOf('"id":"');
    if (idAt >= 0) return body.slice(idAt + 6, body.indexOf('"', idAt + 6));
    return CURSOR_HEADER.exec(head)?.[1];
  },
};

/**
 * HTTP/2 connections for `sse-h2`: each takes `streamsPerSession` streams before the next one opens, so
 * 1000 subscribers at 100 streams per connection make 10 connections. The server's development
 * certificate is not checked (loopback only).
 */
export class H2Pool {
  readonly #base: URL;
  readonly #streamsPerSession: number;
  readonly #sessions: ClientHttp2Session[] = [];
  #streamsOnLast = 0;

  constructor(base: URL, streamsPerSession: number) {
    this.#base = base;
    this.#streamsPerSession = streamsPerSession;
  }

  get sessions(): number {
    return this.#sessions.length;
  }

  next(): ClientHttp2Session {
    let session = this.#sessions.at(-1);
    if (!session || this.#streamsOnLast >= this.#streamsPerSession) {
      session = connectH2(this.#base, { rejectUnauthorized: false });
      session.on("error", () => {});
      // A connection-level window as large as browsers use (Chromium: 15 MB), so flow control measures the
      // server, not a small default window shared by a hundred streams.
      session.once("connect", () => session!.setLocalWindowSize(16 * 1024 * 1024));
      this.#sessions.push(session);
      this.#streamsOnLast = 0;
    }
    this.#streamsOnLast++;
    return session;
  }

  close(): void {
    for (const session of this.#sessions) session.destroy();
    this.#sessions.length = 0;
  }
}

const READY_TIMEOUT_MS = 15_000;

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** A WebSocket that joins the channel and stamps every `message` frame. */
function webSocketSubscriber(options: ClientOptions, channel: string): Subscriber {
  const { metrics } = options;
  const onOpen = options.webSocketSubscribedOnOpen === true;
  const url = new URL(`/api/ws${onOpen ? channelQuery(channel) : ""}`, options.base);
  url.protocol = "ws:";
  const ws = new WebSocket(url, { perMessageDeflate: false });
  let closing = false;
  let joined = false;
  const ready = new Promise<void>((resolve, reject) => {
    ws.once("open", () => (onOpen ? resolve() : ws.send(JSON.stringify({ type: "join", room: channel }))));
    ws.on("message", (data: Buffer) => {
      const text = data.toString("utf8");
      if (onOpen || text.startsWith('{"type":"message"')) {
        metrics.record(extractStamp(text), nowMs());
      } else if (!joined && text.startsWith('{"type":"joined"')) {
        joined = true;
        resolve();
      }
    });
    ws.once("error", (error) => {
      if (!closing) metrics.errors++;
      reject(error);
    });
    ws.once("close", () => {
      if (!closing) metrics.errors++;
      reject(new Error("WebSocket closed before joining"));
    });
  });
  ready.catch(() => {});
  return {
    ready: withTimeout(ready, "WebSocket"),
    close() {
      closing = true;
      ws.terminate();
    },
  };
}

/** Splits SSE events out of text chunks and records each `data:` (the servers write `\n` line ends). */
function sseSplitter(metrics: DeliveryMetrics): (chunk: string) => void {
  let buffer = "";
  return (chunk) => {
    buffer = buffer === "" ? chunk : buffer + chunk;
    let start = 0;
    let end: number;
    while ((end = buffer.indexOf("\n\n", start)) >= 0) {
      const data = buffer.indexOf("data: ", start);
      if (data >= 0 && data < end) metrics.record(extractStamp(buffer, data), nowMs());
      start = end + 2;
    }
    buffer = start === buffer.length ? "" : buffer.slice(start);
  };
}

/** An SSE stream on an HTTP/2 connection of the pool. */
function h2SseSubscriber(options: ClientOptions, channel: string): Subscriber {
  const { metrics } = options;
  if (!options.h2) throw new Error("sse-h2 needs an H2Pool in the client options");
  let closing = false;
  let stream: ClientHttp2Stream | null = null;
  const ready = new Promise<void>((resolve, reject) => {
    stream = options.h2!.next().request({ ":path": `/api/stream?channel=${channel}`, accept: "text/event-stream" });
    stream.once("response", (headers) => {
      if (headers[":status"] !== 200) {
        reject(new Error(`SSE answered ${headers[":status"]}`));
        return;
      }
      resolve();
    });
    stream.setEncoding("utf8");
    stream.on("data", sseSplitter(metrics));
    stream.once("close", () => {
      if (!closing) metrics.errors++;
      reject(new Error("HTTP/2 stream closed before its response"));
    });
    stream.on("error", () => {});
  });
  ready.catch(() => {});
  return {
    ready: withTimeout(ready, "HTTP/2 SSE stream"),
    close() {
      closing = true;
      stream?.close();
    },
  };
}

/** An SSE stream over a raw node:http (or, with TLS, node:https) request, one connection per stream. */
function sseSubscriber(options: ClientOptions, channel: string): Subscriber {
  const { metrics } = options;
  let closing = false;
  let req: ClientRequest | null = null;
  const tls = options.base.protocol === "https:";
  const ready = new Promise<void>((resolve, reject) => {
    req = (tls ? httpsRequest : request)(
      new URL(`/api/stream?channel=${channel}`, options.base),
      { agent: false, headers: { accept: "text/event-stream" }, ...(tls ? { rejectUnauthorized: false } : {}) },
      (res: IncomingMessage) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`SSE answered ${res.statusCode}`));
          return;
        }
        res.setEncoding("utf8");
        res.on("data", sseSplitter(metrics));
        res.once("close", () => {
          if (!closing) metrics.errors++;
        });
        resolve();
      },
    );
    req.once("error", (error) => {
      if (!closing) metrics.errors++;
      reject(error);
    });
    req.end();
  });
  ready.catch(() => {});
  return {
    ready: withTimeout(ready, "SSE stream"),
    close() {
      closing = true;
      req?.destroy();
    },
  };
}

interface PollAnswer {
  /** Publish stamps of the messages in the answer, in order. */
  readonly stamps: number[];
  /** The cursor after this answer (see {@link LongPollDialect.cursor}), or undefined to keep the last. */
  readonly lastId: string | undefined;
}

const HEADER_END = Buffer.from("\r\n\r\n");

/**
 * One keep-alive HTTP/1.1 connection that sends GETs and reads answers framed by Content-Length (both
 * servers answer polls that way). A raw socket instead of node:http's client: with a thousand pollers
 * re-polling at every message, the client's per-request cost would otherwise be what is measured.
 */
class RawGetter {
  readonly #host: string;
  readonly #port: number;
  #socket: Socket | null = null;
  #buffer: Buffer | null = null;
  #pending: { resolve: (answer: PollAnswer) => void; reject: (error: Error) => void; timer: NodeJS.Timeout } | null = null;
  #closed = false;

  readonly #dialect: LongPollDialect;

  constructor(base: URL, dialect: LongPollDialect) {
    this.#host = base.hostname;
    this.#port = Number(base.port);
    this.#dialect = dialect;
  }

  get(path: string, headers = ""): Promise<PollAnswer> {
    if (this.#closed) return Promise.reject(new Error("closed"));
    if (this.#pending) return Promise.reject(new Error("a request is already in flight"));
    const socket = this.#socket ?? this.#connect();
    return new Promise((resolve, reject) => {
      // Bounded: a poll is answered within its wait (25 s) by a healthy server.
      const timer = setTimeout(() => this.#fail(new Error("poll timed out")), 60_000);
      this.#pending = { resolve, reject, timer };
      socket.write(`GET ${path} HTTP/1.1\r\nhost: ${this.#host}:${this.#port}\r\n${headers}\r\n`);
    });
  }

  close(): void {
    this.#closed = true;
    this.#fail(new Error("closed"));
  }

  #connect(): Socket {
    const socket = connect({ host: this.#host, port: this.#port, noDelay: true });
    this.#socket = socket;
    this.#buffer = null;
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (error) => this.#fail(error));
    socket.on("close", () => {
      if (this.#socket === socket) this.#socket = null;
      // A keep-alive connection closed while idle is simply reopened by the next request.
      if (this.#pending) this.#fail(new Error("connection closed"));
    });
    return socket;
  }

  #fail(error: Error): void {
    const pending = this.#pending;
    this.#pending = null;
    this.#socket?.destroy();
    this.#socket = null;
    this.#buffer = null;
    if (pending) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
  }

  #onData(chunk: Buffer): void {
    const buffer = this.#buffer ? Buffer.concat([this.#buffer, chunk]) : chunk;
    this.#buffer = buffer;
    const headerEnd = buffer.indexOf(HEADER_END);
    if (headerEnd < 0) return;
    const head = buffer.toString("latin1", 0, headerEnd);
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (!length) {
      this.#fail(new Error("poll answer without Content-Length"));
      return;
    }
    const bodyStart = headerEnd + 4;
    const bodyEnd = bodyStart + Number(length[1]);
    if (buffer.length < bodyEnd) return;
    this.#buffer = buffer.length > bodyEnd ? buffer.subarray(bodyEnd) : null;
    const pending = this.#pending;
    this.#pending = null;
    if (!pending) return;
    clearTimeout(pending.timer);
    const status = Number(head.slice(9, 12));
    // 304: a long-poll that ran out of time on a server that answers a timeout so (Nchan).
    if (status === 304) {
      pending.resolve({ stamps: [], lastId: undefined });
      return;
    }
    if (status !== 200) {
      pending.reject(new Error(`poll answered ${status}`));
      return;
    }
    if (/\r\nconnection:\s*close/i.test(head)) {
      this.#socket?.end();
      this.#socket = null;
    }
    // The body is a JSON array of {"id":"…","channel":…,"data":{"t":…,"seq":…},"time":…}: scan it
    // for the stamps and the last id instead of parsing every message.
    const body = buffer.toString("utf8", bodyStart, bodyEnd);
    const stamps: number[] = [];
    for (let at = body.indexOf('{"t":'); at >= 0; at = body.indexOf('{"t":', at + 5)) stamps.push(extractStamp(body, at));
    pending.resolve({ stamps, lastId: this.#dialect.cursor(head, body) });
  }
}

/**
 * Long-polling (`wait` > 0, the next request sent as soon as an answer comes) or interval polling
 * (`wait` = 0, one request per interval, at once again when a page came back full).
 */
function pollSubscriber(options: ClientOptions, long: boolean, channel: string): Subscriber {
  const { metrics } = options;
  const limit = 1000;
  const dialect = options.longPoll ?? LADDER_LONG_POLL;
  const getter = new RawGetter(options.base, dialect);
  let since: string | null = null;
  let closing = false;
  let timer: NodeJS.Timeout | null = null;
  let failures = 0;
  let markReady!: () => void;
  let failReady!: (error: unknown) => void;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  ready.catch(() => {});
  const wait = long ? options.longPollWaitSeconds : 0;
  const interval = options.pollIntervalMs;
  // The first poll goes at once (it opens the connection); later ones are spread evenly over the interval.
  let nextAt = performance.now() + (long ? 0 : Math.random() * interval - interval);

  const once = async (): Promise<void> => {
    if (closing) return;
    const { path, headers } = dialect.request(channel, since, wait, limit);
    let full = false;
    try {
      if (long) markReady(); // the request is on its way; the bench checks the server's count of held polls
      const answer = await getter.get(path, headers);
      const now = nowMs();
      for (const stamp of answer.stamps) metrics.record(stamp, now);
      since = answer.lastId ?? since;
      full = answer.stamps.length >= limit;
      failures = 0;
      if (!long) markReady();
    } catch (error) {
      if (closing) return;
      metrics.errors++;
      if (++failures > 20) {
        failReady(error);
        return;
      }
      timer = setTimeout(() => void once(), 100);
      return;
    }
    if (closing) return;
    if (long || full) {
      void once();
      return;
    }
    nextAt += interval;
    const now = performance.now();
    if (nextAt < now) nextAt = now;
    timer = setTimeout(() => void once(), nextAt - now);
  };
  void once();

  return {
    ready: withTimeout(ready, long ? "long-poll" : "poll"),
    close() {
      closing = true;
      if (timer) clearTimeout(timer);
      getter.close();
    },
  };
}

export function openSubscriber(pattern: Pattern, options: ClientOptions): Subscriber {
  const index = opened.get(options) ?? 0;
  opened.set(options, index + 1);
  const channel = channelOf(index, options.channels ?? 1);
  switch (pattern) {
    case "websocket":
      return webSocketSubscriber(options, channel);
    case "sse":
    case "sse-tls":
      return sseSubscriber(options, channel);
    case "sse-h2":
      return h2SseSubscriber(options, channel);
    case "long-poll":
      return pollSubscriber(options, true, channel);
    case "poll":
      return pollSubscriber(options, false, channel);
  }
}

/** Opens `count` subscribers, `batch` connection attempts at a time so the listen backlog is not flooded. */
export async function openSubscribers(pattern: Pattern, count: number, options: ClientOptions, batch = 100): Promise<Subscriber[]> {
  const subscribers: Subscriber[] = [];
  try {
    for (let i = 0; i < count; i += batch) {
      const group: Subscriber[] = [];
      for (let j = i; j < Math.min(count, i + batch); j++) group.push(openSubscriber(pattern, options));
      subscribers.push(...group);
      await Promise.all(group.map((s) => s.ready));
    }
  } catch (error) {
    for (const s of subscribers) s.close();
    throw error;
  }
  return subscribers;
}
