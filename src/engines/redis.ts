/**
 * Redis engine: many hub nodes share one Redis (or Redis Cluster). Each channel is a stream
 * `<prefix>{<channel>}:log` holding its history, with Redis' own stream ids as message ids; a publish is
 * one script (append, trim, announce on the sharded pub/sub channel `<prefix>{<channel>}:live`). The hash
 * tag keeps a channel's keys and shard channel in one slot, so every script runs on a cluster.
 *
 * Live messages carry the previous id of their channel: {@link LiveFeeds} notices one that was missed
 * (while a connection was down, during a slot move) and reads it from the stream, and after a
 * reconnect every subscribed channel catches up from the last id this node delivered.
 *
 * The client library is loaded on first use, so importing this module costs nothing.
 */
import type { Logger } from "pino";
import { LadderError, type Message, type MessageId } from "../protocol/index.js";
import { DEDUPE_WINDOW_MS, type Engine, type HistoryLimits, type MessageListener, type Published, type ReadResult } from "./engine.js";
import { LiveFeeds } from "./live-feeds.js";
import { StartGate } from "./start-gate.js";
import { PUBLISH_SCRIPT, READ_SCRIPT, type RedisScript } from "./redis-scripts.js";

export interface RedisEngineOptions extends HistoryLimits {
  /**
   * `redis://[user:pass@]host:port[/db]` or `rediss://…`. Query parameters: `prefix` (key prefix, default
   * `ladder:`), `cluster` (`yes`/`no`; by default detected with INFO).
   */
  readonly url: string;
  readonly prefix?: string;
  readonly cluster?: boolean;
  /** A command that takes longer fails (and a publish answers 503). Default 2000 ms. */
  readonly commandTimeoutMs?: number;
  /**
   * For this long after the engine is made, a read or subscribe waits for the first connection instead
   * of failing (a hub's first requests race its broker connection). Default 5000 ms.
   */
  readonly startTimeoutMs?: number;
  /** Overrides the broker's clock for ids and ages (tests move time). */
  readonly now?: () => number;
  readonly logger?: Logger;
}

type ShardListener = (message: string, channel: string) => void;

/** The part of node-redis' client this engine uses (its own generic types are heavy to thread through). */
interface NodeRedisClient {
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  duplicate(): NodeRedisClient;
  sendCommand(args: string[], options?: { timeout?: number }): Promise<unknown>;
  sSubscribe(channel: string, listener: ShardListener): Promise<void>;
  sUnsubscribe(channel: string, listener?: ShardListener): Promise<void>;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  close(): Promise<void>;
  destroy(): void;
}

interface NodeRedisCluster {
  connect(): Promise<unknown>;
  sendCommand(firstKey: string, isReadonly: boolean, args: string[], options?: { timeout?: number }): Promise<unknown>;
  sSubscribe(channel: string, listener: ShardListener): Promise<void>;
  sUnsubscribe(channel: string, listener?: ShardListener): Promise<void>;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  readonly masters: readonly unknown[];
  nodeClient(node: unknown): Promise<NodeRedisClient>;
  close(): Promise<void>;
  destroy(): void;
}

/** One Redis or a cluster, behind the few calls the engine makes. */
interface Backend {
  readonly cluster: boolean;
  send(key: string, args: string[]): Promise<unknown>;
  sSubscribe(channel: string, listener: ShardListener): Promise<void>;
  sUnsubscribe(channel: string, listener: ShardListener): Promise<void>;
  ready(): boolean;
  close(): Promise<void>;
}

const DEFAULT_PREFIX = "ladder:";
const PROBE_INTERVAL_MS = 500;
/** A follow-up catch-up after a cluster recovers, for a shard subscription that came back a moment later. */
const FOLLOW_UP_CATCH_UP_MS = 1000;

/** Parses the engine URL: our own query parameters out, the rest for node-redis. */
export function parseRedisUrl(url: string): { url: string; prefix?: string; cluster?: boolean } {
  const parsed = new URL(url);
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") throw new TypeError(`not a redis URL: ${parsed.protocol}`);
  const prefix = parsed.searchParams.get("prefix") ?? undefined;
  const clusterParam = parsed.searchParams.get("cluster");
  parsed.search = "";
  const cluster = clusterParam === null ? undefined : /^(1|yes|true)$/i.test(clusterParam);
  return { url: parsed.toString(), ...(prefix !== undefined ? { prefix } : {}), ...(cluster !== undefined ? { cluster } : {}) };
}

