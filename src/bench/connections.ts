/**
 * How `ladder bench` reaches a hub: HTTP/1.1 keep-alive (node:http / node:https), HTTP/2 when the hub
 * offers it by ALPN (SSE streams and polls multiplexed as a browser would), and `ws` for WebSockets. Every
 * TCP socket is opened here, so the bytes it carries — TLS records and HTTP framing included — are counted
 * on the wire: what an operator pays for, not what the application sees.
 */
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { connect as connectH2, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { connect as connectTcp, isIP, type Socket } from "node:net";
import type { Readable } from "node:stream";
import { connect as connectTls, type TLSSocket } from "node:tls";
import { WebSocket } from "ws";

/** Bytes read and written by every socket one counter was given, open or closed. */
export class WireCounter {
  #closedIn = 0;
  #closedOut = 0;
  readonly #open = new Set<Socket>();
  /** TCP connections opened: a client that reconnects or polls without keep-alive pays one each. */
  connections = 0;

  track(socket: Socket): Socket {
    this.connections++;
    this.#open.add(socket);
    socket.once("close", () => {
      this.#open.delete(socket);
      this.#closedIn += socket.bytesRead;
      this.#closedOut += socket.bytesWritten;
    });
    return socket;
  }

  get bytesIn(): number {
    let total = this.#closedIn;
    for (const socket of this.#open) total += socket.bytesRead;
    return total;
  }

  get bytesOut(): number {
    let total = this.#closedOut;
    for (const socket of this.#open) total += socket.bytesWritten;
    return total;
  }
}

export interface Target {
  readonly base: URL;
  /** Sent on every request and upgrade: `authorization: Bearer …` with --token or --api-key. */
  readonly headers: Readonly<Record<string, string>>;
  /** Accept a certificate that does not verify (a self-signed development hub). */
  readonly insecure: boolean;
}

function openSocket(target: Target, counter: WireCounter, alpn: string[]): Socket {
  const { hostname, protocol } = target.base;
  const host = hostname.startsWith("[") ? hostname.slice(1, -1) : hostname;
  const port = Number(target.base.port) || (protocol === "https:" ? 443 : 80);
  const raw = counter.track(connectTcp({ host, port, noDelay: true }));
  if (protocol !== "https:") return raw;
  return connectTls({ socket: raw, servername: isIP(host) ? undefined : host, ALPNProtocols: alpn, rejectUnauthorized: !target.insecure });
}

/** One answer, its body readable as it arrives (an SSE stream never ends by itself). */
export interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Readable;
  /** Stops reading: the request is cancelled and its connection freed. */
  abort(): void;
}

export interface HttpClient {
  readonly protocol: "http/1.1" | "h2";
  request(method: "GET" | "POST", path: string, body?: string, headers?: Record<string, string>): Promise<Answer>;
  close(): void;
}

/** HTTP/1.1 with keep-alive over counted sockets: a pool as a browser keeps one (without its six-per-host cap). */
class Http1Client implements HttpClient {
  readonly protocol = "http/1.1";
  readonly #target: Target;
  readonly #agent: HttpAgent;
  readonly #requests = new Set<ClientRequest>();

  constructor(target: Target, counter: WireCounter) {
    this.#target = target;
    const create = (): Socket => openSocket(target, counter, ["http/1.1"]);
    const Base = target.base.protocol === "https:" ? HttpsAgent : HttpAgent;
    this.#agent = new (class extends Base {
      override createConnection(): Socket {
        return create();
      }
    })({ keepAlive: true, maxSockets: Infinity, scheduling: "lifo" });
  }

  request(method: "GET" | "POST", path: string, body?: string, headers: Record<string, string> = {}): Promise<Answer> {
    const send = this.#target.base.protocol === "https:" ? httpsRequest : httpRequest;
    return new Promise<Answer>((resolve, reject) => {
      const req = send(new URL(path, this.#target.base), { method, agent: this.#agent, headers: { ...this.#target.headers, ...headers } }, (res: IncomingMessage) => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res, abort: () => req.destroy() });
      });
      this.#requests.add(req);
      req.once("close", () => this.#requests.delete(req));
      req.once("error", reject);
      req.end(body);
    });
  }

  close(): void {
    for (const req of this.#requests) req.destroy();
    this.#agent.destroy();
  }
}

/** Streams per HTTP/2 connection before the next one opens: under the hubs' default limit of 128. */
const STREAMS_PER_SESSION = 100;

/** HTTP/2 as a browser speaks it: many streams on few connections. */
class Http2Client implements HttpClient {
  readonly protocol = "h2";
  readonly #target: Target;
  readonly #counter: WireCounter;
  readonly #sessions = new Map<ClientHttp2Session, number>();

  constructor(target: Target, counter: WireCounter) {
    this.#target = target;
    this.#counter = counter;
  }

  #session(): ClientHttp2Session {
    for (const [session, streams] of this.#sessions) if (streams < STREAMS_PER_SESSION && !session.closed && !session.destroyed) return session;
    const session = connectH2(this.#target.base, { createConnection: () => openSocket(this.#target, this.#counter, ["h2"]) as TLSSocket });
    session.on("error", () => session.destroy());
    session.once("close", () => this.#sessions.delete(session));
    this.#sessions.set(session, 0);
    return session;
  }

  request(method: "GET" | "POST", path: string, body?: string, headers: Record<string, string> = {}): Promise<Answer> {
    const session = this.#session();
    this.#sessions.set(session, (this.#sessions.get(session) ?? 0) + 1);
    const stream: ClientHttp2Stream = session.request({ ":method": method, ":path": path, ...this.#target.headers, ...headers });
    stream.once("close", () => {
      const open = this.#sessions.get(session);
      if (open !== undefined) this.#sessions.set(session, open - 1);
    });
    return new Promise<Answer>((resolve, reject) => {
      stream.once("response", (h) => {
        const status = Number(h[":status"]);
        resolve({ status, headers: h as IncomingHttpHeaders, body: stream, abort: () => stream.close() });
      });
      stream.once("error", reject);
      stream.end(body);
    });
  }

  close(): void {
    for (const session of this.#sessions.keys()) session.destroy();
    this.#sessions.clear();
  }
}

/** Whether the hub negotiates HTTP/2 by ALPN (https only; cleartext hubs are asked over HTTP/1.1). */
export async function offersH2(target: Target): Promise<boolean> {
  if (target.base.protocol !== "https:") return false;
  const socket = openSocket(target, new WireCounter(), ["h2", "http/1.1"]) as TLSSocket;
  try {
    return await new Promise<boolean>((resolve, reject) => {
      socket.once("secureConnect", () => resolve(socket.alpnProtocol === "h2"));
      socket.once("error", reject);
    });
  } finally {
    socket.destroy();
  }
}

export function httpClient(target: Target, counter: WireCounter, h2: boolean): HttpClient {
  return h2 ? new Http2Client(target, counter) : new Http1Client(target, counter);
}

/** A WebSocket to the hub's `/api/ws` over a counted socket (always HTTP/1.1: the upgrade needs it). */
export function openWebSocket(target: Target, counter: WireCounter, path: string): WebSocket {
  const url = new URL(path, target.base);
  url.protocol = target.base.protocol === "https:" ? "wss:" : "ws:";
  return new WebSocket(url, {
    headers: { ...target.headers },
    perMessageDeflate: false,
    createConnection: () => openSocket(target, counter, ["http/1.1"]),
  });
}

/** Reads a whole (small) answer body. */
export async function readAll(answer: Answer, limit = 8 * 1024 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of answer.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      answer.abort();
      throw new Error(`answer larger than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}
