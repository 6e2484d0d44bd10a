/**
 * The demo page's "network conditions": each page picks a random lane and reaches the hub through
 * `/demo/net/<lane>/…` (demo-relay.ts), whose conditions it sets with `POST /demo/network`. A lane's
 * conditions touch only the traffic sent through that lane — one tab's panel — never the hub's own
 * endpoints, other tabs, or anything when the demo is off (`--no-demo` mounts none of it, and the hub's
 * hot path has no check for it: the relay is an ordinary client of the hub's loopback listener).
 *
 * Endpoint (answers in JSON; errors as `{"error":{"code","message"}}`):
 *   GET  /demo/network?lane=<lane>  → 200 the lane's status
 *   POST /demo/network {"lane", "refuseWebSocket"?, "bufferSse"?, "dropAll"?} (booleans; ≤ 512 bytes) → 200 status
 *   400 bad_request / bad_json (a lane not 8–64 of A-Z a-z 0-9 _ -, another field, a value not boolean),
 *   405 method_not_allowed, 413 payload_too_large, 415 unsupported_media_type,
 *   503 unavailable (too many lanes in use, or the relay not started).
 * The lanes themselves answer the hub's own codes, and 400 for a bad lane, 404 for a path that is not the
 * hub's API or /readyz, 429 too_many_connections past 32 relayed connections from one address, 503 past 256 in all.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { LadderError } from "../protocol/index.js";
import { closeAfterResponse, readJsonBody, sendJson, type HubRequest, type HubResponse } from "../server/edge/http.js";
import { endWithError, sendError } from "../server/edge/refusal.js";
import { DEFAULT_REQUEST_LIMITS } from "../server/edge/defaults.js";
import type { Hub } from "../server/hub.js";
import { relayRequest, relayUpgrade, type LaneCounts, type NetConditions, type Relay, type RelayKind, type RelayLane } from "./demo-relay.js";

export type { NetConditions } from "./demo-relay.js";

export const DEMO_NETWORK_PATH = "/demo/network";
/** The lanes' prefix: `/demo/net/<lane>/api/stream` is the hub's `/api/stream` through lane `<lane>`. */
export const DEMO_NET_PREFIX = "/demo/net/";

const LANE = /^[A-Za-z0-9_-]{8,64}$/;
const CONDITIONS = ["refuseWebSocket", "bufferSse", "dropAll"] as const;
const MAX_BODY = 512;

export interface DemoNetworkOptions {
  /** Lanes remembered at once; one without open connections is forgotten first. Default 256. */
  readonly maxLanes?: number;
  /** Connections relayed at once, all lanes together. Default 256. */
  readonly maxRelays?: number;
  /** Connections relayed at once for one peer address, so one visitor cannot take them all. Default 32. */
  readonly maxRelaysPerPeer?: number;
}

/** How a lane tells the network that a relay opened or closed, for the bounds. */
interface RelayCounter {
  opened(peer: string): void;
  closed(peer: string): void;
}

export interface LaneStatus {
  readonly lane: string;
  /** The lane's prefix, to put before the hub's paths. */
  readonly prefix: string;
  readonly conditions: Readonly<NetConditions>;
  /** Connections open through the lane now, by kind. */
  readonly open: Readonly<Record<RelayKind, number>>;
  readonly counts: Readonly<LaneCounts>;
}

class Lane {
  readonly conditions: NetConditions = { refuseWebSocket: false, bufferSse: false, dropAll: false };
  readonly counts: LaneCounts = { relayed: 0, refused: 0, dropped: 0, cut: 0, heldBytes: 0 };
  /** Open relays and the peer address each is for. */
  readonly relays = new Map<Relay, string>();

  constructor(
    readonly id: string,
    private readonly network: RelayCounter,
  ) {}

  /** The lane as one peer's relay sees it. */
  for(peer: string): RelayLane {
    return {
      conditions: this.conditions,
      counts: this.counts,
      opened: (relay) => {
        this.relays.set(relay, peer);
        this.network.opened(peer);
      },
      closed: (relay) => this.closed(relay),
    };
  }

  closed(relay: Relay): void {
    const peer = this.relays.get(relay);
    if (peer !== undefined && this.relays.delete(relay)) this.network.closed(peer);
  }

  /** Cuts the open connections of the given kinds. */
  cut(kinds: readonly RelayKind[]): void {
    for (const relay of [...this.relays.keys()]) {
      if (!kinds.includes(relay.kind)) continue;
      this.counts.cut++;
      relay.cut();
      this.closed(relay);
    }
  }