export class RedisEngine implements Engine {
  readonly name = "redis";
  readonly #options: RedisEngineOptions;
  readonly #url: string;
  readonly #prefix: string;
  readonly #clusterOption: boolean | undefined;
  readonly #ttlMs: number;
  readonly #timeoutMs: number;
  readonly #feeds: LiveFeeds;
  readonly #shardListeners = new Map<string, ShardListener>();
  readonly #logger: Pick<Logger, "info" | "warn">;
  #backend: Backend | null = null;
  #startingClients: Array<{ destroy(): void }> = [];
  readonly #gate: StartGate;
  #closed = false;

  constructor(options: RedisEngineOptions) {
    const fromUrl = parseRedisUrl(options.url);
    this.#options = options;
    this.#logger = options.logger ?? { info: () => {}, warn: () => {} };
    this.#url = fromUrl.url;
    this.#prefix = options.prefix ?? fromUrl.prefix ?? DEFAULT_PREFIX;
    if (/[{}]/.test(this.#prefix)) throw new TypeError("redis key prefix must not contain { or } (they mark the hash tag)");
    this.#clusterOption = options.cluster ?? fromUrl.cluster;
    // A channel's key outlives its messages (maxAgeMs) so that its trim horizon is remembered; once it
    // has expired, the read script knows every id it held is at least this old.
    this.#ttlMs = options.maxAgeMs * 2 + 60_000;
    this.#timeoutMs = options.commandTimeoutMs ?? 2000;
    this.#feeds = new LiveFeeds({
      read: (channel, since, limit) => this.read(channel, since, limit),
      live: { open: (channel) => this.#openLive(channel), close: (channel) => this.#closeLive(channel) },
      logger: this.#logger,
    });
    this.#gate = new StartGate(() => this.#start(), options.startTimeoutMs ?? 5000);
  }

  ready(): boolean {
    return !this.#closed && this.#backend !== null && this.#backend.ready();
  }

  /** Resolves once connected (for callers that want to wait, e.g. tests and start-up checks). */
  async whenReady(timeoutMs = this.#options.startTimeoutMs ?? 5000): Promise<void> {
    await this.#connected(timeoutMs);
  }

  async publish(channel: string, data: unknown, _encodedBytes?: number, key?: string): Promise<Published> {
    const backend = this.#readyBackend();
    const args = [this.#liveChannel(channel), String(this.#options.maxCount), String(this.#options.maxAgeMs), String(this.#ttlMs), this.#nowArg(), JSON.stringify(data), String(DEDUPE_WINDOW_MS)];
    // The idempotency key shares the channel's hash tag, so the script touches one slot on a cluster too.
    const keys: [string, ...string[]] = key === undefined ? [this.#logKey(channel)] : [this.#logKey(channel), `${this.#prefix}{${channel}}:key:${key}`];
    const reply = (await this.#run(backend, PUBLISH_SCRIPT, keys, args)) as [string, string, number?];
    const message = { id: reply[0], channel, data, time: Number(reply[1]) };
    return reply[2] === 1 ? { ...message, duplicate: true } : message;
  }

  async read(channel: string, since: MessageId | null, limit: number): Promise<ReadResult> {
    const backend = await this.#connected();
    const args = [since ?? "", String(Math.max(0, limit)), String(this.#options.maxCount), String(this.#options.maxAgeMs), String(this.#ttlMs), this.#nowArg()];
    const reply = (await this.#run(backend, READ_SCRIPT, [this.#logKey(channel)], args)) as string[];
    const [reason, resume, cursor] = reply as [string, string, string];
    const messages: Message[] = [];
    for (let i = 3; i + 2 < reply.length; i += 3) {
      messages.push({ id: reply[i]!, channel, data: JSON.parse(reply[i + 2]!) as unknown, time: Number(reply[i + 1]) });
    }
    const gap = reason === "trimmed" || reason === "unknown" ? { channel, reason, since: since!, resume } as const : null;
    return { messages, gap, cursor };
  }

  async subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    await this.#connected();
    return this.#feeds.subscribe(channel, listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#feeds.close();
    this.#destroyStarting();
    const backend = this.#backend;
    this.#backend = null;
    await backend?.close();
  }

  #logKey(channel: string): string {
    return `${this.#prefix}{${channel}}:log`;
  }

  #liveChannel(channel: string): string {
    return `${this.#prefix}{${channel}}:live`;
  }

  #nowArg(): string {
    return this.#options.now ? String(Math.floor(this.#options.now())) : "";
  }

  #readyBackend(): Backend {
    const backend = this.#backend;
    if (this.#closed) throw new LadderError("unavailable", "redis engine is closed");
    if (!backend || !backend.ready()) throw new LadderError("unavailable", "redis is unreachable; not accepting publishes");
    return backend;
  }

  /** The backend once connected. Waits for the first connection only; afterwards an outage fails at once. */
  async #connected(timeoutMs?: number): Promise<Backend> {
    await this.#gate.wait(this.#backend !== null || this.#closed, timeoutMs);
    return this.#readyBackend();
  }

  /** Runs a script by its hash, loading it on a NOSCRIPT answer (a restarted or new node). */
  async #run(backend: Backend, script: RedisScript, keys: readonly [string, ...string[]], args: string[]): Promise<unknown> {
    const [key] = keys;
    try {
      try {
        return await backend.send(key, ["EVALSHA", script.sha, String(keys.length), ...keys, ...args]);
      } catch (error) {
        if (!String((error as Error).message).startsWith("NOSCRIPT")) throw error;
        return await backend.send(key, ["EVAL", script.source, String(keys.length), ...keys, ...args]);
      }
    } catch (error) {
      throw new LadderError("unavailable", `redis: ${(error as Error).message}`);
    }
  }

  async #openLive(channel: string): Promise<void> {
    const backend = this.#readyBackend();
    const listener: ShardListener = (text) => this.#onLive(channel, text);
    this.#shardListeners.set(channel, listener);
    try {
      await backend.sSubscribe(this.#liveChannel(channel), listener);
    } catch (error) {
      throw new LadderError("unavailable", `redis: cannot subscribe: ${(error as Error).message}`);
    }
  }

  #closeLive(channel: string): void {
    const listener = this.#shardListeners.get(channel);
    this.#shardListeners.delete(channel);
    if (!listener || !this.#backend) return;
    this.#backend.sUnsubscribe(this.#liveChannel(channel), listener).catch(() => {});
  }

  /** `<id> <prev> <time> <data JSON>`, as the publish script announces it. */
  #onLive(channel: string, text: string): void {
    const a = text.indexOf(" ");
    const b = text.indexOf(" ", a + 1);
    const c = text.indexOf(" ", b + 1);
    if (a < 0 || b < 0 || c < 0) return;
    let data: unknown;
    try {
      data = JSON.parse(text.slice(c + 1));
    } catch {
      return;
    }
    const message: Message = { id: text.slice(0, a), channel, data, time: Number(text.slice(b + 1, c)) };
    this.#feeds.deliver(channel, message, text.slice(a + 1, b));
  }

