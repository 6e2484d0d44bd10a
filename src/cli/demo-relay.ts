/**
 * The demo's network path: a small reverse proxy under `/demo/net/<lane>/…` in front of the hub's own
 * loopback listener, which misbehaves as its lane's conditions say — the way real proxies and networks do:
 * it refuses WebSocket upgrades, holds event streams (a buffering proxy that ignores `X-Accel-Buffering`),
 * or drops every connection. It relays real bytes over a real socket, so what the page's client sees is
 * what it would see behind such a proxy. Only `ladder serve` with the demo on mounts it (demo-network.ts).
 */
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import { connect } from "node:net";
import type { Duplex } from "node:stream";
import { LadderError } from "../protocol/index.js";
import { abortResponse, isHttp2, writeChunk, type HubRequest, type HubResponse } from "../server/edge/http.js";
import { endWithError, sendError } from "../server/edge/refusal.js";

export interface NetConditions {
  /** Upgrades are answered 403 (and turning it on cuts the lane's open sockets). */
  refuseWebSocket: boolean;
  /** Event streams are held until 16 KiB gather or they end (turning it on cuts open streams, off releases held ones). */
  bufferSse: boolean;
  /** Every connection is cut, and new ones are cut as they come, until it is turned off. */
  dropAll: boolean;
}

/** What a relay carries: a request (a poll, a publish, /readyz), an event stream, or a WebSocket. */
export type RelayKind = "request" | "stream" | "websocket";

export interface Relay {
  readonly kind: RelayKind;
  /** Cuts both sides at once, as a network failure would. */
  cut(): void;
  /** Lets held bytes go and stops holding (buffering turned off). */
  release(): void;
}

export interface LaneCounts {
  /** Requests and upgrades passed on to the hub. */
  relayed: number;
  /** Upgrades refused. */
  refused: number;
  /** Connections cut as they came (dropAll). */
  dropped: number;
  /** Open connections cut when a condition was turned on. */
  cut: number;
  /** Bytes of event streams held back. */
  heldBytes: number;
}

/** What a relay needs of its lane. */
export interface RelayLane {
  readonly conditions: Readonly<NetConditions>;
  readonly counts: LaneCounts;
  opened(relay: Relay): void;
  closed(relay: Relay): void;
}

/** Where the hub listens for the relay: its loopback port. */
export interface RelayTarget {
  readonly port: number;
}

/** What a buffering proxy gathers before it passes a response on (nginx's proxy buffers are 4–8 KiB each). */
export const HOLD_BYTES = 16 * 1024;

// Headers of one connection (RFC 9110 §7.6.1) and HTTP/2 pseudo-headers are not passed on.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "http2-settings", "host"]);

function forwardedFor(req: HubRequest): string | undefined {
  const peer = req.socket?.remoteAddress;
  const earlier = req.headers["x-forwarded-for"];
  if (!peer) return typeof earlier === "string" ? earlier : undefined;
  return typeof earlier === "string" && earlier !== "" ? `${earlier}, ${peer}` : peer;
}

function requestHeaders(req: HubRequest): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || name.startsWith(":") || HOP_BY_HOP.has(name)) continue;
    out[name] = value;
  }
  // The browser's Host (HTTP/2: :authority) goes on, so the hub's same-origin checks see the page's origin.
  const authority = req.headers[":authority"];
  out.host = typeof authority === "string" ? authority : (req.headers.host ?? "localhost");
  const xff = forwardedFor(req);
  if (xff) out["x-forwarded-for"] = xff;
  return out;
}

function responseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  return out;
}

const unreachable = (): LadderError => new LadderError("unavailable", "the demo's network path could not reach the hub");

/** Cuts a request that has just arrived, with no answer: HTTP/1.1 loses its connection, HTTP/2 the stream. */
function drop(req: HubRequest, res: HubResponse): void {
  if (isHttp2(res)) abortResponse(res);
  else req.socket?.destroy();
}

