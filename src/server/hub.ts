/**
 * The hub: routes HTTP requests and upgrades to the transports, publishes through the engine, and keeps
 * the open connections (core/connections.ts) for heartbeats, limits and a graceful drain. It does not know how any
 * transport writes its bytes — each is a {@link Connection}. Where an answer is at hand (no auth: a principal
 * at once; the memory engine: a long-poll live within the call) the path stays synchronous and costs no
 * turn; a promise is awaited only when something really waits. A POST of messages is read and checked in
 * publish/http.ts.
 */
import type { IncomingMessage, Server as HttpServer } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { WebSocketServer } from "ws";
import { checkPublishKey, DEFAULT_CHANNEL, LadderError } from "../protocol/index.js";
import type { Engine, Published } from "../engines/engine.js";
import { createEngine } from "../engines/create.js";
import { Access, NO_SLOT } from "./auth/access.js";
import { applyCors, upgradeOriginRefusal } from "./auth/origins.js";
import { clientAddress, normalizeAddress, trustedProxies, type TrustedProxies } from "./edge/client-address.js";
import type { Principal } from "./auth/rules.js";
import { WriteBatcher } from "./core/cork.js";
import { Connections } from "./core/connections.js";
import { Fanout } from "./core/fanout.js";
import { HubMetrics, METRICS_OFF, METRICS_PATH } from "./metrics.js";
import { Hooks } from "./hooks/hooks.js";
import type { RequestFacts } from "./hooks/connect.js";
import type { HookObserver } from "./hooks/caller.js";
import { closeAfterResponse, sendJson, type ExchangeRequest, type ExchangeResponse, type HubRequest, type HubResponse } from "./edge/http.js";
import type { LaneRequest, LaneResponse } from "./edge/http1/exchange.js";
import { checkChannel } from "./edge/params.js";
import { parseTarget, targetPathname, type Target } from "./edge/target.js";
import { asLadderError, endWithError, sendError, type Headers } from "./edge/refusal.js";
import { HttpPublish } from "./publish/http.js";
import { resolveOptions, type HubOptions, type ResolvedOptions } from "./options.js";
import type { TransportContext } from "./core/context.js";
import { LongPoll, parsePollRequest, poll } from "./transports/poll.js";
import { parseSseRequest, SseConnection } from "./transports/sse.js";
import type { TransportKind } from "./transports/transport.js";
import { WebSocketConnection } from "./transports/websocket.js";
import { MemoryBus, createBus, type PresenceBus } from "./presence/bus.js";
import { identityFor, type Identity } from "./presence/member.js";
import { Presence } from "./presence/presence.js";
import type { MemberReporter } from "./presence/ledger.js";
import { presenceEnabled } from "./options.js";

export type NextFunction = (error?: unknown) => void;

export interface HubStats {
  readonly connections: number;
  readonly byKind: Readonly<Record<TransportKind, number>>;
  readonly channels: number;
  readonly draining: boolean;
}

const SWEEP_INTERVAL_MS = 60_000;
const FRAME_OVERHEAD_BYTES = 1024;

/**
 * A socket's error listener for as long as it lives: shared, since a closure made in the upgrade handler
 * would keep that handler's scope (the upgrade request, its headers and URL) alive per socket.
 */
function destroyOnError(this: Duplex): void {
  this.destroy();
}

/**
 * Hubs that serve their own HTTP server (`serve()`): nothing but the hub holds their requests and
 * responses, so an SSE stream may take its socket from node:http (edge/take-socket.ts). A hub mounted in
 * an app keeps node:http's objects, which the app's middleware may still watch.
 */
const servingOwnServer = new WeakSet<Hub>();

/** Called by serve() for the hub it made. */
export function markServingOwnServer(hub: Hub): void {
  servingOwnServer.add(hub);
}