  status(): LaneStatus {
    const open: Record<RelayKind, number> = { request: 0, stream: 0, websocket: 0 };
    for (const relay of this.relays.keys()) open[relay.kind]++;
    return { lane: this.id, prefix: `${DEMO_NET_PREFIX}${this.id}`, conditions: { ...this.conditions }, open, counts: { ...this.counts } };
  }
}

function badLane(): LadderError {
  return new LadderError("bad_request", "lane must be 8 to 64 characters from A-Z a-z 0-9 _ -");
}

export class DemoNetwork {
  readonly #maxLanes: number;
  readonly #maxRelays: number;
  readonly #maxPerPeer: number;
  readonly #lanes = new Map<string, Lane>();
  #relays = 0;
  readonly #perPeer = new Map<string, number>();
  #server: Server | null = null;
  #port = 0;
  #hub: Hub | null = null;
  readonly #counter: RelayCounter = {
    opened: (peer) => {
      this.#relays++;
      this.#perPeer.set(peer, (this.#perPeer.get(peer) ?? 0) + 1);
    },
    closed: (peer) => {
      this.#relays--;
      const left = (this.#perPeer.get(peer) ?? 1) - 1;
      if (left > 0) this.#perPeer.set(peer, left);
      else this.#perPeer.delete(peer);
    },
  };

  constructor(options: DemoNetworkOptions = {}) {
    this.#maxLanes = options.maxLanes ?? 256;
    this.#maxRelays = options.maxRelays ?? 256;
    this.#maxPerPeer = options.maxRelaysPerPeer ?? 32;
  }