  /** Connects, retrying until it works or the engine is closed: a node may start before its broker. */
  async #start(): Promise<void> {
    for (let delay = 100; !this.#closed; delay = Math.min(delay * 2, 2000)) {
      try {
        this.#backend = await this.#connect();
        if (this.#closed) await this.#backend.close();
        else this.#logger.info({ engine: "redis", cluster: this.#backend.cluster }, "redis engine connected");
        return;
      } catch (error) {
        this.#destroyStarting();
        if (this.#closed) return;
        this.#logger.warn({ engine: "redis", err: error }, "redis engine cannot start yet; retrying");
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
      }
    }
  }

  async #connect(): Promise<Backend> {
    const redis = await import("redis");
    const socket = {
      connectTimeout: 2000,
      reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 1000),
    };
    const first = this.#starting(redis.createClient({ url: this.#url, disableOfflineQueue: true, socket }) as unknown as NodeRedisClient);
    this.#watch(first, "main");
    // connect() keeps trying (reconnectStrategy) until Redis answers.
    await first.connect();
    const cluster = this.#clusterOption ?? (await this.#isCluster(first));
    if (!cluster) {
      const sub = this.#starting(first.duplicate());
      this.#watch(sub, "subscriber");
      await sub.connect();
      this.#startingClients = [];
      return this.#single(first, sub);
    }
    first.destroy();
    const client = this.#starting(
      redis.createCluster({ rootNodes: [{ url: this.#url }], defaults: { disableOfflineQueue: true, socket } }) as unknown as NodeRedisCluster,
    );
    const backend = await this.#connectCluster(client);
    this.#startingClients = [];
    return backend;
  }

  /** Clients being connected, destroyed if the engine closes (or a start attempt fails) meanwhile. */
  #starting<T extends { destroy(): void }>(client: T): T {
    this.#startingClients.push(client);
    return client;
  }

  #destroyStarting(): void {
    for (const client of this.#startingClients.splice(0)) {
      try {
        client.destroy();
      } catch {
        /* already closed */
      }
    }
  }

