/**
 * The soak's load: publishers at a steady rate over HTTP and WebSocket (every ack bound in the ledger), and
 * subscribers on every rung — Ladder's own client (auto and each fixed rung) and raw protocol loops (SSE with
 * Last-Event-ID, long-poll and poll with `since`, a WebSocket joining every channel that can stop reading).
 * Every subscriber reports what it receives to the ledger, which judges it.
 */
import { createParser } from "eventsource-parser";
import { WebSocket } from "ws";
import { createClient, type LadderClient, type TransportName, type WebSocketConstructor } from "../src/client/index.js";
import type { Ledger, Payload, Track } from "./ledger.js";

/** Client settings that bound how long a dead connection goes unnoticed (see FREEZE_DETECT_MS). */
export const CLIENT_TIMING = {
  heartbeatTimeoutMs: 6000,
  openTimeoutMs: 6000,
  longPollWaitSeconds: 5,
  /** The client's ceiling on reconnect backoff: below the 10 s recovery bound the soak checks. */
  backoffMaxMs: 4000,
};
/** A frozen connection is noticed by then at the latest: a long-poll's hold plus the client's 10 s grace. */
export const FREEZE_DETECT_MS = CLIENT_TIMING.longPollWaitSeconds * 1000 + 10_000;
const PUBLISH_TIMEOUT_MS = 5000;
const RAW_RECONNECT_MS = 300;
const RAW_SILENCE_MS = CLIENT_TIMING.heartbeatTimeoutMs;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface ChannelLoad {
  readonly name: string;
  /** Publishes per second. */
  readonly rate: number;
  /** Bytes of padding in each message (makes a slow consumer's buffer fill). */
  readonly pad: number;
}

/** Current cursor of a channel (`since=now`), the start every subscriber is judged from. */
export async function headCursor(base: string, channel: string): Promise<string> {
  const res = await fetch(`${base}/api/messages?channel=${encodeURIComponent(channel)}&since=now`, { signal: AbortSignal.timeout(5000) });
  await res.body?.cancel();
  const cursor = res.headers.get("ladder-cursor");
  if (res.status !== 200 || !cursor) throw new Error(`since=now answered ${res.status}`);
  return cursor;
}

/** Publishes at a steady rate on every channel, alternating HTTP and one WebSocket; stops on `stop()`. */
export class Publishers {
  #counter = 0;
  #stopped = false;
  #timers: ReturnType<typeof setInterval>[] = [];
  #ws: WebSocket | null = null;
  #wsOpen = false;
  readonly #pending = new Map<string, { channel: string; key: string; timer: ReturnType<typeof setTimeout> }>();
  readonly #inflight = new Set<Promise<void>>();

  constructor(
    readonly base: string,
    readonly ledger: Ledger,
    readonly prefix: string,
  ) {}

  start(channels: readonly ChannelLoad[]): void {
    this.#connectWs();
    for (const channel of channels) {
      let n = 0;
      this.#timers.push(setInterval(() => void this.publish(channel, n++ % 2 === 0 ? "http" : "ws"), 1000 / channel.rate));
    }
  }

