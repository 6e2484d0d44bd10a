/**
 * The floor: deliberately NOT a correct or safe HTTP server. It exists only to show the lowest CPU a Node
 * process pays per HTTP request and per streamed delivery, so the figures of Ladder, the baseline and
 * Nchan in the long-poll, sse, websocket and single-publish cases have a floor to be read against. Never
 * serve anything with it.
 *
 * It is a raw `node:net` server with no HTTP library that hand-parses HTTP/1.1 requests and knows four:
 *
 * - `POST /api/messages` with a JSON body `{"channel":…,"data":…}`: answered `201`
 *   `{"id":"<n>","channel":"<ch>"}`; the last 1,000 messages are kept;
 * - `GET /api/messages?since=<id>&limit=<n>&wait=<s>`: the messages after `since` as the baseline answers
 *   them (a JSON array of `{"id","channel","data","time"}`), or, with `wait` and none yet, held until one
 *   is published (then answered with it) or until `wait` runs out (then `[]`);
 * - `GET /api/stream?channel=<ch>` (SSE) and `GET /api/ws` (a WebSocket upgrade): the connection is handed
 *   to bench/floor-stream.ts, which fans every publish out to the channel's streams and takes WebSocket
 *   `join` and `publish` frames (see there, and for what it leaves out).
 *
 * Anything else gets `404` or `400` and the connection is closed. What it leaves out on purpose: no
 * `Transfer-Encoding` (bodies are `Content-Length` only), no HTTP/1.0, no header or URL validation, no
 * percent-decoding, no limits beyond a cap on the bytes buffered per connection, no timeouts, no
 * backpressure, one history whatever the channel (as the baseline's polls; streams are per channel). It does keep keep-alive and
 * answers pipelined requests in order: a held poll holds the requests behind it.
 */
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import type { Pattern } from "./load.js";
import type { PublishScenario } from "./publish.js";
import { FloorStreams, type Accepted, type OnData } from "./floor-stream.js";

/**
 * What the floor serves: the long-poll, sse and websocket fan-out patterns (cleartext HTTP/1.1, publishes
 * over HTTP or WebSocket frames, one channel or many) and the single HTTP publish.
 */
export const FLOOR_PATTERNS: ReadonlySet<Pattern> = new Set<Pattern>(["sse", "websocket", "long-poll"]);
export const FLOOR_PUBLISH_SCENARIOS: ReadonlySet<PublishScenario> = new Set<PublishScenario>(["http"]);

const HISTORY = 1000;
const MAX_LIMIT = 1000;
/** Head, body and pipelined requests waiting on one connection; beyond it the connection is refused. */
const MAX_BUFFERED = 128 * 1024;
const HEAD_END = Buffer.from("\r\n\r\n");
const PATH = "/api/messages";
const STREAM_PATH = "/api/stream";
const WS_PATH = "/api/ws";


export interface FloorServer {
  readonly url: string;
  /** Polls held open, SSE streams and joined WebSocket rooms. */
  held(): number;
  sockets(): number;
  close(): Promise<void>;
}

interface Connection {
  readonly socket: Socket;
  /** Bytes received and not yet parsed (null: none). */
  buffer: Buffer | null;
  /** A held poll blocks the requests pipelined behind it until it is answered. */
  held: boolean;
  since: number;
  deadline: number;
  /** The request asked for `connection: close`: close after its answer. */
  closeAfter: boolean;
  dead: boolean;
  /** Set once the connection is an SSE stream or a WebSocket (bench/floor-stream.ts): it takes every later byte. */
  stream: OnData | null;
}

