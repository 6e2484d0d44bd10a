/**
 * Limits and lifecycle over real sockets and real processes: slow consumers under each policy, the
 * connection limit, a frozen WebSocket peer dropped by the server's pings, and a graceful SIGTERM drain.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer, request, type IncomingMessage } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { test } from "node:test";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { WebSocket } from "ws";
import type { Gap } from "../src/protocol/index.js";
import { createHub, type Hub, type ServeOptions } from "../src/index.js";
import { outboundBytes } from "../src/server/edge/http.js";
import { listeningUrl } from "./helpers/cli.js";
import { openSse, openWs, publish, sleep, startHub } from "./helpers/server.js";

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

/** Opens an SSE response with node:http and pauses it, so the server's writes back up. */
function pausedSse(url: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      res.pause();
      resolve(res);
    });
    req.on("error", reject);
    req.end();
  });
}

const blob = "x".repeat(16 * 1024);

test("slow consumer, policy disconnect: the stream is ended instead of growing memory; a resume gets the rest", async () => {
  const running = await startHub({ maxBufferedBytes: 64 * 1024 });
  try {
    const res = await pausedSse(`${running.url}/api/stream?channel=slow`);
    await until(() => running.hub.stats().byKind.sse === 1, 2000, "stream open");
    const published: string[] = [];
    for (let i = 0; i < 800 && running.hub.stats().byKind.sse === 1; i++) published.push((await running.hub.publish("slow", { i, blob })).id);
    await until(() => running.hub.stats().byKind.sse === 0, 5000, "slow stream dropped");
    assert.ok(published.length < 800, `dropped after ${published.length} messages`);
    res.destroy();
    // The client resumes by id and loses nothing that is still retained.
    const s = await openSse(`${running.url}/api/stream?channel=slow&since=${published[0]}`);
    await s.waitFor(Math.min(published.length - 1, 50));
    assert.deepEqual(s.events.slice(0, 50).map((e) => e.id), published.slice(1, 51));
    s.close();
  } finally {
    await running.close();
  }
});

test("slow consumer, policy latest: skip to the newest, announce a conflated gap, keep the order", async () => {
  const running = await startHub({ maxBufferedBytes: 64 * 1024, channels: [{ match: "ticker.*", slowConsumer: "latest" }] });
  try {
    const res = await pausedSse(`${running.url}/api/stream?channel=ticker.btc`);
    await until(() => running.hub.stats().byKind.sse === 1, 2000, "stream open");
    const published: string[] = [];
    for (let i = 0; i < 600; i++) published.push((await running.hub.publish("ticker.btc", { i, blob })).id);
    assert.equal(running.hub.stats().byKind.sse, 1, "a latest-policy stream is kept open");
    const events: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (e) => events.push(e) });
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => parser.feed(chunk));
    res.resume();
    await until(() => events.at(-1)?.id === published.at(-1), 10_000, "newest message delivered");
    const gaps = events.filter((e) => e.event === "gap").map((e) => JSON.parse(e.data) as Gap);
    assert.ok(gaps.length >= 1, "a conflated gap was announced");
    assert.ok(gaps.every((g) => g.reason === "conflated" && g.channel === "ticker.btc"));
    const delivered = events.filter((e) => e.event === undefined).map((e) => (JSON.parse(e.data) as { i: number }).i);
    assert.ok(delivered.length < published.length, `skipped some: got ${delivered.length} of ${published.length}`);
    for (let k = 1; k < delivered.length; k++) assert.ok(delivered[k]! > delivered[k - 1]!, "in order, no duplicates");
    // Every skipped run is covered by a gap: delivered + skipped in gaps accounts for the whole sequence.
    for (const g of gaps) assert.ok(published.indexOf(g.resume) > published.indexOf(g.since));
    res.destroy();
  } finally {
    await running.close();
  }
});