  /** One publish; the ledger learns the attempt, then its id or its failure. */
  publish(channel: ChannelLoad, via: "http" | "ws" = "http"): Promise<void> {
    const key = `${this.prefix}${++this.#counter}`;
    const payload: Payload = channel.pad > 0 ? { k: key, t: Date.now(), pad: "x".repeat(channel.pad) } : { k: key, t: Date.now() };
    this.ledger.attempt(key);
    if (via === "ws" && this.#wsOpen && this.#ws) return this.#publishWs(this.#ws, channel.name, key, payload);
    const done = this.#publishHttp(channel.name, key, payload);
    this.#inflight.add(done);
    void done.finally(() => this.#inflight.delete(done));
    return done;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const timer of this.#timers) clearInterval(timer);
    await Promise.allSettled([...this.#inflight]);
    const deadline = Date.now() + PUBLISH_TIMEOUT_MS + 500;
    while (this.#pending.size > 0 && Date.now() < deadline) await sleep(50);
    this.#ws?.terminate();
  }

  async #publishHttp(channel: string, key: string, payload: Payload): Promise<void> {
    try {
      const res = await fetch(`${this.base}/api/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ channel, data: payload }),
        signal: AbortSignal.timeout(PUBLISH_TIMEOUT_MS),
      });
      const body = await res.text();
      if (res.status === 201) this.ledger.acked(channel, key, (JSON.parse(body) as { id: string }).id);
      else this.ledger.failed(channel);
    } catch {
      this.ledger.failed(channel);
    }
  }

  #publishWs(ws: WebSocket, channel: string, key: string, payload: Payload): Promise<void> {
    const timer = setTimeout(() => {
      if (!this.#pending.delete(key)) return;
      this.ledger.failed(channel);
      ws.terminate();
    }, PUBLISH_TIMEOUT_MS);
    this.#pending.set(key, { channel, key, timer });
    ws.send(JSON.stringify({ type: "publish", room: channel, data: payload, ref: key }));
    return Promise.resolve();
  }

  #connectWs(): void {
    if (this.#stopped) return;
    const ws = new WebSocket(`${this.base.replace(/^http/, "ws")}/api/ws`);
    this.#ws = ws;
    ws.on("open", () => (this.#wsOpen = true));
    ws.on("message", (raw) => {
      const frame = JSON.parse(String(raw)) as { type: string; ref?: string; id?: string };
      if ((frame.type !== "ack" && frame.type !== "error") || typeof frame.ref !== "string") return;
      const pending = this.#pending.get(frame.ref);
      if (!pending) return;
      this.#pending.delete(frame.ref);
      clearTimeout(pending.timer);
      if (frame.type === "ack" && frame.id) this.ledger.acked(pending.channel, pending.key, frame.id);
      else this.ledger.failed(pending.channel);
    });
    ws.on("error", () => {});
    ws.on("close", () => {
      this.#wsOpen = false;
      for (const [key, pending] of this.#pending) {
        if (pending.timer && this.#ws === ws) {
          clearTimeout(pending.timer);
          this.#pending.delete(key);
          this.ledger.failed(pending.channel);
        }
      }
      if (!this.#stopped) setTimeout(() => this.#connectWs(), RAW_RECONNECT_MS);
    });
  }
}

/** A subscriber the soak can stop (and, for the slow consumer, pause). */
export interface SoakSubscriber {
  readonly name: string;
  readonly tracks: readonly Track[];
  stop(): void;
}

/** Ladder's client on one rung (or auto), subscribed to every channel from its start cursor. */
export function clientSubscriber(base: string, ledger: Ledger, transport: "auto" | TransportName, starts: Map<string, string>, tag = ""): SoakSubscriber {
  const name = `client:${transport}${tag}`;
  const client: LadderClient = createClient({
    url: base,
    transport,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    heartbeatTimeoutMs: CLIENT_TIMING.heartbeatTimeoutMs,
    openTimeoutMs: CLIENT_TIMING.openTimeoutMs,
    longPollWaitSeconds: CLIENT_TIMING.longPollWaitSeconds,
    backoff: { maxMs: CLIENT_TIMING.backoffMaxMs },
  });
  client.on("error", () => {});
  const tracks = [...starts].map(([channel, start]) => {
    const track = ledger.track(name, channel, start);
    const sub = client.subscribe(channel, { since: start });
    sub.on("message", (m) => ledger.message(track, m.id, m.data));
    sub.on("gap", (g) => ledger.gap(track, g));
    return track;
  });
  return { name, tracks, stop: () => client.close() };
}

/** A raw subscriber's loop: one attempt at a time, each with its own abort, until stopped. */
function rawLoop(name: string, track: Track, attempt: (controller: AbortController) => Promise<number>): SoakSubscriber {
  let stopped = false;
  let controller = new AbortController();
  void (async () => {
    while (!stopped) {
      controller = new AbortController();
      let pauseMs = RAW_RECONNECT_MS;
      try {
        pauseMs = await attempt(controller);
      } catch {
        /* cut, reset, silent or timed out: again */
      }
      if (!stopped) await sleep(pauseMs);
    }
  })();
  return {
    name,
    tracks: [track],
    stop() {
      stopped = true;
      controller.abort();
    },
  };
}

/** SSE through fetch and eventsource-parser, resuming with Last-Event-ID; a silent stream is dropped. */
export function sseSubscriber(base: string, ledger: Ledger, channel: string, start: string): SoakSubscriber {
  const name = `raw-sse:${channel}`;
  const track = ledger.track(name, channel, start);
  let lastEventId = start;
  return rawLoop(name, track, async (controller) => {
    let silence: ReturnType<typeof setTimeout> | undefined;
    const alive = (): void => {
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort(), RAW_SILENCE_MS);
    };
    try {
      alive();
      const res = await fetch(`${base}/api/stream?channel=${encodeURIComponent(channel)}`, {
        headers: { accept: "text/event-stream", "last-event-id": lastEventId },
        signal: controller.signal,
      });
      if (res.status !== 200 || !res.body) {
        await res.body?.cancel();
        return RAW_RECONNECT_MS;
      }
      const parser = createParser({
        onEvent: (event) => {
          if (event.event === "gap") ledger.gap(track, JSON.parse(event.data) as { reason: string; since: string; resume: string });
          else if (event.event === undefined && event.data !== "") ledger.message(track, event.id!, JSON.parse(event.data));
          if (event.id !== undefined) lastEventId = event.id;
        },
      });
      const decoder = new TextDecoder();
      const reader = res.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        alive();
        parser.feed(decoder.decode(value, { stream: true }));
      }
      return RAW_RECONNECT_MS;
    } finally {
      clearTimeout(silence);
    }
  });
}

/** The guide's poll loop (`wait` = 0) or long-poll loop, resuming from `Ladder-Cursor`. */
export function pollSubscriber(base: string, ledger: Ledger, channel: string, start: string, waitSeconds: number, intervalMs: number): SoakSubscriber {
  const name = `raw-${waitSeconds > 0 ? "long-poll" : "poll"}:${channel}`;
  const track = ledger.track(name, channel, start);
  let since = start;
  return rawLoop(name, track, async (controller) => {
    const timer = setTimeout(() => controller.abort(), waitSeconds * 1000 + 10_000);
    try {
      const wait = waitSeconds > 0 ? `&wait=${waitSeconds}` : "";
      const res = await fetch(`${base}/api/messages?channel=${encodeURIComponent(channel)}&since=${encodeURIComponent(since)}${wait}`, { signal: controller.signal });
      const body = await res.text();
      if (res.status !== 200) return RAW_RECONNECT_MS;
      const gap = res.headers.get("ladder-gap");
      if (gap) ledger.gap(track, JSON.parse(gap) as { reason: string; since: string; resume: string });
      for (const m of JSON.parse(body) as Array<{ id: string; data: unknown }>) ledger.message(track, m.id, m.data);
      since = res.headers.get("ladder-cursor") ?? since;
      return intervalMs;
    } finally {
      clearTimeout(timer);
    }
  });
}

/** A raw WebSocket joined to every channel; `pause(ms)` makes it a slow consumer that stops reading. */
export class WsSubscriber implements SoakSubscriber {
  readonly name: string;
  readonly tracks: Track[];
  #ws: WebSocket | null = null;
  #stopped = false;
  #lastSeen = Date.now();
  #paused = false;
  #watch: ReturnType<typeof setInterval>;
  /** Times the server closed it, by close code (1008: the slow-consumer policy). */
  readonly closes = new Map<number, number>();

  constructor(
    readonly base: string,
    readonly ledger: Ledger,
    starts: Map<string, string>,
    tag = "",
  ) {
    this.name = `raw-ws${tag}`;
    this.tracks = [...starts].map(([channel, start]) => ledger.track(this.name, channel, start));
    this.#connect();
    this.#watch = setInterval(() => {
      const ws = this.#ws;
      if (!ws || this.#paused) return;
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
      if (Date.now() - this.#lastSeen > RAW_SILENCE_MS) ws.terminate();
    }, RAW_SILENCE_MS / 3);
  }

  /** Stops reading from the socket for `ms` (the server sees its buffer grow). */
  async pause(ms: number): Promise<void> {
    this.#paused = true;
    for (const track of this.tracks) track.paused = true;
    this.#ws?.pause();
    await sleep(ms);
    this.#lastSeen = Date.now();
    this.#paused = false;
    for (const track of this.tracks) track.paused = false;
    this.#ws?.resume();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#watch);
    this.#ws?.terminate();
  }

  #connect(): void {
    if (this.#stopped) return;
    const ws = new WebSocket(`${this.base.replace(/^http/, "ws")}/api/ws`);
    this.#ws = ws;
    this.#lastSeen = Date.now();
    const byChannel = new Map(this.tracks.map((t) => [t.channel, t]));
    ws.on("open", () => {
      for (const track of this.tracks) ws.send(JSON.stringify({ type: "join", room: track.channel, since: track.pos }));
    });
    ws.on("message", (raw) => {
      this.#lastSeen = Date.now();
      const frame = JSON.parse(String(raw)) as { type: string; room?: string; id?: string; data?: unknown; reason?: string; since?: string; resume?: string };
      const track = frame.room === undefined ? undefined : byChannel.get(frame.room);
      if (!track) return;
      if (frame.type === "message") this.ledger.message(track, frame.id!, frame.data);
      else if (frame.type === "gap") this.ledger.gap(track, { reason: frame.reason!, since: frame.since!, resume: frame.resume! });
    });
    ws.on("error", () => {});
    ws.on("close", (code) => {
      this.closes.set(code, (this.closes.get(code) ?? 0) + 1);
      if (this.#ws === ws && !this.#stopped) setTimeout(() => this.#connect(), RAW_RECONNECT_MS);
    });
    if (this.#paused) ws.pause();
  }
}
