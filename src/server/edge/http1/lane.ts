/**
 * Ladder's own HTTP/1.1 lane for the two requests that carry its load: a publish (`POST` on the
 * messages path) and a poll or long-poll (`GET` on it). Every connection of a plain HTTP/1.1 server
 * starts here; the first request the lane does not take (any other path or method, an upgrade, a head
 * it could read differently from node — see head.ts) hands the connection, with the bytes read so far
 * put back, to node:http for good. A browser's page, stream and WebSocket connections are handed over
 * on their first request; a publisher's keep-alive connection stays on the lane.
 *
 * Why: node:http costs about 40% of a small publish here (docs/performance.md, "The floor"): a native
 * parser call per read, and a Readable and a Writable per request with their listeners. The lane reads
 * the head with one search and a few regular expressions, hands the handler the whole body, and writes
 * the answer in one write.
 *
 * What a client may hold is bounded as on node:http (edge/listen.ts): `headersTimeoutMs` from the
 * connection's start or a request's first byte to its complete head, `requestTimeoutMs` to its
 * complete body (408 past either), `keepAliveTimeoutMs` idle between requests. One sweep timer per
 * lane checks them, as node's connectionsCheckingInterval does. Requests are answered in order
 * (pipelining): the next is read only once the one before it is answered.
 */
import type { Server as HttpServer } from "node:http";
import type { Socket } from "node:net";
import { LadderError } from "../../../protocol/index.js";
import { endWithError, RAW_ANSWER_GRACE_MS } from "../refusal.js";
import { LaneRequest, LaneResponse, Signals, type ExchangeOwner } from "./exchange.js";
import { freshProgress, HAND_OFF, INCOMPLETE, readHead, type LaneRoute, type RequestHead } from "./head.js";
import { Inbox } from "./inbox.js";

export interface LaneLimits {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

export interface LaneHandler {
  readonly route: LaneRoute;
  handle(req: LaneRequest, res: LaneResponse): void;
}

/** Where a connection is: what it waits for decides which limit applies. */
const enum State {
  /** Waiting for a request head (from accept, or from a keep-alive request's first byte). */
  Head,
  /** Head read, waiting for the rest of the body. */
  Body,
  /** A request is with the handler (a long-poll may stay here for its wait). */
  Busy,
  /** Between requests, nothing buffered. */
  Idle,
  /** Answered with `connection: close`: waiting for the peer to close after reading. */
  Closing,
  /** Waiting for the peer to read the answers it was sent before the next request is read. */
  Blocked,
}

type NodeConnectionListener = (this: HttpServer, socket: Socket) => void;

/** node:http's own connection listener, when the server is laid out as expected (one listener, its name). */
function nodeConnectionListener(server: HttpServer): NodeConnectionListener | null {
  const listeners = server.listeners("connection");
  if (listeners.length !== 1 || listeners[0]!.name !== "connectionListener") return null;
  return listeners[0] as NodeConnectionListener;
}

export class Lane {
  readonly #server: HttpServer;
  readonly #toNode: NodeConnectionListener;
  readonly #handler: LaneHandler;
  readonly #limits: LaneLimits;
  readonly #keepAlive: string;
  readonly #connections = new Set<LaneConnection>();
  readonly #timer: NodeJS.Timeout;
  #closing = false;

  /**
   * Puts a lane in front of `server`'s HTTP/1.1 connections. Returns null, and leaves the server as it
   * is, when node:http is not laid out as the lane expects: every request then goes through node:http.
   */
  static install(server: HttpServer, handler: LaneHandler, limits: LaneLimits, sweepMs: number): Lane | null {
    const toNode = nodeConnectionListener(server);
    if (toNode === null) return null;
    return new Lane(server, toNode, handler, limits, sweepMs);
  }

