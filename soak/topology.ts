/**
 * What the soak runs against: `ladder serve` child processes on fixed loopback ports (so a restarted node
 * comes back where the front expects it), the round-robin front the clients connect through, and for broker
 * engines a private redis-server or nats-server the soak may restart (or a broker given by URL, which it
 * never restarts). Also each node's resource readings: open connections, fds and heap.
 */
import { readdirSync } from "node:fs";
import { deleteNatsStreams, deleteRedisKeys, freePort, startNats, startRedis, waitUntil, type BrokerProcess } from "../test/helpers/brokers.js";
import { isReady, RoundRobinProxy, startNode, type LadderNode } from "../test/helpers/nodes.js";

export type EngineKind = "memory" | "redis" | "nats";

export interface NodeStats {
  readonly connections: number;
  readonly fds: number;
  readonly heapBytes: number;
}

export interface NodeSlot {
  readonly name: string;
  port: number;
  node: LadderNode;
  /** Readings taken when the node first became ready, before any load. */
  baseline: NodeStats;
  restarts: number;
}

export interface TopologyOptions {
  readonly engine: EngineKind;
  readonly nodes: number;
  readonly historySize: number;
  readonly maxBufferedBytes: number;
  /** A broker to use instead of a private one (it is never restarted). */
  readonly brokerUrl?: string;
  readonly tag: string;
}

const DRAIN_LIMIT_MS = 15_000;
/** A busy machine can take a while to start a node; a fault waits this long before it counts as failed. */
const START_TIMEOUT_MS = 30_000;

export class Topology {
  readonly slots: NodeSlot[] = [];
  front!: RoundRobinProxy;
  url = "";
  broker: BrokerProcess | null = null;
  #engineUrl = "memory";

  constructor(readonly options: TopologyOptions) {}

  get restartableBroker(): boolean {
    return this.broker !== null;
  }

  async start(): Promise<void> {
    const { engine, tag, brokerUrl } = this.options;
    if (engine !== "memory") {
      if (!brokerUrl) this.broker = engine === "redis" ? await startRedis() : await startNats();
      const base = brokerUrl ?? this.broker!.url;
      this.#engineUrl = engine === "redis" ? `${base}?prefix=${tag}:` : `${base}?stream=${tag.toUpperCase()}&prefix=${tag}`;
    }
    for (let i = 0; i < this.options.nodes; i++) {
      const port = await freePort();
      const node = await startNode(this.#engineUrl, this.#args(), { port, startTimeoutMs: START_TIMEOUT_MS });
      this.slots.push({ name: `node${i + 1}`, port, node, baseline: await this.stats(node), restarts: 0 });
    }
    this.front = new RoundRobinProxy(this.slots.map((s) => s.port));
    this.url = await this.front.listen();
  }

  /** Stops a node (SIGKILL, or SIGTERM and its drain) and starts it again on the same port; resolves when ready. */
  async restart(slot: NodeSlot, signal: "SIGKILL" | "SIGTERM", downMs: number, respawning?: () => void): Promise<void> {
    const old = slot.node;
    const drained = old.kill(signal);
    const limit = new Promise<void>((resolve) => setTimeout(resolve, DRAIN_LIMIT_MS).unref());
    await Promise.race([drained, limit]);
    await old.kill("SIGKILL");
    await new Promise((resolve) => setTimeout(resolve, downMs));
    for (let attempt = 1; ; attempt++) {
      try {
        respawning?.();
        slot.node = await startNode(this.#engineUrl, this.#args(), { port: slot.port, startTimeoutMs: START_TIMEOUT_MS });
        break;
      } catch (error) {
        if (attempt >= 3) throw error;
        if (!/EADDRINUSE/.test(String(error))) continue;
        // Someone's outgoing connection took the port while the node was down: come back on another one.
        const port = await freePort();
        this.front.replaceBackend(slot.port, port);
        slot.port = port;
      }
    }
    slot.restarts++;
  }

  /** Stops the private broker, waits, starts it again, and waits until every node is ready. */
  async restartBroker(signal: "SIGKILL" | "SIGTERM", downMs: number): Promise<void> {
    if (!this.broker) throw new Error("no private broker to restart");
    await this.broker.stop(signal);
    await new Promise((resolve) => setTimeout(resolve, downMs));
    await this.broker.start();
    await this.allReady();
  }

  async allReady(timeoutMs = 30_000): Promise<void> {
    await waitUntil("every node ready", async () => (await Promise.all(this.slots.map((s) => isReady(s.node.url)))).every(Boolean), timeoutMs, 100);
  }

  async stats(node: LadderNode): Promise<NodeStats> {
    const res = await fetch(`${node.url}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    let connections = 0;
    let heapBytes = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith("ladder_connections{")) connections += Number(line.slice(line.lastIndexOf(" ") + 1));
      else if (line.startsWith("nodejs_heap_size_used_bytes ")) heapBytes = Number(line.slice(line.lastIndexOf(" ") + 1));
    }
    // -1: not Linux (fds are not checked); an error on Linux is real and surfaces.
    const fds = process.platform === "linux" ? readdirSync(`/proc/${node.child.pid}/fd`).length : -1;
    return { connections, fds, heapBytes };
  }

  async stop(): Promise<void> {
    await this.front?.close().catch(() => {});
    await Promise.all(this.slots.map((s) => s.node.kill("SIGTERM")));
    if (this.broker) await this.broker.destroy();
    else if (this.options.brokerUrl && this.options.engine === "redis") await deleteRedisKeys(this.options.brokerUrl, `${this.options.tag}:`).catch(() => {});
    else if (this.options.brokerUrl && this.options.engine === "nats") await deleteNatsStreams(this.options.brokerUrl, this.options.tag.toUpperCase()).catch(() => {});
  }

  #args(): string[] {
    return [
      "--metrics",
      "--history-size", String(this.options.historySize),
      "--heartbeat", "2",
      "--ws-timeout", "8",
      "--max-buffered-bytes", String(this.options.maxBufferedBytes),
    ];
  }
}