  async #isCluster(client: NodeRedisClient): Promise<boolean> {
    const info = String(await client.sendCommand(["INFO", "cluster"], { timeout: this.#timeoutMs }));
    return /cluster_enabled:1/.test(info);
  }

  /** Logs connection trouble once per outage, and catches every feed up when a connection is back. */
  #watch(client: NodeRedisClient, role: string): void {
    let readyBefore = false;
    let down = false;
    client.on("error", (error) => {
      if (down || this.#closed) return;
      down = true;
      this.#logger.warn({ engine: "redis", role, err: error }, "redis connection lost; publishes answer 503 until it is back");
    });
    client.on("ready", () => {
      if (down) this.#logger.info({ engine: "redis", role }, "redis connection back; catching up subscribers");
      down = false;
      // node-redis resubscribes before it reports ready, so a read now cannot race the subscription.
      if (readyBefore) this.#feeds.catchUpAll();
      readyBefore = true;
    });
  }

  #single(client: NodeRedisClient, sub: NodeRedisClient): Backend {
    const options = { timeout: this.#timeoutMs };
    return {
      cluster: false,
      send: (_key, args) => client.sendCommand(args, options),
      sSubscribe: (channel, listener) => sub.sSubscribe(channel, listener),
      sUnsubscribe: (channel, listener) => sub.sUnsubscribe(channel, listener),
      ready: () => client.isReady && sub.isReady,
      close: async () => {
        await Promise.allSettled([client.close(), sub.close()]);
      },
    };
  }

  /**
   * node-redis' cluster client reports trouble per node but not recovery, so health is probed: after
   * a node error, PING every master until all answer, then catch the feeds up.
   */
  async #connectCluster(client: NodeRedisCluster): Promise<Backend> {
    let healthy = false;
    let probing: NodeJS.Timeout | null = null;
    const options = { timeout: this.#timeoutMs };
    const probe = async (): Promise<void> => {
      probing = null;
      if (this.#closed) return;
      try {
        await Promise.all(client.masters.map(async (master) => (await client.nodeClient(master)).sendCommand(["PING"], options)));
        healthy = true;
        this.#logger.info({ engine: "redis" }, "redis cluster reachable; catching up subscribers");
        this.#feeds.catchUpAll();
        setTimeout(() => this.#feeds.catchUpAll(), FOLLOW_UP_CATCH_UP_MS).unref();
      } catch {
        schedule();
      }
    };
    const schedule = (): void => {
      if (probing || this.#closed) return;
      probing = setTimeout(() => void probe(), PROBE_INTERVAL_MS);
      probing.unref();
    };
    const suspect = (): void => {
      if (healthy) this.#logger.warn({ engine: "redis" }, "redis cluster node unreachable; publishes answer 503 until it is back");
      healthy = false;
      schedule();
    };
    client.on("node-error", suspect);
    client.on("node-reconnecting", suspect);
    client.on("error", () => {});
    await client.connect();
    healthy = true;
    return {
      cluster: true,
      send: (key, args) => client.sendCommand(key, false, args, options),
      sSubscribe: (channel, listener) => client.sSubscribe(channel, listener),
      sUnsubscribe: (channel, listener) => client.sUnsubscribe(channel, listener),
      ready: () => healthy,
      close: async () => {
        if (probing) clearTimeout(probing);
        await client.close().catch(() => client.destroy());
      },
    };
  }
}