  private constructor(server: HttpServer, toNode: NodeConnectionListener, handler: LaneHandler, limits: LaneLimits, sweepMs: number) {
    this.#server = server;
    this.#toNode = toNode;
    this.#handler = handler;
    this.#limits = limits;
    this.#keepAlive = `connection: keep-alive\r\nkeep-alive: timeout=${Math.floor(limits.keepAliveTimeoutMs / 1000)}\r\n`;
    server.removeListener("connection", toNode);
    server.prependListener("connection", this.#take);
    this.#timer = setInterval(() => this.#sweep(Date.now()), sweepMs);
    this.#timer.unref();
  }

  readonly #take = (socket: Socket): void => {
    if (this.#closing || socket.destroyed) {
      this.handOff(socket, null);
      return;
    }
    const connection = new LaneConnection(this, socket, this.#handler, this.#keepAlive);
    this.#connections.add(connection);
  };

  /** Gives node:http the socket, with `pending` (the bytes read and not consumed) to read first. */
  handOff(socket: Socket, pending: Buffer | null): void {
    socket.pause();
    if (pending !== null && pending.length > 0) socket.unshift(pending);
    this.#toNode.call(this.#server, socket);
    // node:http reads the socket's handle directly from here on; the bytes put back wait in the stream's
    // buffer and flow once resumed, before any further read (as on the first-bytes front, listen.ts).
    socket.resume();
  }

  forget(connection: LaneConnection): void {
    this.#connections.delete(connection);
  }

  get closing(): boolean {
    return this.#closing;
  }

  /** Stops taking requests: idle connections close now, busy ones after their answer (`connection: close`). */
  close(): void {
    this.#closing = true;
    for (const connection of this.#connections) connection.closeIfIdle();
  }

  destroyAll(): void {
    clearInterval(this.#timer);
    for (const connection of this.#connections) connection.destroy();
    this.#connections.clear();
  }

  #sweep(now: number): void {
    const { headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs } = this.#limits;
    for (const connection of this.#connections) {
      const waited = now - connection.since;
      switch (connection.state) {
        case State.Head:
          // Head is entered only as a request begins (since = requestSince), and headersTimeoutMs ≤ requestTimeoutMs.
          if (waited >= headersTimeoutMs) connection.timeOut();
          break;
        case State.Body:
          if (now - connection.requestSince >= requestTimeoutMs) connection.timeOut();
          break;
        case State.Idle:
          if (waited >= keepAliveTimeoutMs + KEEP_ALIVE_BUFFER_MS) connection.destroy();
          break;
        case State.Closing:
          if (waited >= RAW_ANSWER_GRACE_MS) connection.destroy();
          break;
        case State.Blocked:
          // A peer that does not read cannot be told anything: it is cut.
          if (waited >= requestTimeoutMs) connection.destroy();
          break;
        case State.Busy:
          // The handler's: a long-poll ends with its wait, a publish with its engine's answer.
          break;
      }
    }
  }
}

/**
 * An idle connection is closed this long after the `keep-alive: timeout=` it announces, as node:http's
 * are: a client told the shorter figure closes first, so it never sends a request into a closing socket.
 */
const KEEP_ALIVE_BUFFER_MS = 1000;

/** How many bytes of later (pipelined) requests a connection buffers while one is with the handler. */
const MAX_PIPELINED_BYTES = 64 * 1024;

class LaneConnection implements ExchangeOwner {
  state = State.Head;
  /** When the current state began. */
  since: number;
  /** When the current request's first byte came (the request timeout counts from here). */
  requestSince: number;
  readonly #lane: Lane;
  readonly #socket: Socket;
  readonly #handler: LaneHandler;
  readonly #keepAlive: string;
  /** Bytes read and not yet consumed: the rest of a head, a body, later requests. */
  readonly #inbox = new Inbox();
  /** How far the head being gathered has been looked at. */
  readonly #progress = freshProgress();
  /** The head whose body is still arriving. */
  #head: RequestHead | null = null;
  /** The exchange with the handler, for telling it that its client left. */
  #signals: Signals | null = null;
  /** Inside #drive: an answer given synchronously must not start a nested drive. */
  #driving = false;

  constructor(lane: Lane, socket: Socket, handler: LaneHandler, keepAlive: string) {
    this.#lane = lane;
    this.#socket = socket;
    this.#handler = handler;
    this.#keepAlive = keepAlive;
    this.since = this.requestSince = Date.now();
    socket.setNoDelay(true);
    socket.on("data", this.#onData);
    socket.on("end", this.#onEnd);
    socket.on("error", this.#onError);
    socket.on("close", this.#onClose);
  }

  readonly #onData = (chunk: Buffer): void => {
    // Closing: the answer said `connection: close`; whatever the peer still sends is read and dropped.
    if (this.state === State.Closing) return;
    this.#inbox.append(chunk);
    if (this.state === State.Busy) {
      if (this.#inbox.bytes!.length > MAX_PIPELINED_BYTES) this.#socket.pause();
      return;
    }
    if (this.state === State.Idle) this.#enter(State.Head, true);
    this.#drive();
  };

  /** The peer finished sending: a request in progress is abandoned (node:http does the same), then the socket ends. */
  readonly #onEnd = (): void => {
    this.#abandonExchange();
    if (this.state !== State.Closing) this.#enter(State.Closing, false);
    this.#socket.end();
  };

  readonly #onError = (): void => {
    this.#socket.destroy();
  };

  readonly #onClose = (): void => {
    this.#abandonExchange();
    this.#lane.forget(this);
  };

  #enter(state: State, newRequest: boolean): void {
    this.state = state;
    this.since = Date.now();
    if (newRequest) this.requestSince = this.since;
  }

  /** Reads and dispatches requests from the bytes at hand, one at a time, until one waits. */
  #drive(): void {
    if (this.#driving) return;
    this.#driving = true;
    try {
      while (this.state === State.Head || this.state === State.Body) {
        const pending = this.#inbox.bytes;
        if (pending === null) {
          this.#enter(State.Idle, false);
          return;
        }
        if (this.#socket.writableNeedDrain) {
          // The client does not read its answers: read and answer no further until it does.
          this.#socket.pause();
          this.#enter(State.Blocked, false);
          this.#socket.once("drain", this.#resume);
          return;
        }
        let head = this.#head;
        if (head === null) {
          const read = readHead(pending, this.#handler.route, this.#progress);
          if (read === INCOMPLETE) return;
          if (read === HAND_OFF) return this.#handOff();
          head = read;
        }
        const size = head.headBytes + head.bodyBytes;
        if (pending.length < size) {
          this.#head = head;
          if (this.state !== State.Body) this.#enter(State.Body, false);
          return;
        }
        this.#head = null;
        this.#progress.searched = 0;
        this.#progress.lineChecked = false;
        this.#inbox.consume(size);
        this.#dispatch(head, pending.subarray(head.headBytes, size));
      }
    } finally {
      this.#driving = false;
    }
  }

  readonly #resume = (): void => {
    if (this.state !== State.Blocked) return;
    this.#enter(State.Head, true);
    this.#socket.resume();
    this.#drive();
  };

  #dispatch(head: RequestHead, body: Buffer): void {
    this.#enter(State.Busy, false);
    const signals = new Signals();
    this.#signals = signals;
    const close = head.close || this.#lane.closing;
    const req = new LaneRequest(head.method, head.target, head.headers, this.#socket, body, signals);
    const res = new LaneResponse(this.#socket, this, close, this.#keepAlive, signals);
    this.#handler.handle(req, res);
  }

  get closing(): boolean {
    return this.#lane.closing;
  }

  /** The handler's answer went out (ExchangeOwner). */
  responded(close: boolean): void {
    this.#signals = null;
    if (close) {
      this.#enter(State.Closing, false);
      this.#socket.end();
      return;
    }
    this.#enter(State.Head, true);
    if (this.#inbox.bytes === null) this.#enter(State.Idle, false);
    if (this.#socket.isPaused()) this.#socket.resume();
    // An answer given later (a long-poll, a broker's publish): the requests that queued behind it go on now.
    if (!this.#driving) this.#drive();
  }

  /** The handler gave up its answer (ExchangeOwner): nothing can follow it on this connection. */
  abandoned(): void {
    this.#signals = null;
    this.destroy();
  }

  #abandonExchange(): void {
    const signals = this.#signals;
    this.#signals = null;
    signals?.fire(false);
  }

  #handOff(): void {
    const socket = this.#socket;
    socket.off("data", this.#onData);
    socket.off("end", this.#onEnd);
    socket.off("error", this.#onError);
    socket.off("close", this.#onClose);
    this.#lane.forget(this);
    this.#lane.handOff(socket, this.#inbox.take());
  }

  closeIfIdle(): void {
    if (this.state === State.Idle || (this.state === State.Head && this.#inbox.bytes === null)) this.destroy();
  }

  /** A head or body not received in time: 408, as node:http answers. */
  timeOut(): void {
    this.#enter(State.Closing, false);
    endWithError(this.#socket, new LadderError("request_timeout", "request not received in time"));
  }

  destroy(): void {
    this.#socket.destroy();
  }
}