function response(status: string, body: string, close = false): string {
  return `HTTP/1.1 ${status}\r\n${close ? "connection: close\r\n" : ""}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

const NOT_FOUND = Buffer.from(response("404 Not Found", '{"error":{"code":"not_found"}}', true));
const BAD_REQUEST = Buffer.from(response("400 Bad Request", '{"error":{"code":"bad_request"}}', true));
const EMPTY = Buffer.from(response("200 OK", "[]"));

/** `name=value` of a query string, as it is (not percent-decoded), or null when absent. */
function queryValue(query: string, name: string): string | null {
  const key = `${name}=`;
  let at = query.startsWith(key) ? 0 : query.indexOf(`&${key}`);
  if (at < 0) return null;
  if (at > 0 || query[0] === "&") at++;
  const end = query.indexOf("&", at);
  return query.slice(at + key.length, end < 0 ? undefined : end);
}

/** `name=value` of a query string, as a number (NaN when absent or not a number). */
function queryNumber(query: string, name: string): number {
  const value = queryValue(query, name);
  return value === null || value === "" ? Number.NaN : Number(value);
}

export async function startFloor(port = 0, host = "127.0.0.1"): Promise<FloorServer> {
  // The newest HISTORY messages, each serialised once as it is published: message id n sits at (n - 1) % HISTORY.
  const history: string[] = new Array<string>(HISTORY);
  let lastId = 0;
  const polls = new Set<Connection>();
  const open = new Set<Connection>();
  let sweeper: NodeJS.Timeout | null = null;

  const after = (since: number, limit: number): string[] => {
    const first = Math.max(1, lastId - HISTORY + 1, Math.floor(since) + 1);
    const last = Math.min(lastId, first + limit - 1);
    const out: string[] = [];
    for (let id = first; id <= last; id++) out.push(history[(id - 1) % HISTORY]!);
    return out;
  };

  const fail = (c: Connection, answer: Buffer): void => {
    c.dead = true;
    polls.delete(c);
    c.buffer = null;
    c.socket.end(answer);
  };

  /** Answers the request in hand; a held poll answered later resumes parsing with {@link release}. */
  const answered = (c: Connection, answer: string | Buffer): void => {
    c.socket.write(answer);
    if (c.closeAfter) {
      c.dead = true;
      c.socket.end();
    }
  };

  const release = (c: Connection, answer: string | Buffer): void => {
    c.held = false;
    answered(c, answer);
    if (!c.dead && c.buffer) parse(c);
  };

  // Held polls run out of time on a one-second sweep rather than a timer each: one timer per request
  // would be a cost no request-per-delivery server has to pay.
  const sweep = (): void => {
    const now = Date.now();
    for (const c of polls) {
      if (c.deadline > now) continue;
      polls.delete(c);
      release(c, EMPTY);
    }
    if (polls.size === 0 && sweeper) {
      clearInterval(sweeper);
      sweeper = null;
    }
  };

  /** Stores a message, answers the held polls and fans it out to the channel's streams: an HTTP or a WebSocket publish. */
  const accept = (channel: string, data: unknown): Accepted => {
    const channelJson = JSON.stringify(channel);
    const dataJson = JSON.stringify(data ?? null);
    const id = ++lastId;
    const time = Date.now();
    const message = `{"id":"${id}","channel":${channelJson},"data":${dataJson},"time":${time}}`;
    history[(id - 1) % HISTORY] = message;
    if (polls.size > 0) {
      // Serialised once, written to every held poll that had seen everything before this message.
      const answer = Buffer.from(response("200 OK", `[${message}]`));
      for (const poll of polls) {
        if (poll.since >= id) continue;
        polls.delete(poll);
        release(poll, answer);
      }
    }
    streams.fanOut(channel, id, channelJson, dataJson, time);
    return { id, channelJson };
  };
  const streams = new FloorStreams(accept, () => lastId);

  const publish = (c: Connection, body: string): void => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return fail(c, BAD_REQUEST);
    }
    if (typeof parsed !== "object" || parsed === null) return fail(c, BAD_REQUEST);
    const { channel, data } = parsed as { channel?: unknown; data?: unknown };
    const { id, channelJson } = accept(typeof channel === "string" ? channel : "general", data);
    answered(c, response("201 Created", `{"id":"${id}","channel":${channelJson}}`));
  };

  const poll = (c: Connection, query: string): void => {
    const sinceRaw = queryNumber(query, "since");
    const since = Number.isFinite(sinceRaw) ? sinceRaw : 0;
    const limitRaw = queryNumber(query, "limit");
    const limit = Math.min(MAX_LIMIT, limitRaw >= 1 ? Math.floor(limitRaw) : 100);
    const waitRaw = queryNumber(query, "wait");
    const waitMs = Math.min(30, waitRaw > 0 ? waitRaw : 0) * 1000;
    const messages = after(since, limit);
    if (messages.length > 0 || waitMs === 0) {
      answered(c, messages.length > 0 ? response("200 OK", `[${messages.join(",")}]`) : EMPTY);
      return;
    }
    c.held = true;
    c.since = since;
    c.deadline = Date.now() + waitMs;
    polls.add(c);
    sweeper ??= setInterval(sweep, 1000);
  };

  /** Parses and answers every complete request in the buffer, in order, stopping at a held poll. */
  const parse = (c: Connection): void => {
    const buffer = c.buffer!;
    let at = 0;
    let corked = false;
    try {
      while (!c.dead && !c.held && at < buffer.length) {
        if (at > 0 && !corked) {
          // Pipelined requests: their answers leave together.
          c.socket.cork();
          corked = true;
        }
        const headEnd = buffer.indexOf(HEAD_END, at);
        if (headEnd < 0) break;
        const head = buffer.toString("latin1", at, headEnd);
        const lineEnd = head.indexOf("\r\n");
        const requestLine = lineEnd < 0 ? head : head.slice(0, lineEnd);
        const firstSpace = requestLine.indexOf(" ");
        const secondSpace = requestLine.indexOf(" ", firstSpace + 1);
        if (firstSpace < 0 || secondSpace < 0 || requestLine.slice(secondSpace + 1) !== "HTTP/1.1") return fail(c, BAD_REQUEST);
        let length = 0;
        c.closeAfter = false;
        // Only the headers the two requests need are read (they start with c or t); the rest are skipped unchecked.
        for (let line = lineEnd; line >= 0; ) {
          const next = head.indexOf("\r\n", line + 2);
          const end = next < 0 ? head.length : next;
          const first = head.charCodeAt(line + 2) | 0x20;
          if (first === 0x63 /* c */ || first === 0x74 /* t */) {
            const colon = head.indexOf(":", line + 2);
            if (colon > 0 && colon < end) {
              const name = head.slice(line + 2, colon).toLowerCase();
              if (name === "content-length") {
                const value = head.slice(colon + 1, end).trim();
                length = /^\d+$/.test(value) ? Number(value) : Number.NaN;
                if (!(length <= MAX_BUFFERED)) return fail(c, BAD_REQUEST);
              } else if (name === "transfer-encoding") {
                return fail(c, BAD_REQUEST);
              } else if (name === "connection" && head.slice(colon + 1, end).trim().toLowerCase() === "close") {
                c.closeAfter = true;
              }
            }
          }
          line = next;
        }
        const bodyStart = headEnd + 4;
        if (buffer.length < bodyStart + length) break;
        at = bodyStart + length;
        const method = requestLine.slice(0, firstSpace);
        const target = requestLine.slice(firstSpace + 1, secondSpace);
        const mark = target.indexOf("?");
        const path = mark < 0 ? target : target.slice(0, mark);
        const query = mark < 0 ? "" : target.slice(mark + 1);
        if (method === "GET" && length === 0 && (path === STREAM_PATH || path === WS_PATH)) {
          // The connection becomes a stream: what follows the request is the stream's (WebSocket frames).
          const rest = at < buffer.length ? buffer.subarray(at) : null;
          c.buffer = null;
          const stream = path === STREAM_PATH ? streams.sse(c.socket, queryValue(query, "channel") || "general") : streams.webSocket(c.socket, head, rest);
          if (!stream) return fail(c, BAD_REQUEST);
          c.stream = stream;
          return;
        }
        if (path !== PATH) return fail(c, NOT_FOUND);
        if (method === "POST") publish(c, buffer.toString("utf8", bodyStart, bodyStart + length));
        else if (method === "GET" && length === 0) poll(c, query);
        else return fail(c, method === "GET" ? BAD_REQUEST : NOT_FOUND);
      }
      if (c.dead) return;
      c.buffer = at >= buffer.length ? null : at === 0 ? buffer : buffer.subarray(at);
      if (c.buffer && c.buffer.length > MAX_BUFFERED) fail(c, BAD_REQUEST);
    } finally {
      if (corked) c.socket.uncork();
    }
  };

  const server: Server = createServer({ noDelay: true }, (socket) => {
    const c: Connection = { socket, buffer: null, held: false, since: 0, deadline: 0, closeAfter: false, dead: false, stream: null };
    open.add(c);
    socket.on("data", (chunk: Buffer) => {
      if (c.stream) return c.stream(chunk);
      if (c.dead) return;
      c.buffer = c.buffer ? Buffer.concat([c.buffer, chunk]) : chunk;
      if (c.held) {
        if (c.buffer.length > MAX_BUFFERED) fail(c, BAD_REQUEST);
        return;
      }
      parse(c);
    });
    // Whatever went wrong, the connection is simply gone; nothing is logged.
    socket.on("error", () => socket.destroy());
    socket.once("close", () => {
      c.dead = true;
      polls.delete(c);
      open.delete(c);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${address.address}:${address.port}`,
    held: () => polls.size + streams.held(),
    sockets: () => open.size,
    close: async () => {
      if (sweeper) clearInterval(sweeper);
      for (const c of open) c.socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