test("slow WebSocket consumer, policy disconnect: closed with 1008, and a rejoin resumes", async () => {
  const running = await startHub({ maxBufferedBytes: 64 * 1024 });
  try {
    const c = await openWs(running.url);
    c.send({ type: "join", room: "slowws" });
    await c.next((f) => f.type === "joined");
    const closed = new Promise<number>((resolve) => c.ws.once("close", (code) => resolve(code)));
    c.ws.pause();
    const published: string[] = [];
    for (let i = 0; i < 800; i++) published.push((await running.hub.publish("slowws", { i, blob })).id);
    c.ws.resume();
    assert.equal(await closed, 1008);
    const got = c.frames.filter((f) => f.type === "message").map((f) => f.id as string);
    assert.ok(got.length < 800, `cut off after ${got.length}`);
    assert.deepEqual(got, published.slice(0, got.length), "what arrived is in order");
    await until(() => running.hub.stats().byKind.websocket === 0, 2000, "released");
    const again = await openWs(running.url);
    again.send({ type: "join", room: "slowws", since: got.at(-1) ?? published[0] });
    await again.next((f) => f.type === "joined", 5000);
    const resumed = again.frames.filter((f) => f.type === "message").map((f) => f.id as string);
    assert.deepEqual(resumed, published.slice(got.length), "the rejoin gets exactly the rest, paced by the socket");
    await again.close();
  } finally {
    await running.close();
  }
});

