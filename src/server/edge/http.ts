/** Small helpers for answering HTTP requests with JSON and reading bounded JSON bodies. */
import type { IncomingMessage, ServerResponse } from "node:http";
import { constants as h2constants, Http2ServerResponse, type Http2ServerRequest } from "node:http2";
import { LadderError } from "../../protocol/index.js";
import { LaneRequest, LaneResponse } from "./http1/exchange.js";

/**
 * A request the hub handles: node:http's, or the HTTP/2 compatibility API's (which mirrors it). One code
 * path serves both; the few places that differ (connection headers, buffered bytes) ask {@link isHttp2}.
 */
export type HubRequest = IncomingMessage | Http2ServerRequest;
export type HubResponse = ServerResponse | Http2ServerResponse;

/**
 * A request of the publish and poll routes: node's, or one read by Ladder's HTTP/1.1 lane
 * (http1/exchange.ts), which carries only those two. The helpers below take either.
 */
export type ExchangeRequest = HubRequest | LaneRequest;
export type ExchangeResponse = HubResponse | LaneResponse;

export function isHttp2(res: ExchangeResponse): res is Http2ServerResponse {
  return res instanceof Http2ServerResponse;
}

/**
 * Bytes written to this response but not yet taken by the peer. On HTTP/1.1 that is the response's own
 * buffer plus the socket's, since the socket carries only this response — and node's
 * `res.writableLength` is already that sum (adding the socket's again counted every byte twice, so a
 * stream was cut as a slow consumer at half its bound). On HTTP/2 the socket is shared by every stream
 * of the session, and HTTP/2 flow control holds a stream's data in that stream's queue when its peer
 * stops reading: the stream's bufferSize is the figure that belongs to this response alone.
 */
export function outboundBytes(res: HubResponse): number {
  if (isHttp2(res)) return res.stream.bufferSize;
  return res.writableLength;
}

/**
 * Cuts a response part-way (a slow consumer, an error after the headers went out) so the client sees
 * it broken off, not ended. HTTP/1.1 loses the connection; HTTP/2 resets this stream alone with CANCEL
 * (destroy() would reset it with NO_ERROR, which reads as a normal end to some clients).
 */
export function abortResponse(res: ExchangeResponse): void {
  if (isHttp2(res)) {
    if (!res.stream.destroyed) res.stream.close(h2constants.NGHTTP2_CANCEL);
    return;
  }
  res.destroy();
}

/** Writes a chunk of a streamed body. (Both write()s take the same arguments, but TypeScript cannot call a union of overloads.) */
export function writeChunk(res: HubResponse, chunk: string | Buffer): boolean {
  return isHttp2(res) ? res.write(chunk) : res.write(chunk);
}

/**
 * Headers that describe an HTTP/1.1 connection. HTTP/2 forbids them (RFC 9113 §8.2.2) and node:http2
 * throws on them, so they are left out of HTTP/2 answers — the `upgrade: websocket` hint included.
 */
const CONNECTION_HEADERS = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);

const JSON_CONTENT_TYPE = "application/json; charset=utf-8";

export function sendJson(res: ExchangeResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  sendJsonText(res, status, JSON.stringify(body), headers);
}

/** {@link sendJson} for a body already serialised (the poll answers, put together from cached encodings). */
export function sendJsonText(res: ExchangeResponse, status: number, text: string, headers?: Record<string, string>): void {
  if (res instanceof LaneResponse) {
    res.sendJson(status, text, headers);
    return;
  }
  if (headers === undefined && !isHttp2(res)) {
    // The common answer (every publish) as a flat list: node:http stores it without walking an object.
    res.writeHead(status, ["content-type", JSON_CONTENT_TYPE, "content-length", String(Buffer.byteLength(text)), "cache-control", "no-store"]);
    res.end(text);
    return;
  }
  const all: Record<string, string | number> = {
    "content-type": JSON_CONTENT_TYPE,
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    ...headers,
  };
  if (isHttp2(res)) for (const name of Object.keys(all)) if (CONNECTION_HEADERS.has(name.toLowerCase())) delete all[name];
  res.writeHead(status, all);
  res.end(text);
}

function isJsonContentType(value: string | undefined): boolean {
  if (!value) return false;
  if (value === "application/json") return true;
  const type = value.split(";")[0]!.trim().toLowerCase();
  return type === "application/json" || (type.startsWith("application/") && type.endsWith("+json"));
}

