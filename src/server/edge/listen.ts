/**
 * The listening side of `serve()`: which protocol servers stand behind the port, and how they are closed.
 *
 * - Plain (the default): one node:http server, HTTP/1.1, exactly as before TLS existed.
 * - TLS: HTTP/2 offered by ALPN with HTTP/1.1 as the fallback on the same port (node:http2
 *   createSecureServer with allowHTTP1), or HTTP/1.1 only (node:https) when `http2` is off. WebSocket
 *   upgrades ride the HTTP/1.1 fallback: a browser opens its wss:// connection with ALPN http/1.1.
 * - h2c: prior-knowledge cleartext HTTP/2 (for a proxy that speaks it) beside HTTP/1.1 on the same port.
 *
 * With TLS or h2c the port is held by a small net.Server that looks at the first bytes of each connection
 * and hands the socket to the server for that protocol. That is how h2c and HTTP/1.1 (with its WebSocket
 * upgrades and health checks) share one cleartext port, and how a plain http:// request sent to the TLS
 * port gets a readable 400 instead of a failed handshake. The bytes looked at are put back (unshift), so
 * the protocol server reads the connection from its first byte.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerOptions } from "node:http";
import {
  createSecureServer,
  createServer as createH2cServer,
  type Http2SecureServer,
  type Http2Server,
  type ServerHttp2Session,
} from "node:http2";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { LadderError } from "../../protocol/index.js";
import type { HubRequest, HubResponse } from "./http.js";
import { Deadlines } from "./deadlines.js";
import { Lane, type LaneHandler } from "./http1/lane.js";
import { endWithError } from "./refusal.js";
import type { ResolvedTls } from "./tls.js";

export interface ListenOptions {
  readonly port: number;
  readonly host: string;
  readonly tls: ResolvedTls | null;
  /** With TLS: offer HTTP/2 by ALPN (HTTP/1.1 stays the fallback). */
  readonly http2: boolean;
  /** Without TLS: accept prior-knowledge cleartext HTTP/2 beside HTTP/1.1. */
  readonly h2c: boolean;
  /** SETTINGS_MAX_CONCURRENT_STREAMS announced on every HTTP/2 connection. */
  readonly maxConcurrentStreams: number;
  readonly limits: RequestLimits;
  /** Asked for every new TCP connection: a release function, or null to close it at once (sockets per IP). */
  readonly admitSocket: ((peer: string | undefined) => (() => void) | null) | null;
  readonly logger: Logger;
  /** Publishes and polls on cleartext HTTP/1.1 read by Ladder's own lane (http1/lane.ts); null: all through node:http. */
  readonly lane: LaneHandler | null;
}

/** What a client may cost before it has sent a request: slow-loris and oversized-header defences. */
export interface RequestLimits {
  /** Largest request head (HTTP/1.1: 431 past it) or header list (HTTP/2: SETTINGS_MAX_HEADER_LIST_SIZE). */
  readonly maxHeaderBytes: number;
  /**
   * Time to send a complete request head once a connection is open or a keep-alive request has begun
   * (HTTP/1.1: 408 and close); also the TLS handshake's, and an HTTP/2 connection's time to open its
   * first stream.
   */
  readonly headersTimeoutMs: number;
  /** Time to send a whole request, body included (408). Responses (SSE, held polls) are not bound by it. */
  readonly requestTimeoutMs: number;
  /**
   * How long a connection with nothing in flight stays open: an HTTP/1.1 keep-alive connection between
   * requests, an HTTP/2 connection with no open stream (closed with GOAWAY).
   */
  readonly keepAliveTimeoutMs: number;
}