  /**
   * Gives the hub a second listener, plain HTTP on a loopback port, for the relay to reach it through a real
   * socket whatever the public port speaks (TLS, HTTP/2).
   */
  async start(hub: Hub): Promise<void> {
    const server = createServer({ headersTimeout: DEFAULT_REQUEST_LIMITS.headersTimeoutMs, requestTimeout: DEFAULT_REQUEST_LIMITS.requestTimeoutMs });
    hub.attach(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
    this.#hub = hub;
  }

  /** Cuts what is still relayed and closes the loopback listener (after the hub drained). */
  async close(): Promise<void> {
    for (const lane of this.#lanes.values()) lane.cut(["request", "stream", "websocket"]);
    this.#lanes.clear();
    const server = this.#server;
    this.#server = null;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /** A lane's status; a lane never seen reads as all conditions off. */
  status(id: string): LaneStatus {
    if (!LANE.test(id)) throw badLane();
    return (this.#lanes.get(id) ?? new Lane(id, this.#counter)).status();
  }

  /** Sets some of a lane's conditions; turning one on acts on open connections as the network change would. */
  set(id: string, changes: Partial<NetConditions>): LaneStatus {
    const lane = this.#lane(id);
    const was = { ...lane.conditions };
    Object.assign(lane.conditions, changes);
    const now = lane.conditions;
    if (now.dropAll && !was.dropAll) lane.cut(["request", "stream", "websocket"]);
    // A proxy that starts refusing upgrades or buffering streams takes over the next connection: the open one is cut.
    if (now.refuseWebSocket && !was.refuseWebSocket) lane.cut(["websocket"]);
    if (now.bufferSse && !was.bufferSse) lane.cut(["stream"]);
    if (!now.bufferSse && was.bufferSse) for (const relay of lane.relays.keys()) relay.release();
    return lane.status();
  }

  /** The lane, made on first use; a full table forgets a lane with nothing open, or refuses. */
  #lane(id: string): Lane {
    if (!LANE.test(id)) throw badLane();
    const known = this.#lanes.get(id);
    if (known) return known;
    if (this.#lanes.size >= this.#maxLanes) {
      const idle = [...this.#lanes.values()].find((lane) => lane.relays.size === 0);
      if (!idle) throw new LadderError("unavailable", "too many pages use the demo's network conditions at once");
      this.#lanes.delete(idle.id);
    }
    const lane = new Lane(id, this.#counter);
    this.#lanes.set(id, lane);
    return lane;
  }

  /** `/demo/net/<lane>/<hub path>` → the lane and the hub path (with its query), or null when not under the prefix. */
  #parse(url: string, allowed: (path: string) => boolean): { lane: Lane; path: string } | LadderError | null {
    if (!url.startsWith(DEMO_NET_PREFIX)) return null;
    const rest = url.slice(DEMO_NET_PREFIX.length);
    const slash = rest.indexOf("/");
    const id = slash < 0 ? rest : rest.slice(0, slash);
    if (!LANE.test(id)) return badLane();
    const path = slash < 0 ? "/" : rest.slice(slash);
    const pathname = path.split("?")[0]!;
    if (!allowed(pathname)) return new LadderError("not_found", `no hub endpoint at ${pathname} (the demo's network path relays the hub's API and /readyz)`);
    try {
      return { lane: this.#lane(id), path };
    } catch (error) {
      return error as LadderError;
    }
  }

  /** Why a new relay for `peer` through `lane` is refused, or null. (A lane that drops everything takes any: it holds nothing.) */
  #refusal(lane: Lane, peer: string): LadderError | null {
    if (!this.#server) return new LadderError("unavailable", "the demo's network path is not started");
    if (lane.conditions.dropAll) return null;
    if (this.#relays >= this.#maxRelays) return new LadderError("unavailable", "too many connections through the demo's network path");
    if ((this.#perPeer.get(peer) ?? 0) >= this.#maxPerPeer) return new LadderError("too_many_connections", `at most ${this.#maxPerPeer} connections through the demo's network path from one address`);
    return null;
  }

  /** Relays a request under the prefix; false for other paths. */
  handle(req: HubRequest, res: HubResponse): boolean {
    const hub = this.#hub;
    const paths = hub?.options.paths;
    const parsed = this.#parse(req.url ?? "/", (p) => p === "/readyz" || p === paths?.messages || p === paths?.stream || p === paths?.presence);
    if (parsed === null) return false;
    if (parsed instanceof LadderError) {
      sendError(res, parsed);
      return true;
    }
    const peer = req.socket?.remoteAddress ?? "";
    const refusal = this.#refusal(parsed.lane, peer);
    if (refusal) sendError(res, refusal);
    else relayRequest(parsed.lane.for(peer), { port: this.#port }, req, res, parsed.path);
    return true;
  }

  /** Relays a WebSocket upgrade under the prefix; false for other paths. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const websocket = this.#hub?.options.paths.websocket;
    const parsed = this.#parse(req.url ?? "/", (p) => p === websocket);
    if (parsed === null) return false;
    if (parsed instanceof LadderError) {
      endWithError(socket, parsed);
      return true;
    }
    const peer = req.socket.remoteAddress ?? "";
    const refusal = this.#refusal(parsed.lane, peer);
    if (refusal) endWithError(socket, refusal);
    else relayUpgrade(parsed.lane.for(peer), { port: this.#port }, req, socket, head, parsed.path);
    return true;
  }
}

function readChanges(body: unknown): { lane: string; changes: Partial<NetConditions> } {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new LadderError("bad_request", 'body must be an object: {"lane": "…", "refuseWebSocket"?: true|false, "bufferSse"?: …, "dropAll"?: …}');
  const changes: Partial<NetConditions> = {};
  let lane: unknown;
  for (const [key, value] of Object.entries(body)) {
    if (key === "lane") lane = value;
    else if ((CONDITIONS as readonly string[]).includes(key)) {
      if (typeof value !== "boolean") throw new LadderError("bad_request", `${key} must be true or false`);
      changes[key as keyof NetConditions] = value;
    } else throw new LadderError("bad_request", `unknown field ${JSON.stringify(key.slice(0, 40))}: the conditions are ${CONDITIONS.join(", ")}`);
  }
  if (typeof lane !== "string") throw badLane();
  return { lane, changes };
}

/**
 * The control endpoint at {@link DEMO_NETWORK_PATH} and the lanes under {@link DEMO_NET_PREFIX}; every other
 * path goes to `next`.
 */
export function demoNetworkRoutes(network: DemoNetwork, next: (req: HubRequest, res: HubResponse) => void): (req: HubRequest, res: HubResponse) => void {
  return (req, res) => {
    if (network.handle(req, res)) return;
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname !== DEMO_NETWORK_PATH) {
      next(req, res);
      return;
    }
    const method = req.method ?? "GET";
    if (method === "GET" || method === "HEAD") {
      try {
        sendJson(res, 200, network.status(url.searchParams.get("lane") ?? ""));
      } catch (error) {
        sendError(res, error as LadderError);
      }
      return;
    }
    if (method !== "POST") {
      closeAfterResponse(req, res);
      sendError(res, new LadderError("method_not_allowed", "use GET or POST"), { allow: "GET, HEAD, POST" });
      return;
    }
    readJsonBody(req, MAX_BODY)
      .then((body) => {
        const { lane, changes } = readChanges(body);
        sendJson(res, 200, network.set(lane, changes));
      })
      .catch((error: unknown) => {
        // An unread body must not linger on a kept-alive connection.
        closeAfterResponse(req, res);
        sendError(res, error instanceof LadderError ? error : new LadderError("internal", "internal error"));
      });
  };
}
