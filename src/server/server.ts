/**
 * A ready-to-run server around a hub — HTTP/1.1, or with TLS HTTP/2 and HTTP/1.1 on one port, or h2c
 * beside HTTP/1.1 (see listen.ts) — with a graceful drain on SIGTERM/SIGINT.
 */
import type { IncomingMessage } from "node:http";
import type { Server as NetServer } from "node:net";
import type { Duplex } from "node:stream";
import { LadderError } from "../protocol/index.js";
import type { HubRequest, HubResponse } from "./edge/http.js";
import { endWithError } from "./edge/refusal.js";
import { Hub, markServingOwnServer } from "./hub.js";
import { DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_REQUEST_LIMITS } from "./edge/defaults.js";
import { listen, type Listener, type RequestLimits } from "./edge/listen.js";
import type { HubOptions } from "./options.js";
import { providedCredentials, selfSignedCredentials, type TlsCredentials, type TlsInfo } from "./edge/tls.js";

export interface ServeOptions extends HubOptions {
  readonly port?: number;
  readonly host?: string;
  /** Extra request handling for paths the hub does not own (the demo page, static files); HTTP/1.1 or HTTP/2. */
  readonly fallback?: (req: HubRequest, res: HubResponse) => void;
  /**
   * WebSocket upgrades (HTTP/1.1) on paths the hub does not own: return true when the socket was taken
   * care of; false gets the hub's 404. Asked only after the hub's own path did not match.
   */
  readonly fallbackUpgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean;
  /**
   * Serve https and wss: a PEM certificate (chain) and key, or `"self-signed"` for a development
   * certificate made at start, kept in memory only (its fingerprint is in {@link RunningServer.tls}).
   */
  readonly tls?: TlsCredentials | "self-signed";
  /** With TLS, offer HTTP/2 by ALPN, HTTP/1.1 staying the fallback on the same port. Default true. */
  readonly http2?: boolean;
  /** Without TLS, also accept prior-knowledge cleartext HTTP/2 (h2c) on the port, for a proxy that speaks it. Default false. */
  readonly h2c?: boolean;
  /** Streams one HTTP/2 connection may hold open at once (SETTINGS_MAX_CONCURRENT_STREAMS). Default 128. */
  readonly maxConcurrentStreams?: number;
  /** Largest request head in bytes: HTTP/1.1 answers 431 past it, HTTP/2 announces it as its header list size. Default 16384. */
  readonly maxHeaderBytes?: number;
  /**
   * Time a client has to send a complete request head (408 past it), to finish a TLS handshake, and for an
   * HTTP/2 connection to open its first stream: the slow-loris defence. Default 10000 ms.
   */
  readonly headersTimeoutMs?: number;
  /** Time to send a whole request, body included (408). Long responses (SSE, held polls) are not bound by it. Default 30000 ms. */
  readonly requestTimeoutMs?: number;
  /**
   * How long a connection with nothing in flight stays open: an HTTP/1.1 keep-alive connection between
   * requests, an HTTP/2 connection with no open stream (GOAWAY). Behind a load balancer, set it above the
   * balancer's idle timeout. Default 5000 ms.
   */
  readonly keepAliveTimeoutMs?: number;
  /**
   * Read publishes (`POST`) and polls (`GET`) on the messages path over cleartext HTTP/1.1 with Ladder's
   * own lane instead of node:http: the same answers for less CPU (docs/performance.md). Every other
   * request, and every request over TLS or HTTP/2, goes through node:http. Default true.
   */
  readonly fastLane?: boolean;
}

export interface RunningServer {
  readonly hub: Hub;
  /** The server holding the port: node:http's without TLS or h2c, else the dispatcher in front of the protocol servers. */
  readonly server: NetServer;
  /** `http://…` or, with TLS, `https://…`. */
  readonly url: string;
  /** What the port speaks, e.g. `["h2", "http/1.1"]`. */
  readonly protocols: readonly string[];
  /** The certificate served (never its key), or null without TLS. */
  readonly tls: TlsInfo | null;
  /** Drains the hub (HTTP/2 connections get GOAWAY), then closes the server. */
  close(): Promise<void>;
}

