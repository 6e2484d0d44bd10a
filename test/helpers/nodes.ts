/**
 * Multi-node test kit: `ladder serve` processes, a round-robin TCP proxy in front of them (node:net), and
 * subscribers that reconnect through it and resume the way real clients do — SSE with Last-Event-ID,
 * WebSocket with a join `since` — recording every message so a test can check nothing was lost or doubled.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { connect, createServer, type Server, type Socket } from "node:net";
import { createParser } from "eventsource-parser";
import { WebSocket } from "ws";
import { fileURLToPath } from "node:url";
import { waitUntil } from "./brokers.js";

/** bin/ladder.js of this checkout, wherever the caller runs from (dist/test/helpers → the repository root). */
const LADDER_BIN = fileURLToPath(new URL("../../../bin/ladder.js", import.meta.url));

export interface LadderNode {
  readonly url: string;
  readonly port: number;
  readonly child: ChildProcess;
  /** The end of what the process wrote (its pino log lines, at the level it was started with). */
  readonly log: () => string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `ladder serve` on a free port with the given engine and (unless told not to) waits until /readyz answers 200. */
export async function startNode(engine: string, extraArgs: string[] = [], options: { waitReady?: boolean; port?: number; startTimeoutMs?: number } = {}): Promise<LadderNode> {
  const child = spawn(process.execPath, [LADDER_BIN, "serve", "--port", String(options.port ?? 0), "--engine", engine, "--log-level", "warn", "--no-demo", ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-20_000)));
  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  const started = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ladder serve did not start: ${out} ${err}`)), startTimeoutMs);
    child.stdout!.on("data", (d: Buffer) => {
      out = (out + d.toString()).slice(-20_000);
      const m = /listening on (http:\/\/[^\s"]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`ladder serve exited ${code}: ${out} ${err}`));
    });
  });
  let url: string;
  try {
    url = await started;
    if (options.waitReady !== false) await waitUntil(`${url}/readyz`, () => isReady(url), startTimeoutMs + 5000);
  } catch (error) {
    // A node that failed to start in time must not outlive the caller.
    child.kill("SIGKILL");
    throw error;
  }
  return {
    url,
    port: Number(new URL(url).port),
    child,
    log: () => `${out}${err}`,
    async kill(signal = "SIGKILL") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill(signal);
      });
    },
  };
}

export async function isReady(url: string): Promise<boolean> {
  const res = await fetch(`${url}/readyz`).catch(() => null);
  await res?.body?.cancel();
  return res?.status === 200;
}

/** One client connection through the front and its upstream, while both are open. */
interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  frozen: boolean;
}

/**
 * Round-robin TCP proxy: each new connection goes to the next backend that accepts it (one backend: a
 * cuttable link). It misbehaves on demand as a real network does: a partition, connections reset (RST) or
 * closed (FIN), or frozen — kept open but no byte forwarded either way, which only heartbeats can notice.
 */
export class RoundRobinProxy {
  readonly #server: Server;
  readonly #backends: number[];
  readonly #pairs = new Set<Pair>();
  /** Backend port of every connection made, in order. */
  readonly assignments: number[] = [];
  readonly #open = new Map<number, number>();
  #next = 0;
  #refusing = false;
  port = 0;

  constructor(backends: number[]) {
    this.#backends = [...backends];
    this.#server = createServer((client) => this.#route(client, 0));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    const address = this.#server.address();
    this.port = typeof address === "object" && address ? address.port : 0;
    return `http://127.0.0.1:${this.port}`;
  }

  /** Open connections per backend port. */
  openPerBackend(): Map<number, number> {
    return new Map(this.#open);
  }

  /** Sends new connections for backend `from` to port `to` from now on (a node restarted elsewhere). */
  replaceBackend(from: number, to: number): void {
    const i = this.#backends.indexOf(from);
    if (i >= 0) this.#backends[i] = to;
  }

  /** Connections open through the proxy (frozen ones included). */
  connections(): number {
    return this.#pairs.size;
  }

  /** Cuts every connection and, while `refusing`, drops new ones at once: a network partition. */
  partition(refusing: boolean): void {
    this.#refusing = refusing;
    if (refusing) for (const pair of [...this.#pairs]) this.#end(pair, "fin");
  }

  /** Ends a share of the live connections, `rst` (reset, as a crashed middlebox) or `fin`; returns how many. */
  cut(share: number, random: () => number, how: "rst" | "fin" = "rst"): number {
    const chosen = this.#pick(share, random);
    for (const pair of chosen) this.#end(pair, how);
    return chosen.length;
  }

  /** Stops forwarding on a share of the live connections without closing them; returns how many. */
  freeze(share: number, random: () => number): number {
    const chosen = this.#pick(share, random);
    for (const pair of chosen) {
      pair.frozen = true;
      pair.client.unpipe(pair.upstream);
      pair.upstream.unpipe(pair.client);
      pair.client.pause();
      pair.upstream.pause();
    }
    return chosen.length;
  }

  /** Closes every frozen connection (so the peers' resources are released for good). */
  releaseFrozen(): number {
    let released = 0;
    for (const pair of [...this.#pairs]) {
      if (!pair.frozen) continue;
      this.#end(pair, "fin");
      released++;
    }
    return released;
  }

  async close(): Promise<void> {
    for (const pair of [...this.#pairs]) this.#end(pair, "fin");
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #pick(share: number, random: () => number): Pair[] {
    return [...this.#pairs].filter((pair) => !pair.frozen && random() < share);
  }

  #end(pair: Pair, how: "rst" | "fin"): void {
    for (const socket of [pair.client, pair.upstream]) {
      if (how === "rst" && !socket.destroyed && !socket.connecting) socket.resetAndDestroy();
      else socket.destroy();
    }
    this.#pairs.delete(pair);
  }

  #route(client: Socket, tried: number): void {
    if (tried >= this.#backends.length || this.#refusing) {
      client.destroy();
      return;
    }
    const port = this.#backends[this.#next++ % this.#backends.length]!;
    const upstream = connect({ host: "127.0.0.1", port });
    const pair: Pair = { client, upstream, frozen: false };
    let connected = false;
    client.pause();
    upstream.once("connect", () => {
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      connected = true;
      this.#pairs.add(pair);
      this.assignments.push(port);
      this.#open.set(port, (this.#open.get(port) ?? 0) + 1);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on("error", () => {
      if (!connected) this.#route(client, tried + 1);
    });
    upstream.once("close", () => {
      if (!connected) return;
      this.#pairs.delete(pair);
      this.#open.set(port, (this.#open.get(port) ?? 1) - 1);
      client.destroy();
    });
    client.on("error", () => upstream.destroy());
    client.once("close", () => {
      if (connected) upstream.destroy();
    });
  }
}

export interface Received {
  readonly id: string;
  readonly data: unknown;
}

/** A subscriber that keeps reconnecting and resuming until stopped. */
export interface Subscriber {
  readonly kind: "sse" | "ws";
  readonly received: Received[];
  readonly gaps: unknown[];
  /** How many times it (re)connected and became live. */
  readonly connects: () => number;
  waitLive(count?: number, timeoutMs?: number): Promise<void>;
  waitFor(count: number, timeoutMs?: number): Promise<void>;
  stop(): void;
}

const RECONNECT_MS = 100;

/** SSE through fetch and eventsource-parser, resuming with Last-Event-ID like EventSource does. */
export function sseSubscriber(base: string, channel: string): Subscriber {
  const received: Received[] = [];
  const gaps: unknown[] = [];
  let lastEventId: string | null = null;
  let live = 0;
  let stopped = false;
  let controller = new AbortController();
  const run = async (): Promise<void> => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers: Record<string, string> = { accept: "text/event-stream" };
        if (lastEventId !== null) headers["last-event-id"] = lastEventId;
        const res = await fetch(`${base}/api/stream?channel=${encodeURIComponent(channel)}`, { headers, signal: controller.signal });
        if (res.status === 200 && res.body) {
          const parser = createParser({
            onEvent: (event) => {
              if (event.id !== undefined) lastEventId = event.id;
              if (event.event === "ready") live++;
              else if (event.event === "gap") gaps.push(JSON.parse(event.data));
              else if (event.event === undefined && event.data !== "") received.push({ id: event.id!, data: JSON.parse(event.data) });
            },
          });
          const decoder = new TextDecoder();
          const reader = res.body.getReader();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            parser.feed(decoder.decode(value, { stream: true }));
          }
        } else {
          await res.body?.cancel();
        }
      } catch {
        /* disconnected: reconnect below */
      }
      if (!stopped) await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  };
  void run();
  return subscriber("sse", received, gaps, () => live, () => {
    stopped = true;
    controller.abort();
  });
}

/** WebSocket joining the room, and on reconnect joining again with `since` = the last id it saw. */
export function wsSubscriber(base: string, channel: string): Subscriber {
  const received: Received[] = [];
  const gaps: unknown[] = [];
  let since: string | null = null;
  let live = 0;
  let stopped = false;
  let socket: WebSocket | null = null;
  const run = async (): Promise<void> => {
    while (!stopped) {
      await new Promise<void>((resolve) => {
        const ws = new WebSocket(`${base.replace(/^http/, "ws")}/api/ws`);
        socket = ws;
        ws.on("open", () => ws.send(JSON.stringify(since === null ? { type: "join", room: channel } : { type: "join", room: channel, since })));
        ws.on("message", (raw) => {
          const frame = JSON.parse(String(raw)) as { type: string; id?: string; data?: unknown; cursor?: string };
          if (frame.type === "message") {
            received.push({ id: frame.id!, data: frame.data });
            since = frame.id!;
          } else if (frame.type === "joined") {
            if (since === null) since = frame.cursor!;
            live++;
          } else if (frame.type === "gap") {
            gaps.push(frame);
          }
        });
        ws.on("error", () => {});
        ws.on("close", () => resolve());
      });
      if (!stopped) await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  };
  void run();
  return subscriber("ws", received, gaps, () => live, () => {
    stopped = true;
    socket?.terminate();
  });
}

function subscriber(kind: "sse" | "ws", received: Received[], gaps: unknown[], connects: () => number, stop: () => void): Subscriber {
  return {
    kind,
    received,
    gaps,
    connects,
    waitLive: (count = 1, timeoutMs = 10_000) => waitUntil(`${kind} subscriber live ${count} times`, () => connects() >= count, timeoutMs, 20),
    waitFor: (count, timeoutMs = 15_000) =>
      waitUntil(`${kind} subscriber to have ${count} messages (has ${received.length})`, () => received.length >= count, timeoutMs, 20),
    stop,
  };
}

/** Publishes over HTTP; returns the id, or throws with the status for anything but 201. */
export async function publishTo(base: string, channel: string, data: unknown): Promise<string> {
  const res = await fetch(`${base}/api/messages`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  const body = await res.text();
  if (res.status !== 201) throw Object.assign(new Error(`publish answered ${res.status}: ${body}`), { status: res.status });
  return (JSON.parse(body) as { id: string }).id;
}