export interface ProtocolHandlers {
  request(req: HubRequest, res: HubResponse): void;
  /** HTTP/1.1 upgrades (WebSocket); HTTP/2 has none. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

export interface Listener {
  /** The server holding the port (node:http's in plain mode; the first-bytes dispatcher otherwise). */
  readonly server: NetServer;
  readonly url: string;
  /** What the port speaks, in order of preference: e.g. ["h2", "http/1.1"]. */
  readonly protocols: readonly string[];
  /** Stops accepting connections and closes idle HTTP/1.1 ones; resolves once every connection is gone. */
  stopAccepting(): Promise<void>;
  /**
   * GOAWAY on every HTTP/2 connection: the client opens no new stream on it, the open ones go on until
   * they end (the hub's drain ends them), then the connection closes by itself.
   */
  goAway(): void;
  /**
   * Resolves once every HTTP/2 connection sent GOAWAY has closed by itself — its last frames flushed, so
   * the client sees its streams end rather than a cut connection — or after `timeoutMs`.
   */
  settle(timeoutMs: number): Promise<void>;
  /** Cuts whatever is still open. */
  destroyAll(): void;
}

/** The client connection preface of prior-knowledge HTTP/2 (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
/** A TLS record of type handshake: how every TLS connection starts. */
const TLS_HANDSHAKE = 0x16;

type Route = "tls" | "h2c" | "http1" | "plain-on-tls" | "garbage" | "more";