export class Hub {
  readonly options: ResolvedOptions;
  readonly engine: Engine;
  readonly logger: Logger;
  /** Prometheus metrics, served at `/metrics`; null unless the `metrics` option is on. */
  readonly metrics: HubMetrics | null;
  /** Who is in each presence channel, across nodes; null unless the `presence` option names channels. */
  readonly presence: Presence | null;
  readonly #presenceBus: Promise<PresenceBus> | null;
  /** The app's hooks; null without the `hooks` option. Presence reports members through `hooks.webhooks`. */
  readonly hooks: Hooks | null;
  readonly #ownsEngine: boolean;
  readonly #fanout: Fanout;
  readonly #context: TransportContext;
  readonly #connections: Connections;
  readonly #wss: WebSocketServer;
  readonly #access: Access;
  readonly #httpPublish: HttpPublish;
  readonly #proxies: TrustedProxies;
  readonly #timers: NodeJS.Timeout[] = [];
  #draining = false;
  #closed = false;

  constructor(hubOptions: HubOptions = {}) {
    const options = resolveOptions(hubOptions);
    this.options = options;
    this.logger = options.logger;
    // The metrics come after the engine they read; hooks report to them once they exist.
    const observer: HookObserver = {
      hookCalled: (hook, seconds) => this.metrics?.hookCalled(hook, seconds),
      hookFailed: (hook, reason) => this.metrics?.hookFailed(hook, reason),
    };
    // Before the engine: a bad auth or hooks option throws here, with nothing yet to release.
    this.hooks = options.hooks ? new Hooks(options.hooks, this.logger, observer) : null;
    this.#access = new Access(options.auth, options.limits, this.hooks);
    this.#proxies = trustedProxies(options.trustProxy);
    this.#ownsEngine = typeof options.engine !== "object";
    this.engine =
      typeof options.engine === "object"
        ? options.engine
        : createEngine(options.engine, {
            maxCount: options.historySize,
            maxAgeMs: options.historyMaxAgeMs,
            maxLogBytes: options.maxLogBytes,
            maxChannels: options.maxChannels,
            logger: this.logger,
          });
    const webhooks = this.hooks?.webhooks;
    this.#fanout = new Fanout(this.engine, webhooks ? (channel, occupied) => webhooks.emit(occupied ? "channel_occupied" : "channel_vacated", channel) : null);
    this.metrics = options.metrics
      ? new HubMetrics({
          stats: () => this.stats(),
          liveDeliveries: () => this.#fanout.liveDeliveries,
          engineReady: () => this.engine.ready(),
          engineStats: () => this.engine.stats?.(),
          engineName: this.engine.name,
        })
      : null;
    if (options.presence) {
      // Nodes sharing a broker share presence through it; an engine given as an object is taken for one node.
      const bus = typeof options.engine === "string" ? createBus(options.engine, { logger: this.logger }) : Promise.resolve<PresenceBus>(new MemoryBus());
      bus.catch((error: unknown) => this.logger.warn({ err: error }, "presence: could not connect its bus"));
      this.#presenceBus = bus;
      const { leaveDelayMs, nodeTimeoutMs } = options.presence;
      // Heartbeats at least four times per timeout: a dead node's members leave within about 1.25 timeouts.
      const heartbeatMs = Math.min(3000, Math.max(50, Math.floor(nodeTimeoutMs / 4)));
      // With webhooks, presence reports each member's cluster-wide first join and last leave through them.
      const onMember: MemberReporter | null = webhooks ? (event, channel, member) => webhooks.emit(event, channel, member) : null;
      this.presence = new Presence({ bus, leaveDelayMs, nodeTimeoutMs, heartbeatMs, logger: this.logger, ...(onMember ? { onMember } : {}) });
    } else {
      this.#presenceBus = null;
      this.presence = null;
    }
    const backfill = this.hooks?.backfill;
    this.#context = { engine: this.engine, fanout: this.#fanout, options: this.options, presence: this.presence, batcher: new WriteBatcher(this.options.writeDelayMs), backfill: backfill ? (gap) => backfill.fill(gap) : null };
    // Room for the frame's own fields around the data, which publish() bounds by maxMessageBytes.
    const maxPayload = this.options.maxMessageBytes + FRAME_OVERHEAD_BYTES;
    this.#wss = new WebSocketServer({ noServer: true, maxPayload, clientTracking: false });
    this.#httpPublish = new HttpPublish({
      options: this.options,
      access: this.#access,
      draining: () => this.#draining,
      publish: (channel, data, key) => this.#publishNow(channel, data, key),
      url: (req) => this.#url(req),
      clientIp: (req) => this.clientIp(req),
      facts: (req, transport, channels) => this.#facts(req, transport, channels),
      fail: (res, error) => this.#fail(res, error),
      refuse: (res, error) => this.#refuse(res, error),
    });
    // Last: its heartbeat timer starts here, after everything that may throw.
    this.#connections = new Connections(options.heartbeatMs);
    const access = this.#access;
    const sweepBuckets = setInterval(() => access.sweep(), SWEEP_INTERVAL_MS);
    sweepBuckets.unref();
    this.#timers.push(sweepBuckets);
  }

  /**
   * A `node:http` request listener — or a `node:http2` one (compatibility API), so one hub serves
   * HTTP/1.1 and HTTP/2; with `next` it is Express/Connect middleware that passes on other paths.
   */
  readonly handleRequest = (req: HubRequest, res: HubResponse, next?: NextFunction): void => {
    try {
      this.#route(req, res, next)?.catch((error: unknown) => this.#fail(res, error));
    } catch (error) {
      this.#fail(res, error);
    }
  };

  /**
   * The HTTP/1.1 lane's entry (edge/http1/lane.ts): a GET or POST on the messages path, read by the lane
   * instead of node:http. The same checks and answers as through {@link handleRequest}.
   */
  readonly handleLaneRequest = (req: LaneRequest, res: LaneResponse): void => {
    try {
      const cors = this.options.cors;
      if (cors) applyCors(req, res, cors);
      const pending = req.method === "POST" ? this.#httpPublish.handle(req, res) : this.#poll(req, res, this.#url(req));
      pending?.catch((error: unknown) => this.#fail(res, error));
    } catch (error) {
      this.#fail(res, error);
    }
  };

  /** A `node:http` upgrade listener. Returns false (and leaves the socket alone) for paths that are not the hub's. */
  readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): boolean => {
    const url = this.#url(req);
    if (url.pathname !== this.options.paths.websocket) return false;
    socket.on("error", destroyOnError);
    const refusal = upgradeOriginRefusal(req, url, this.options.allowedOrigins, this.#access) ?? this.#admit();
    if (refusal) {
      this.#refuseUpgrade(socket, refusal);
      return true;
    }
    const ip = this.clientIp(req);
    const release = this.#access.acquireConnection(ip);
    if (!release) {
      this.#refuseUpgrade(socket, perIpRefusal());
      return true;
    }
    // ws may refuse the handshake itself (a bad key) without calling back: the socket's end frees the slot then.
    socket.once("close", release);
    // The token on the upgrade (header, cookie or query) is checked before the handshake completes, so a
    // bad one is a plain 401; no token is fine here — each join and publish is checked, and an auth frame may follow.
    Promise.resolve(this.#access.principalFor(req, url, { transport: "websocket", ip, channels: [] })).then(
      (principal) => {
        if (socket.destroyed) return release();
        this.#wss.handleUpgrade(req, socket, head, (ws) => {
          if (this.#closed) {
            release();
            ws.terminate();
            return;
          }
          let identity: Identity | null = null;
          if (this.presence) {
            try {
              identity = this.#identity(principal, url.searchParams.get("client"), url.searchParams.get("info"));
            } catch {
              // A malformed client id or info on the upgrade: the connection works, listed under an id of the hub's.
              identity = this.#identity(principal, null, null);
            }
          }
          // From here the connection frees the slot when it closes, and ws listens for the socket's errors:
          // the two listeners above would only cost each idle socket a once-wrapper and listener arrays.
          socket.off("close", release);
          socket.off("error", destroyOnError);
          const connection = new WebSocketConnection(this.#context, ws, socket, this.#publishFrame, this.#access, principal, ip, identity);
          this.#connections.add(connection, release);
          connection.start();
        });
      },
      (error: unknown) => {
        release();
        this.#refuseUpgrade(socket, this.#asRefusal(error));
      },
    );
    return true;
  };

  /**
   * What a WebSocket's publish frames call: one function for every socket. A closure made in the upgrade
   * handler would keep that handler's scope alive per socket (the upgrade request, its headers and URL).
   */
  readonly #publishFrame = (channel: string, data: unknown, key?: string): Published | Promise<Published> => this.#publishNow(channel, data, key);

  /** Mounts the hub on a server: its requests and upgrades; other upgrades are refused. */
  attach(server: HttpServer): this {
    server.on("request", this.handleRequest);
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (!this.handleUpgrade(req, socket, head)) endWithError(socket, new LadderError("not_found", "no WebSocket endpoint here"));
    });
    return this;
  }

  /**
   * Publishes from server code. Rejects with a {@link LadderError} for a bad channel or oversized data.
   * With an idempotency `key`, a repeat within the engine's window returns the first id, `duplicate: true`.
   */
  async publish(channel: string, data: unknown, key?: string): Promise<Published> {
    return this.#publishNow(channel, data, key);
  }

  /**
   * {@link publish} for the transports: every publish's checks, then the engine. Refusals throw at once
   * rather than reject a turn later; an engine that appends in this process gives the message itself.
   */
  #publishNow(channel: unknown, data: unknown, key?: string): Published | Promise<Published> {
    if (this.#closed) throw new LadderError("unavailable", "hub is closed");
    const name = checkChannel(channel);
    if (data === undefined) throw new LadderError("bad_request", "data is required");
    const max = this.options.maxMessageBytes;
    // Measured once here: the engine's memory budget counts the same length.
    const size = Buffer.byteLength(JSON.stringify(data));
    if (size > max) throw new LadderError("payload_too_large", `data is larger than ${max} bytes`);
    if (!this.engine.ready()) throw new LadderError("unavailable", `engine ${this.engine.name} is not ready`);
    const engine = this.engine;
    const metrics = this.metrics;
    const checkedKey = checkPublishKey(key, "bad_request");
    if (engine.publishSync) {
      const message = engine.publishSync(name, data, size, checkedKey);
      if (metrics && !message.duplicate) metrics.published();
      return message;
    }
    const published = engine.publish(name, data, size, checkedKey);
    if (metrics) published.then((message) => message.duplicate || metrics.published(), () => undefined);
    return published;
  }

  stats(): HubStats {
    return { connections: this.#connections.size, byKind: this.#connections.byKind(), channels: this.#fanout.channelCount, draining: this.#draining };
  }

  /**
   * Graceful shutdown: refuses new connections, answers held polls, ends SSE streams (clients retry and
   * resume), closes WebSockets with 1001. Resolves when every connection is gone or after `timeoutMs`.
   */
  async drain(timeoutMs = 5000): Promise<void> {
    this.#draining = true;
    await this.#connections.drain(timeoutMs);
  }

  /** Releases everything: connections, timers, and the engine when the hub created it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#draining = true;
    for (const timer of this.#timers) clearInterval(timer);
    this.hooks?.close();
    this.#connections.close();
    this.#wss.close();
    if (this.presence) {
      await this.presence.close();
      await (await this.#presenceBus!.catch(() => null))?.close();
    }
    if (this.#ownsEngine) await this.engine.close();
  }

  /**
   * The address per-IP limits count: the peer's, or behind a proxy listed in `trustProxy` the client's
   * from X-Forwarded-For (see client-address.ts).
   */
  clientIp(req: ExchangeRequest): string {
    return clientAddress(req.socket?.remoteAddress, req.headers["x-forwarded-for"], this.#proxies);
  }

  /**
   * A slot for a new TCP connection from `peer` (the socket's address), or null when that address holds
   * `limits.socketsPerIp` already; `serve()` closes the socket then. Trusted proxies are not counted.
   */
  admitSocket(peer: string | undefined): (() => void) | null {
    if (peer === undefined || this.#proxies.trusts(peer)) return NO_SLOT;
    const release = this.#access.acquireSocket(normalizeAddress(peer));
    if (!release) this.metrics?.socketRefused();
    return release;
  }

  #slot(req: ExchangeRequest): () => void {
    const release = this.#access.acquireConnection(this.clientIp(req));
    if (!release) throw perIpRefusal();
    return release;
  }

  #admit(): LadderError | null {
    if (this.#draining) return new LadderError("draining", "server is shutting down; retry on another node");
    if (this.#connections.size >= this.options.maxConnections) {
      return new LadderError("too_many_connections", `connection limit of ${this.options.maxConnections} reached`);
    }
    return null;
  }

  #url(req: ExchangeRequest): Target {
    return parseTarget(req.url ?? "/");
  }

  #pathname(req: HubRequest): string {
    return targetPathname(req.url ?? "/");
  }

  /** Returns a promise only for routes that finish later; a synchronous throw is answered by handleRequest. */
  #route(req: HubRequest, res: HubResponse, next?: NextFunction): Promise<void> | void {
    const pathname = this.#pathname(req);
    const { paths } = this.options;
    const method = req.method ?? "GET";
    const cors = this.options.cors;
    if (cors && (pathname === paths.messages || pathname === paths.stream || pathname === paths.presence) && applyCors(req, res, cors)) return;
    if (this.metrics && pathname === METRICS_PATH) {
      if (method !== "GET" && method !== "HEAD") return this.#methodNotAllowed(req, res, "GET, HEAD");
      return this.#sendMetrics(res, this.metrics);
    }
    switch (pathname) {
      case paths.messages:
        if (method === "GET" || method === "HEAD") return this.#poll(req, res, this.#url(req));
        if (method === "POST") return this.#httpPublish.handle(req, res);
        return this.#methodNotAllowed(req, res, "GET, HEAD, POST");
      case paths.stream:
        if (method === "GET") return this.#stream(req, res, this.#url(req));
        return this.#methodNotAllowed(req, res, "GET");
      case paths.presence:
        if (method === "GET" || method === "HEAD") return this.#presenceRequest(req, res, this.#url(req));
        return this.#methodNotAllowed(req, res, "GET, HEAD");
      case paths.websocket:
        this.#refuse(res, new LadderError("bad_request", "this endpoint needs a WebSocket upgrade"), { upgrade: "websocket" });
        return;
      case "/healthz":
        sendJson(res, 200, { status: "ok" });
        return;
      case "/readyz": {
        const ready = !this.#draining && this.engine.ready();
        sendJson(res, ready ? 200 : 503, { status: ready ? "ready" : "not ready", engine: this.engine.name, draining: this.#draining });
        return;
      }
      default:
        if (next) return next();
        closeAfterResponse(req, res);
        this.#refuse(res, pathname === METRICS_PATH ? METRICS_OFF : new LadderError("not_found", `no route for ${pathname}`));
    }
  }

  async #sendMetrics(res: HubResponse, metrics: HubMetrics): Promise<void> {
    const { contentType, body } = await metrics.render();
    res.writeHead(200, { "content-type": contentType, "content-length": Buffer.byteLength(body), "cache-control": "no-store" });
    res.end(body);
  }

  #methodNotAllowed(req: HubRequest, res: HubResponse, allow: string): void {
    closeAfterResponse(req, res);
    this.#refuse(res, new LadderError("method_not_allowed", `use ${allow}`), { allow });
  }

  async #poll(req: ExchangeRequest, res: ExchangeResponse, url: Target): Promise<void> {
    const request = parsePollRequest(url, this.#context);
    const facts = this.#facts(req, request.waitMs === 0 ? "poll" : "long-poll", [request.channel]);
    const found = this.#access.principalFor(req, url, facts);
    const principal = found instanceof Promise ? await found : found;
    const checking = this.#access.checkSubscribe(principal, request.channel, facts);
    if (checking) await checking;
    // A poller that names its client is listed while it polls: the leave delay bridges one poll to the next.
    const client = url.searchParams.get("client");
    const identity = client !== null && this.presence && presenceEnabled(this.options, request.channel) ? this.#identity(principal, client, url.searchParams.get("info")) : null;
    const listed = (): (() => void) | null => (identity ? this.presence!.join(request.channel, { ...identity, since: Date.now() }) : null);
    if (request.waitMs === 0 || this.#draining) {
      const leave = listed();
      try {
        await poll(this.#context, request, res);
      } finally {
        leave?.();
      }
      return;
    }
    const refusal = this.#admit();
    if (refusal) throw refusal;
    const release = this.#slot(req);
    const leave = listed();
    const held = new LongPoll(this.#context, request, req, res);
    this.#connections.add(
      held,
      leave
        ? () => {
            release();
            leave();
          }
        : release,
    );
    const starting = held.start();
    if (starting) await starting;
  }

  async #stream(req: HubRequest, res: HubResponse, url: Target): Promise<void> {
    const request = parseSseRequest(req, url, this.#context);
    const facts = this.#facts(req, "sse", request.channels);
    const pending = this.#access.principalFor(req, url, facts);
    const principal = pending instanceof Promise ? await pending : pending;
    const checks = request.channels.map((channel) => this.#access.checkSubscribe(principal, channel, facts)).filter((c) => c !== null);
    if (checks.length > 0) await Promise.all(checks);
    const identity = this.presence && request.channels.some((channel) => presenceEnabled(this.options, channel)) ? this.#identity(principal, request.client, request.info) : null;
    const refusal = this.#admit();
    if (refusal) throw refusal;
    const release = this.#slot(req);
    const stream = new SseConnection(this.#context, request, req, res, principal, identity, servingOwnServer.has(this));
    this.#connections.add(stream, release);
    await stream.start();
  }

  /** `GET /api/presence?channel=C[&count=1][&limit=N]`: who is in C, on every node; reading needs subscribe permission. */
  async #presenceRequest(req: HubRequest, res: HubResponse, url: Target): Promise<void> {
    const channel = checkChannel(url.searchParams.get("channel") ?? DEFAULT_CHANNEL);
    const facts = this.#facts(req, "http", [channel]);
    const found = this.#access.principalFor(req, url, facts);
    const checking = this.#access.checkSubscribe(found instanceof Promise ? await found : found, channel, facts);
    if (checking) await checking;
    const presence = this.presence;
    const settings = this.options.presence;
    if (!presence || !settings || !presenceEnabled(this.options, channel)) throw new LadderError("not_found", `presence is not enabled for channel ${channel}`);
    if (url.searchParams.get("count") === "1") {
      sendJson(res, 200, { channel, count: await presence.count(channel) });
      return;
    }
    const limitText = url.searchParams.get("limit");
    const limit = limitText === null ? settings.maxMembers : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > settings.maxMembers) throw new LadderError("bad_limit", `limit must be a whole number from 1 to ${settings.maxMembers}`);
    const { members, count } = await presence.list(channel, limit);
    sendJson(res, 200, { channel, members, count });
  }

  /** Who a connection is in presence lists (see presence/member.ts). */
  #identity(principal: Principal, client: string | null, info: string | null): Identity {
    return identityFor(principal, client, info, this.options.presence?.anonymousInfo === true);
  }

  #facts(req: ExchangeRequest, transport: string, channels: readonly string[]): RequestFacts {
    return { transport, ip: this.clientIp(req), channels };
  }

  #fail(res: ExchangeResponse, error: unknown): void {
    this.#refuse(res, this.#asRefusal(error));
  }

  /** What a thrown value answers with; anything not a {@link LadderError} is logged, as it is a bug. */
  #asRefusal(error: unknown): LadderError {
    if (!(error instanceof LadderError)) this.logger.error({ err: error }, "request failed");
    return asLadderError(error);
  }

  /** Every refusal of a request is counted here; the headers (Retry-After, WWW-Authenticate) follow from the error. */
  #refuse(res: ExchangeResponse, error: LadderError, extra?: Headers): void {
    this.metrics?.refused(error);
    sendError(res, error, extra);
  }

  /** The same for an upgrade, written on the raw socket. */
  #refuseUpgrade(socket: Duplex, error: LadderError): void {
    this.metrics?.refused(error);
    endWithError(socket, error);
  }
}

function perIpRefusal(): LadderError {
  return new LadderError("too_many_connections", "too many connections from this address");
}

export function createHub(options: HubOptions = {}): Hub {
  return new Hub(options);
}