/** Relays one HTTP request (HTTP/1.1 or HTTP/2 in front, HTTP/1.1 to the hub) to `path`. */
export function relayRequest(lane: RelayLane, target: RelayTarget, req: HubRequest, res: HubResponse, path: string): void {
  if (lane.conditions.dropAll) {
    lane.counts.dropped++;
    drop(req, res);
    return;
  }
  lane.counts.relayed++;
  const upstream = httpRequest({ host: "127.0.0.1", port: target.port, method: req.method ?? "GET", path, headers: requestHeaders(req), agent: false });
  let source: IncomingMessage | null = null;
  // Held chunks while the lane buffers this event stream; null while bytes flow.
  let held: Buffer[] | null = null;
  let heldBytes = 0;
  const write = (chunk: Buffer): void => {
    if (writeChunk(res, chunk) || !source) return;
    // The browser reads slower than the hub writes: the hub waits, not this process's memory.
    const from = source;
    from.pause();
    res.once("drain", () => from.resume());
  };
  const flush = (): void => {
    if (!held) return;
    for (const chunk of held) write(chunk);
    held = [];
    heldBytes = 0;
  };
  const relay: { kind: RelayKind } & Relay = {
    kind: "request",
    cut() {
      upstream.destroy();
      if (isHttp2(res)) abortResponse(res);
      else req.socket?.destroy();
    },
    release() {
      flush();
      held = null;
    },
  };
  lane.opened(relay);
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    upstream.destroy();
    lane.closed(relay);
  };
  res.once("close", finish);
  upstream.on("error", () => {
    if (!res.headersSent) sendError(res, unreachable());
    else abortResponse(res);
    finish();
  });
  upstream.once("response", (up) => {
    source = up;
    if (/^text\/event-stream/i.test(up.headers["content-type"] ?? "")) {
      relay.kind = "stream";
      if (lane.conditions.bufferSse) held = [];
    }
    res.writeHead(up.statusCode ?? 502, responseHeaders(up.headers));
    // The head goes out at once (a buffering proxy holds the body, not the head): fetch() resolves, events do not come.
    if (!isHttp2(res)) res.flushHeaders();
    up.on("data", (chunk: Buffer) => {
      if (!held) return write(chunk);
      held.push(chunk);
      heldBytes += chunk.length;
      lane.counts.heldBytes += chunk.length;
      if (heldBytes >= HOLD_BYTES) flush();
    });
    up.once("end", () => {
      relay.release();
      res.end();
    });
    // A hub connection lost mid-answer reaches the browser as a cut, not as a short but ended body.
    up.on("error", () => abortResponse(res));
    up.once("close", () => {
      if (!up.complete) abortResponse(res);
    });
  });
  req.pipe(upstream);
}

/** Relays a WebSocket upgrade to `path` on the hub, then the bytes both ways. */
export function relayUpgrade(lane: RelayLane, target: RelayTarget, req: IncomingMessage, socket: Duplex, head: Buffer, path: string): void {
  socket.on("error", () => socket.destroy());
  if (lane.conditions.dropAll) {
    lane.counts.dropped++;
    socket.destroy();
    return;
  }
  if (lane.conditions.refuseWebSocket) {
    lane.counts.refused++;
    endWithError(socket, new LadderError("forbidden", "WebSocket upgrades are refused by the demo's network conditions"));
    return;
  }
  lane.counts.relayed++;
  const upstream = connect(target.port, "127.0.0.1");
  const relay: Relay = {
    kind: "websocket",
    cut() {
      socket.destroy();
      upstream.destroy();
    },
    release() {},
  };
  lane.opened(relay);
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    relay.cut();
    lane.closed(relay);
  };
  upstream.on("error", close);
  upstream.once("close", close);
  socket.once("close", close);
  upstream.once("connect", () => {
    // The browser's own head, as it came, to the hub's path: key, version, origin and host unchanged.
    let text = `${req.method ?? "GET"} ${path} HTTP/1.1\r\n`;
    const raw = req.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.toLowerCase() !== "x-forwarded-for") text += `${raw[i]}: ${raw[i + 1]}\r\n`;
    const xff = forwardedFor(req);
    if (xff) text += `X-Forwarded-For: ${xff}\r\n`;
    upstream.write(`${text}\r\n`);
    if (head.length > 0) upstream.write(head);
    socket.pipe(upstream);
    upstream.pipe(socket);
  });
}