/** How long HTTP/2 connections that got GOAWAY may take to flush their last frames and close by themselves. */
const SETTLE_MS = 1000;

export { DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_REQUEST_LIMITS };

function requestLimits(options: ServeOptions): RequestLimits {
  const value = (name: keyof RequestLimits, min: number): number => {
    const v = options[name] ?? DEFAULT_REQUEST_LIMITS[name];
    if (!Number.isInteger(v) || v < min || v > 2 ** 31 - 1) throw new TypeError(`option ${name} must be a whole number ≥ ${min}, got ${String(v)}`);
    return v;
  };
  const limits = {
    maxHeaderBytes: value("maxHeaderBytes", 1024),
    headersTimeoutMs: value("headersTimeoutMs", 100),
    requestTimeoutMs: value("requestTimeoutMs", 100),
    keepAliveTimeoutMs: value("keepAliveTimeoutMs", 100),
  };
  // A whole request includes its head; node refuses the reverse order with a less helpful error.
  if (limits.headersTimeoutMs > limits.requestTimeoutMs) throw new TypeError("option headersTimeoutMs must not exceed requestTimeoutMs");
  return limits;
}

export async function serve(options: ServeOptions = {}): Promise<RunningServer> {
  const host = options.host ?? "127.0.0.1";
  const maxConcurrentStreams = options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS;
  if (!Number.isInteger(maxConcurrentStreams) || maxConcurrentStreams < 1 || maxConcurrentStreams > 2 ** 31 - 1) {
    throw new TypeError(`option maxConcurrentStreams must be a whole number from 1 to 2147483647, got ${String(maxConcurrentStreams)}`);
  }
  const limits = requestLimits(options);
  if (options.tls && options.h2c) throw new TypeError("option h2c is for cleartext; with tls, HTTP/2 is negotiated by ALPN (option http2)");
  // Certificates first: a bad one fails serve() before a hub or a port is taken.
  const tls = options.tls === "self-signed" ? await selfSignedCredentials(host) : options.tls ? providedCredentials(options.tls) : null;
  const hub = new Hub(options);
  markServingOwnServer(hub);
  const { fallback, fallbackUpgrade } = options;
  let listener: Listener;
  try {
    listener = await listen(
      {
        port: options.port ?? 8080,
        host,
        tls,
        http2: options.http2 ?? true,
        h2c: options.h2c ?? false,
        maxConcurrentStreams,
        limits,
        admitSocket: (peer) => hub.admitSocket(peer),
        logger: hub.logger,
        lane:
          options.fastLane === false
            ? null
            : {
                route: {
                  path: hub.options.paths.messages,
                  maxBodyBytes: Math.max(hub.options.maxMessageBytes, hub.options.maxBatchBytes),
                  maxHeaderBytes: limits.maxHeaderBytes,
                },
                handle: hub.handleLaneRequest,
              },
      },
      {
        request: (req, res) => hub.handleRequest(req, res, fallback ? () => fallback(req, res) : undefined),
        upgrade: (req, socket, head) => {
          if (!hub.handleUpgrade(req, socket, head) && !fallbackUpgrade?.(req, socket, head)) endWithError(socket, new LadderError("not_found", "no WebSocket endpoint here"));
        },
      },
    );
  } catch (error) {
    await hub.close();
    throw error;
  }
  const { server } = listener;
  let closing: Promise<void> | null = null;
  return {
    hub,
    server,
    url: listener.url,
    protocols: listener.protocols,
    tls: tls?.info ?? null,
    close() {
      closing ??= (async () => {
        const closed = listener.stopAccepting();
        // GOAWAY first: HTTP/2 clients open no new stream here while the hub ends the open ones.
        listener.goAway();
        await hub.drain();
        await hub.close();
        await listener.settle(SETTLE_MS);
        listener.destroyAll();
        await closed;
      })();
      return closing;
    },
  };
}
