/**
 * What a silent peer may hold on the parts of a listener node does not police by itself, checked by one
 * sweep timer per listener rather than a timer per connection (node:http does the same for HTTP/1.1):
 *
 * - a connection on the first-bytes front whose protocol is not known yet: cut `headersTimeoutMs` after
 *   its accept, however slowly its bytes come (an h2c preface sent a byte at a time);
 * - an HTTP/2 connection that never opens a stream: cut after `headersTimeoutMs`;
 * - an HTTP/2 connection whose streams have all ended: GOAWAY after `keepAliveTimeoutMs`, as an idle
 *   HTTP/1.1 keep-alive connection is closed, then cut if it does not close by itself;
 * - an HTTP/2 request whose body does not end within `requestTimeoutMs` (node:http2 has no
 *   requestTimeout): `408` and the stream reset with NO_ERROR (RFC 9113 §8.1).
 *
 * Checks come at most one sweep period late, as node's own do.
 */
import { constants as h2constants, type Http2Session, type ServerHttp2Stream } from "node:http2";
import type { Socket } from "node:net";
import { errorBody, LadderError } from "../../protocol/index.js";

export interface DeadlineLimits {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

/** How long an HTTP/2 connection sent GOAWAY for idleness may take to close by itself before it is cut. */
const GOAWAY_GRACE_MS = 5_000;

interface SessionState {
  streams: number;
  streamed: boolean;
  /** When the session last had no open stream (its start, before its first). */
  idleSince: number;
  /** When it was sent GOAWAY for idleness; 0 before. */
  goAwaySince: number;
  /** Each stream's one close listener (the stream is `this`): counts it out, and its body deadline with it. */
  readonly streamClosed: (this: ServerHttp2Stream) => void;
}

export class Deadlines {
  readonly #limits: DeadlineLimits;
  readonly #unrouted = new Map<Socket, number>();
  readonly #sessions = new Map<Http2Session, SessionState>();
  readonly #bodies = new Map<ServerHttp2Stream, number>();
  /** The close listener of a stream whose session is not tracked (none should be): drops its body deadline. */
  readonly #bodyDone: (this: ServerHttp2Stream) => void;
  readonly #timer: NodeJS.Timeout;

  constructor(limits: DeadlineLimits, intervalMs: number) {
    this.#limits = limits;
    const bodies = this.#bodies;
    this.#bodyDone = function (this: ServerHttp2Stream) {
      bodies.delete(this);
    };
    this.#timer = setInterval(() => this.#sweep(Date.now()), intervalMs);
    this.#timer.unref();
  }

  /** The HTTP/2 sessions open now. */
  get sessions(): IterableIterator<Http2Session> {
    return this.#sessions.keys();
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** A connection on the front whose first bytes have not said what it speaks yet. */
  unrouted(socket: Socket): void {
    this.#unrouted.set(socket, Date.now());
  }

  /** Handed to its protocol server (or closed): that server's own limits apply from here. */
  routed(socket: Socket): void {
    this.#unrouted.delete(socket);
  }

  session(session: Http2Session): void {
    const bodies = this.#bodies;
    const state: SessionState = {
      streams: 0,
      streamed: false,
      idleSince: Date.now(),
      goAwaySince: 0,
      streamClosed(this: ServerHttp2Stream) {
        bodies.delete(this);
        if (--state.streams === 0) state.idleSince = Date.now();
      },
    };
    this.#sessions.set(session, state);
    session.once("close", () => this.#sessions.delete(session));
  }

  stream(stream: ServerHttp2Stream): void {
    const state = stream.session && this.#sessions.get(stream.session);
    // One listener per stream, shared by all (`on`: once() would wrap it in a closure per stream).
    stream.on("close", state ? state.streamClosed : this.#bodyDone);
    if (state) {
      state.streams++;
      state.streamed = true;
    }
    // A request with a body: END_STREAM did not come with its headers.
    if (!stream.endAfterHeaders) this.#bodies.set(stream, Date.now());
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #sweep(now: number): void {
    const { headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs } = this.#limits;
    // Maps iterate in insertion order, which is start order here: the first one not due ends the walk, so
    // a sweep costs what expires (plus one), not every connection or publish in flight.
    for (const [socket, since] of this.#unrouted) {
      if (now - since < headersTimeoutMs) break;
      this.#unrouted.delete(socket);
      socket.destroy();
    }
    for (const [session, state] of this.#sessions) {
      if (state.goAwaySince > 0) {
        if (now - state.goAwaySince >= GOAWAY_GRACE_MS) session.destroy();
      } else if (state.streams > 0 || session.closed) {
        // Busy, or closing already (a drain's GOAWAY): the session ends with its streams.
      } else if (!state.streamed) {
        if (now - state.idleSince >= headersTimeoutMs) session.destroy();
      } else if (now - state.idleSince >= keepAliveTimeoutMs) {
        state.goAwaySince = now;
        session.close();
      }
    }
    for (const [stream, since] of this.#bodies) {
      if (now - since < requestTimeoutMs) break;
      this.#bodies.delete(stream);
      timeOutBody(stream);
    }
  }
}

/** A request body that did not arrive in time: 408 when no answer has begun, and the stream goes. */
function timeOutBody(stream: ServerHttp2Stream): void {
  // The whole body came (END_STREAM), whether or not the hub has read it yet: nothing is owed by the peer.
  if (stream.destroyed || stream.state.remoteClose) return;
  if (!stream.headersSent) {
    const error = new LadderError("request_timeout", "request not received in time");
    const body = JSON.stringify(errorBody(error));
    stream.respond({
      ":status": error.status,
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(body),
      "cache-control": "no-store",
    });
    stream.end(body);
  }
  // An answer under way that has not ended is the hub's doing (it chose not to read the body), not a wait on the peer.
  if (!stream.writableEnded) return;
  // After its answer is sent, NO_ERROR asks the client to stop sending the rest (RFC 9113 §8.1).
  stream.close(h2constants.NGHTTP2_NO_ERROR);
}
