/** Test helpers: a real hub on an ephemeral loopback port, and real clients for each pattern. */
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { WebSocket } from "ws";
import { serve, type RunningServer, type ServeOptions } from "../../src/index.js";

export async function startHub(options: ServeOptions = {}): Promise<RunningServer> {
  return serve({ port: 0, host: "127.0.0.1", ...options });
}

export async function publish(base: string, data: unknown, channel?: string): Promise<{ id: string; channel: string }> {
  const res = await fetch(`${base}/api/messages`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(channel === undefined ? { data } : { channel, data }),
  });
  if (res.status !== 201) throw new Error(`publish failed: ${res.status} ${await res.text()}`);
  return (await res.json()) as { id: string; channel: string };
}

export interface SseStream {
  /** Message and gap events; the `ready` events are kept apart in {@link ready}. */
  readonly events: EventSourceMessage[];
  readonly ready: EventSourceMessage[];
  readonly retry: number[];
  readonly response: Response;
  /** Everything received so far, as text. */
  readonly raw: () => string;
  /** Resolves when the raw text contains `needle`. */
  waitForText(needle: string, timeoutMs?: number): Promise<void>;
  /** Resolves when at least `count` events (with data or id) have arrived. */
  waitFor(count: number, timeoutMs?: number, done?: () => boolean, what?: string): Promise<EventSourceMessage[]>;
  close(): void;
}

/** Opens an SSE stream with fetch and parses it with eventsource-parser. */
export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const controller = new AbortController();
  const response = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: controller.signal });
  const events: EventSourceMessage[] = [];
  const retry: number[] = [];
  let raw = "";
  let waiters: Array<() => void> = [];
  const ready: EventSourceMessage[] = [];
  const parser = createParser({
    onEvent: (event) => {
      (event.event === "ready" ? ready : events).push(event);
      for (const w of waiters.splice(0)) w();
    },
    onRetry: (ms) => retry.push(ms),
  });
  if (response.body) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    void (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          const text = decoder.decode(value, { stream: true });
          raw += text;
          parser.feed(text);
          for (const w of waiters.splice(0)) w();
        }
      } catch {
        /* aborted */
      }
      for (const w of waiters.splice(0)) w();
    })();
  }
  const stream: SseStream = {
    events,
    ready,
    retry,
    response,
    raw: () => raw,
    async waitForText(needle, timeoutMs = 5000) {
      await stream.waitFor(0, timeoutMs, () => raw.includes(needle), `text ${JSON.stringify(needle)} in ${JSON.stringify(raw)}`);
    },
    async waitFor(count, timeoutMs = 5000, done = () => events.length >= count, what = `${count} SSE events`) {
      const deadline = Date.now() + timeoutMs;
      while (!done()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}, have ${events.length} events`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 50);
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      return events.slice(0, count);
    },
    close() {
      controller.abort();
      waiters = [];
    },
  };
  return stream;
}

export interface WsClient {
  readonly ws: WebSocket;
  readonly frames: Array<Record<string, unknown>>;
  send(frame: unknown): void;
  /** Resolves with the first frame (from the start) matching the predicate that was not yet taken. */
  next(predicate?: (f: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

export async function openWs(base: string, path = "/api/ws"): Promise<WsClient> {
  const ws = new WebSocket(base.replace(/^http/, "ws") + path);
  const frames: Array<Record<string, unknown>> = [];
  const taken = new Set<number>();
  let notify: Array<() => void> = [];
  ws.on("message", (data) => {
    frames.push(JSON.parse(String(data)) as Record<string, unknown>);
    for (const n of notify.splice(0)) n();
  });
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  return {
    ws,
    frames,
    send: (frame) => ws.send(typeof frame === "string" ? frame : JSON.stringify(frame)),
    async next(predicate = () => true, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const index = frames.findIndex((f, i) => !taken.has(i) && predicate(f));
        if (index >= 0) {
          taken.add(index);
          return frames[index]!;
        }
        if (Date.now() > deadline) throw new Error(`timed out waiting for a frame; have ${JSON.stringify(frames)}`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 50);
          notify.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
    },
    async close() {
      if (ws.readyState === ws.CLOSED) return;
      await new Promise<void>((resolve) => {
        ws.once("close", () => resolve());
        ws.close();
      });
      notify = [];
    },
  };
}

/**
 * A WebSocket joined to one room that records the ids of the messages it receives; over wss the hub's
 * certificate is not checked (test hubs use a self-signed one).
 */
export async function joinedWs(base: string, room: string): Promise<{ ws: WebSocket; ids: string[] }> {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/api/ws`, { rejectUnauthorized: false });
  const ids: string[] = [];
  await new Promise<void>((resolve, reject) => {
    ws.once("error", reject);
    ws.on("message", (raw) => {
      const frame = JSON.parse(String(raw)) as { type: string; id?: string };
      if (frame.type === "joined") resolve();
      if (frame.type === "message" && frame.id) ids.push(frame.id);
    });
    ws.once("open", () => ws.send(JSON.stringify({ type: "join", room })));
  });
  return { ws, ids };
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The status a WebSocket upgrade gets: 101 when it opens, else the refusal's status (0 when none came). */
export function upgradeStatusAt(wsUrl: string, headers: Record<string, string> = {}): Promise<number> {
  const ws = new WebSocket(wsUrl, { headers });
  return new Promise((resolve) => {
    ws.once("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once("open", () => {
      resolve(101);
      ws.close();
    });
    ws.once("error", () => resolve(0));
  });
}