/**
 * The body a parser mounted before the hub (`express.json()`, body-parser, `express.text()`) has already
 * read from the stream, or a refusal when something read the stream and left nothing: waiting for the
 * stream then would hang the request for ever.
 */
function alreadyRead(req: HubRequest): Buffer | LadderError | null {
  if (!req.readableEnded) return null;
  const body = (req as { body?: unknown }).body;
  if (body === undefined) return new LadderError("internal", "the request body was read by another middleware before the hub: mount the hub before body parsers, or let them set req.body");
  if (typeof body === "string" || Buffer.isBuffer(body)) return Buffer.from(body);
  // Parsed by a body parser: its JSON again, so a hub behind express.json() reads what it would have read.
  return Buffer.from(JSON.stringify(body) ?? "");
}

/**
 * Reads a JSON body of at most `maxBytes`. Rejects with 415 for another content type, 413 when it is
 * larger (checked against Content-Length first, then while reading), 400 when it does not parse. Takes
 * `req.body` when a body parser ran first.
 */
export function readJsonBody(req: ExchangeRequest, maxBytes: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    readBody(req, maxBytes, (error, body) => {
      if (error) return reject(error);
      try {
        resolve(JSON.parse(body.toString("utf8")));
      } catch {
        reject(new LadderError("bad_json", "body is not valid JSON"));
      }
    });
  });
}

const EMPTY = Buffer.alloc(0);

/**
 * Reads a JSON-typed body of at most `maxBytes` and calls back once, with the bytes or the refusal (415,
 * 413 by Content-Length or while reading, 400 when the stream fails). A callback, not a promise: the
 * publish path answers tens of thousands of these a second, and each promise turn shows in its profile.
 */
export function readBody(req: ExchangeRequest, maxBytes: number, done: (error: LadderError | null, body: Buffer) => void): void {
  if (!isJsonContentType(req.headers["content-type"])) {
    done(new LadderError("unsupported_media_type", "Content-Type must be application/json"), EMPTY);
    return;
  }
  // The lane's requests arrive whole, their Content-Length within the lane's bound (http1/head.ts).
  if (req instanceof LaneRequest) return whole(req.body, maxBytes, done);
  // A body parser (express.json()) that ran first left the body in req.body.
  const read = alreadyRead(req);
  if (read) {
    if (read instanceof LadderError) done(read, EMPTY);
    else whole(read, maxBytes, done);
    return;
  }
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) {
    done(new LadderError("payload_too_large", `body is larger than ${maxBytes} bytes`), EMPTY);
    return;
  }
  // The usual small body comes in one chunk: kept as it is, without a list or a copy.
  let first: Buffer | null = null;
  let chunks: Buffer[] | null = null;
  let size = 0;
  let finished = false;
  const finish = (error: LadderError | null, body: Buffer): void => {
    if (finished) return;
    finished = true;
    req.off("data", onData);
    req.off("end", onEnd);
    req.off("error", onError);
    req.off("close", onError);
    done(error, body);
  };
  const onData = (chunk: Buffer): void => {
    size += chunk.length;
    if (size > maxBytes) {
      finish(new LadderError("payload_too_large", `body is larger than ${maxBytes} bytes`), EMPTY);
      return;
    }
    if (first === null) first = chunk;
    else (chunks ??= [first]).push(chunk);
  };
  const onEnd = (): void => finish(null, chunks ? Buffer.concat(chunks, size) : (first ?? EMPTY));
  const onError = (): void => finish(new LadderError("bad_request", "request body could not be read"), EMPTY);
  req.on("data", onData);
  req.on("end", onEnd);
  req.on("error", onError);
  // A request cut before its body ended (an HTTP/2 stream reset without an error event): settle, not hang.
  req.once("close", onError);
}

function whole(body: Buffer, maxBytes: number, done: (error: LadderError | null, body: Buffer) => void): void {
  if (body.length > maxBytes) done(new LadderError("payload_too_large", `body is larger than ${maxBytes} bytes`), EMPTY);
  else done(null, body);
}

/**
 * Closes the connection after the answer when a request body was left unread, so nothing lingers. On
 * HTTP/2 only the stream goes (there is no `connection` header there, and the session carries other
 * requests): destroying the request after the response resets that stream alone (RFC 9113 §8.1).
 */
export function closeAfterResponse(req: ExchangeRequest, res: ExchangeResponse): void {
  // A lane request is always complete: the lane reads the whole body before the handler runs.
  if (!req.complete) {
    if (!isHttp2(res)) res.setHeader("connection", "close");
    res.once("finish", () => req.destroy());
  }
}