test("outboundBytes counts an HTTP/1.1 response's unsent bytes once (res.writableLength already holds the socket's)", async () => {
  let reading: { held: number; counted: number } | null = null;
  const server = createServer((_req, res) => {
    // The body goes straight to the socket (as an SSE message does), so its length frames it.
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": "1000" });
    res.flushHeaders();
    setImmediate(() => {
      // Corked, the bytes stay in the socket's buffer: exactly what a stream the batcher holds looks like.
      res.socket!.cork();
      res.socket!.write(Buffer.alloc(1000));
      reading = { held: res.socket!.writableLength, counted: outboundBytes(res) };
      res.socket!.uncork();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const body = await (await fetch(`http://127.0.0.1:${port}/`)).arrayBuffer();
    assert.equal(body.byteLength, 1000);
    assert.deepEqual(reading, { held: 1000, counted: 1000 });
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A hub as `ladder serve` runs it (serve()), or mounted in the app's own node:http server (createHub + attach). */
async function hubFor(kind: "serve" | "mounted", options: ServeOptions): Promise<{ url: string; hub: Hub; close(): Promise<void> }> {
  if (kind === "serve") {
    const running = await startHub(options);
    return { url: running.url, hub: running.hub, close: () => running.close() };
  }
  const hub = createHub(options);
  const server = createServer();
  hub.attach(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hub,
    async close() {
      await hub.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

for (const kind of ["serve", "mounted"] as const) {
  test(`a burst of large messages does not cut SSE readers that keep up (one channel and envelope streams; ${kind})`, async () => {
    // The soak's bound: two 32 KiB messages in the same turn pass it only if the held bytes are counted twice.
    const running = await hubFor(kind, { maxBufferedBytes: 64 * 1024 });
    try {
      const one = await openSse(`${running.url}/api/stream?channel=big`);
      const envelope = await openSse(`${running.url}/api/stream?channel=big&channel=other&envelope=1`);
      await one.waitFor(0, 2000, () => one.ready.length === 1, "ready");
      await envelope.waitFor(0, 2000, () => envelope.ready.length === 1, "ready");
      const big = "x".repeat(32 * 1024);
      const pairs = 10;
      for (let k = 0; k < pairs; k++) {
        // Two at once: both reach the fan-out in one turn, while the write batcher holds the first.
        await Promise.all([running.hub.publish("big", { i: 2 * k, big }), running.hub.publish("big", { i: 2 * k + 1, big })]);
        const want = 2 * k + 2;
        const what = `${want} events on both streams or a stream cut`;
        await one.waitFor(want, 5000, () => one.events.length >= want || running.hub.stats().byKind.sse < 2, what);
        await envelope.waitFor(want, 5000, () => envelope.events.length >= want || running.hub.stats().byKind.sse < 2, what);
        assert.equal(running.hub.stats().byKind.sse, 2, `both streams open after ${want} messages`);
      }
      const order = (s: typeof one, wrapped: boolean): number[] =>
        s.events.map((e) => {
          const data = JSON.parse(e.data) as { i: number; data?: { i: number } };
          return wrapped ? data.data!.i : data.i;
        });
      const all = Array.from({ length: 2 * pairs }, (_, i) => i);
      assert.deepEqual(order(one, false), all);
      assert.deepEqual(order(envelope, true), all);
      one.close();
      envelope.close();
    } finally {
      await running.close();
    }
  });
}

test("maxConnections: past the limit, streams and upgrades get 429", async () => {
  const running = await startHub({ maxConnections: 2 });
  try {
    const a = await openSse(`${running.url}/api/stream?channel=a`);
    const b = await openWs(running.url);
    await until(() => running.hub.stats().connections === 2, 2000, "two open");
    const res = await fetch(`${running.url}/api/stream?channel=c`);
    assert.equal(res.status, 429);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "too_many_connections");
    assert.equal((await fetch(`${running.url}/api/messages?wait=5`)).status, 429);
    const ws = new WebSocket(running.url.replace("http", "ws") + "/api/ws");
    const status = await new Promise<number>((resolve) => ws.on("unexpected-response", (_q, r) => resolve(r.statusCode!)));
    assert.equal(status, 429);
    // A plain poll holds nothing and still answers.
    assert.equal((await fetch(`${running.url}/api/messages`)).status, 200);
    a.close();
    await b.close();
  } finally {
    await running.close();
  }
});

test("a frozen WebSocket peer (never answers pings) is dropped within the configured bound", async () => {
  const running = await startHub({ heartbeatMs: 100, wsTimeoutMs: 400 });
  try {
    const { port } = new URL(running.url);
    const socket = connect(Number(port), "127.0.0.1");
    const key = randomBytes(16).toString("base64");
    let response = "";
    socket.on("data", (d) => (response += d.toString("latin1")));
    socket.write(`GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    const closedAt = new Promise<number>((resolve) => socket.on("close", () => resolve(Date.now())));
    await until(() => response.startsWith("HTTP/1.1 101"), 2000, "101 Switching Protocols");
    const openedAt = Date.now();
    await until(() => running.hub.stats().byKind.websocket === 1, 2000, "ws registered");
    const closed = await closedAt;
    assert.ok(closed - openedAt < 1500, `dropped after ${closed - openedAt} ms`);
    assert.equal(running.hub.stats().byKind.websocket, 0);
  } finally {
    await running.close();
  }
});

/** Protocol pings a WebSocket receives over `ms` while it sends an application ping every `everyMs` (0: silent). */
async function pingsReceived(url: string, ms: number, everyMs: number): Promise<{ pings: number; open: boolean }> {
  const ws = new WebSocket(`${url.replace("http", "ws")}/api/ws`);
  let pings = 0;
  ws.on("ping", () => pings++);
  await new Promise<void>((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  const talk = everyMs > 0 ? setInterval(() => ws.send(JSON.stringify({ type: "ping" })), everyMs) : null;
  await sleep(ms);
  if (talk) clearInterval(talk);
  const open = ws.readyState === ws.OPEN;
  ws.terminate();
  return { pings, open };
}

test("a WebSocket peer that talks gets no protocol pings; a silent one gets one every tick; neither is dropped", async () => {
  const running = await startHub({ heartbeatMs: 200, wsTimeoutMs: 1000 });
  try {
    const [talking, silent] = await Promise.all([pingsReceived(running.url, 1500, 40), pingsReceived(running.url, 1500, 0)]);
    // Seven ticks: the talking peer was heard within half an interval at every one (a stalled turn may let one through).
    assert.ok(talking.pings <= 1, `a talking peer got ${talking.pings} pings`);
    assert.ok(silent.pings >= 5, `a silent peer got ${silent.pings} pings`);
    assert.ok(talking.open && silent.open, "both stayed open");
  } finally {
    await running.close();
  }
  // With wsTimeoutMs under two intervals a skipped ping could let a live peer look silent: every tick pings.
  const tight = await startHub({ heartbeatMs: 200, wsTimeoutMs: 350 });
  try {
    const talking = await pingsReceived(tight.url, 1500, 40);
    assert.ok(talking.pings >= 5, `with a tight timeout a talking peer still got ${talking.pings} pings`);
    assert.ok(talking.open);
  } finally {
    await tight.close();
  }
});

test("SIGTERM drains a real `ladder serve`: polls answered, streams ended, WebSockets closed 1001, exit 0", async () => {
  const child = spawn(process.execPath, ["bin/ladder.js", "serve", "--port", "0", "--log-level", "warn"], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const url = await listeningUrl(child);
    const m = await publish(url, "before");
    const held = fetch(`${url}/api/messages?since=${m.id}&wait=20`);
    const sse = await openSse(`${url}/api/stream`);
    const ws = await openWs(url);
    ws.send({ type: "join", room: "general" });
    await ws.next((f) => f.type === "joined");
    const wsClosed = new Promise<number>((resolve) => ws.ws.once("close", (code) => resolve(code)));
    await sleep(100);
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    const answer = await held;
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), []);
    assert.equal(await wsClosed, 1001);
    assert.equal(await exited, 0);
    await assert.rejects(fetch(`${url}/healthz`));
    sse.close();
  } finally {
    child.kill("SIGKILL");
  }
});