function classify(head: Buffer, tls: boolean): Route {
  if (tls) {
    if (head[0] === TLS_HANDSHAKE) return "tls";
    // An HTTP/1.x request line starts with an upper-case method; h2c's preface starts with "PRI".
    const first = head[0]!;
    return first >= 0x41 && first <= 0x5a ? "plain-on-tls" : "garbage";
  }
  const n = Math.min(head.length, H2_PREFACE.length);
  if (head.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return n === H2_PREFACE.length ? "h2c" : "more";
  return "http1";
}

function urlFor(server: NetServer, tls: boolean): string {
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return `${tls ? "https" : "http"}://${host}:${address.port}`;
}

function listenOn(server: NetServer, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

function closed(server: NetServer): Promise<void> {
  return new Promise<void>((resolve) => server.close(() => resolve()));
}

export async function listen(options: ListenOptions, handlers: ProtocolHandlers): Promise<Listener> {
  if (!options.tls && !options.h2c) return listenPlain(options, handlers);
  return listenDispatched(options, handlers);
}

/** How often the request timers are checked: node's for HTTP/1.1, the listener's sweep for the rest. */
function checkingInterval(limits: RequestLimits): number {
  // node's default is 30 s, so a 10 s headersTimeout could wait 40 s.
  return Math.min(1000, Math.max(50, Math.floor(limits.headersTimeoutMs / 4)));
}

/**
 * node:http's settings for the request limits. node:http tracks a connection from its accept, so
 * headersTimeout also cuts one that never sends a byte (node ≥ 18: the parser joins the checked list
 * when the connection is made, not when a request begins).
 */
function http1Settings(limits: RequestLimits): ServerOptions {
  return {
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: checkingInterval(limits),
    // Stated for every server because node:http2's HTTP/1.1 fallback has no default: idle keep-alive
    // connections there would stay open for ever.
    keepAliveTimeout: limits.keepAliveTimeoutMs,
  };
}

/** The lane in front of a cleartext HTTP/1.1 server, when one is asked for (and node:http is as the lane expects). */
function installLane(server: HttpServer, options: ListenOptions): Lane | null {
  if (!options.lane) return null;
  const lane = Lane.install(server, options.lane, options.limits, checkingInterval(options.limits));
  if (!lane) options.logger.warn("node:http is not laid out as the HTTP/1.1 lane expects: every request goes through node:http");
  return lane;
}

/** Counts each new connection against its address; one over the limit is closed before it costs more. */
function gateSockets(server: NetServer, admit: ListenOptions["admitSocket"], logger: Logger): void {
  if (!admit) return;
  server.on("connection", (socket: Socket) => {
    const release = admit(socket.remoteAddress);
    if (release) {
      socket.once("close", release);
      return;
    }
    logger.debug({ peer: socket.remoteAddress }, "connection refused: too many from this address");
    socket.destroy();
  });
}

async function listenPlain(options: ListenOptions, handlers: ProtocolHandlers): Promise<Listener> {
  const server = createHttpServer(http1Settings(options.limits));
  const lane = installLane(server, options);
  gateSockets(server, options.admitSocket, options.logger);
  server.on("clientError", answerClientError);
  server.on("request", handlers.request);
  server.on("upgrade", handlers.upgrade);
  try {
    await listenOn(server, options.port, options.host);
  } catch (error) {
    lane?.destroyAll();
    throw error;
  }
  return {
    server,
    url: urlFor(server, false),
    protocols: ["http/1.1"],
    stopAccepting() {
      const done = closed(server);
      lane?.close();
      return done;
    },
    goAway() {},
    settle: async () => {},
    destroyAll() {
      server.closeAllConnections();
      lane?.destroyAll();
    },
  };
}

async function listenDispatched(options: ListenOptions, handlers: ProtocolHandlers): Promise<Listener> {
  const { logger, limits } = options;
  const settings = { maxConcurrentStreams: options.maxConcurrentStreams, maxHeaderListSize: limits.maxHeaderBytes };
  const http1 = http1Settings(limits);
  const sockets = new Set<Socket>();
  const deadlines = new Deadlines(limits, checkingInterval(limits));
  const trackSessions = (server: Http2SecureServer | Http2Server): void => {
    server.on("session", (session: ServerHttp2Session) => deadlines.session(session));
    server.on("stream", (stream) => deadlines.stream(stream));
    // Protocol errors of one connection (a bad frame, a bad preface): node answers with GOAWAY and closes
    // that session; the listener only keeps the event from being unhandled.
    server.on("sessionError", (error: Error) => logger.debug({ err: error }, "HTTP/2 session error"));
  };

  let secure: Http2SecureServer | HttpsServer | null = null;
  let h2c: Http2Server | null = null;
  let plain: HttpServer | null = null;
  let lane: Lane | null = null;
  let protocols: string[];
  if (options.tls) {
    const { cert, key } = options.tls.credentials;
    if (options.http2) {
      const server = createSecureServer({ cert, key, allowHTTP1: true, settings, handshakeTimeout: limits.headersTimeoutMs });
      // Node 20 takes these for the HTTP/1.1 fallback as properties only, not as constructor options.
      Object.assign(server, http1);
      server.on("request", handlers.request);
      // With allowHTTP1, HTTP/1.1 connections go through node:http's connection handling, upgrades included.
      server.on("upgrade", handlers.upgrade);
      trackSessions(server);
      secure = server;
      protocols = ["h2", "http/1.1"];
    } else {
      const server = createHttpsServer({ cert, key, ...http1, handshakeTimeout: limits.headersTimeoutMs });
      server.on("request", handlers.request);
      server.on("upgrade", handlers.upgrade);
      secure = server;
      protocols = ["http/1.1"];
    }
    // A failed handshake (wrong protocol, no shared cipher, a client that rejects the certificate) ends
    // that connection only; node closes it. Logged for whoever debugs a client.
    secure.on("tlsClientError", (error: Error) => logger.debug({ err: error }, "TLS handshake failed"));
  } else {
    const server = createH2cServer({ settings });
    server.on("request", handlers.request);
    trackSessions(server);
    h2c = server;
    plain = createHttpServer(http1);
    lane = installLane(plain, options);
    plain.on("request", handlers.request);
    plain.on("upgrade", handlers.upgrade);
    protocols = ["h2c", "http/1.1"];
  }
  for (const server of [secure, plain]) server?.on("clientError", answerClientError);
  // node:http starts the timer that enforces headersTimeout and requestTimeout when a server starts
  // listening. These servers never listen (the front does, and hands them sockets), so without this
  // event a slow-loris client would hold an HTTP/1.1 connection on them for ever. server.close() stops it.
  for (const server of [secure, plain]) server?.emit("listening");

  const dispatch = (socket: Socket, route: Route): void => {
    switch (route) {
      case "tls":
        secure!.emit("connection", socket);
        return;
      case "h2c":
        h2c!.emit("connection", socket);
        return;
      case "http1":
        plain!.emit("connection", socket);
        // node:http reads the socket's handle directly from here on; the bytes put back wait in the
        // stream's buffer, which only flows once resumed (before any further read: resume acts on the
        // next tick, reads come from the event loop after it).
        socket.resume();
        return;
      case "plain-on-tls":
        refusePlainHttp(socket);
        return;
      case "garbage":
      case "more":
        socket.destroy();
    }
  };

  const front = createNetServer({ noDelay: true });
  gateSockets(front, options.admitSocket, logger);
  front.on("connection", (socket: Socket) => {
    if (socket.destroyed) return;
    sockets.add(socket);
    deadlines.unrouted(socket);
    socket.once("close", () => {
      sockets.delete(socket);
      deadlines.routed(socket);
    });
    let head: Buffer | null = null;
    const onError = (): void => {
      socket.destroy();
    };
    const onData = (chunk: Buffer): void => {
      head = head ? Buffer.concat([head, chunk]) : chunk;
      const route = classify(head, Boolean(options.tls));
      if (route === "more") return;
      socket.off("data", onData);
      socket.off("error", onError);
      deadlines.routed(socket);
      socket.pause();
      socket.unshift(head);
      dispatch(socket, route);
    };
    socket.on("error", onError);
    socket.on("data", onData);
  });
  try {
    await listenOn(front, options.port, options.host);
  } catch (error) {
    deadlines.stop();
    lane?.destroyAll();
    throw error;
  }

  return {
    server: front,
    url: urlFor(front, Boolean(options.tls)),
    protocols,
    async stopAccepting() {
      const done = closed(front);
      // The protocol servers never listened; closing them closes their idle HTTP/1.1 keep-alive connections.
      for (const server of [secure, h2c, plain]) server?.close();
      lane?.close();
      await done;
    },
    goAway() {
      for (const session of deadlines.sessions) session.close();
    },
    async settle(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (deadlines.sessionCount > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(20, Math.max(1, deadline - Date.now()))));
      }
    },
    destroyAll() {
      for (const session of deadlines.sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
      deadlines.stop();
      lane?.destroyAll();
    },
  };
}

/** Answers an http:// request sent to the TLS port with a 400 that says so, then closes. */
function refusePlainHttp(socket: Socket): void {
  endWithError(socket, new LadderError("bad_request", "this port speaks TLS: use https:// (or wss://)"));
}

/**
 * node:http's answer to a request it cannot take (head too large, too slow, malformed), as a JSON error
 * like every other refusal. node's own writes and destroys at once, which loses the answer on a TLS socket
 * read through a JS stream — ours are, after the first-bytes look.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  const written = (socket as Partial<Socket>).bytesWritten ?? 0;
  const http = error.code === "ERR_HTTP_REQUEST_TIMEOUT" || error.code?.startsWith("HPE_") === true;
  if (!http || !socket.writable || written > 0) {
    // Not an HTTP error (a reset, a TLS handshake that failed or timed out: no HTTP can be spoken on it),
    // or a response already started on it: there is nothing clean left to say.
    socket.destroy();
    return;
  }
  endWithError(socket, clientErrorFor(error));
}

function clientErrorFor(error: NodeJS.ErrnoException): LadderError {
  switch (error.code) {
    case "HPE_HEADER_OVERFLOW":
      return new LadderError("headers_too_large", "request head larger than this server's maxHeaderBytes");
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return new LadderError("request_timeout", "request not received in time");
    default:
      return new LadderError("bad_request", "malformed HTTP request");
  }
}
