/**
 * Write batching (`writeDelayMs`): an idle socket is written at the end of the turn, a busy one is held
 * until the delay after its last flush so its messages share one write, and a held socket that queues
 * too much is flushed at once. Unit tests on the batcher, then the whole path over real sockets, where
 * "one write" is seen as one TCP read on loopback.
 */
import assert from "node:assert/strict";
import { connect, Socket } from "node:net";
import { test } from "node:test";
import { WebSocket } from "ws";
import { FLUSH_BYTES, WriteBatcher, type Batched } from "../src/server/core/cork.js";
import { resolveOptions } from "../src/server/options.js";
import { openSse, sleep, startHub } from "./helpers/server.js";

/** A connection as the batcher sees it, recording when it is flushed. */
class FakeTarget implements Batched {
  flushedAt = Number.NEGATIVE_INFINITY;
  held = false;
  flushes: number[] = [];
  flushHeld(): void {
    this.flushes.push(performance.now());
  }
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test("batcher: an idle connection is held for the turn only, flushed once however many writes", async () => {
  const batcher = new WriteBatcher(200);
  const t = new FakeTarget();
  batcher.hold(t);
  batcher.hold(t);
  assert.equal(t.held, true);
  assert.equal(batcher.pending, 1);
  await nextTurn();
  assert.equal(t.held, false);
  assert.equal(t.flushes.length, 1);
});

test("batcher: a connection flushed less than the delay ago is held until the delay after that flush", async () => {
  const batcher = new WriteBatcher(400);
  const t = new FakeTarget();
  batcher.hold(t);
  await nextTurn();
  const firstFlush = t.flushes[0]!;
  batcher.hold(t);
  await nextTurn();
  await sleep(10);
  assert.equal(t.held, true, "still held after the turn");
  assert.equal(batcher.pending, 1);
  const deadline = Date.now() + 5000;
  while (t.held && Date.now() < deadline) await sleep(10);
  assert.equal(t.held, false);
  assert.ok(t.flushes[1]! - firstFlush >= 399, `held ${t.flushes[1]! - firstFlush} ms, at least the delay`);
});

test("batcher: with a delay of 0 a busy connection is never held past the turn", async () => {
  const batcher = new WriteBatcher(0);
  const t = new FakeTarget();
  for (let i = 0; i < 3; i++) {
    batcher.hold(t);
    await nextTurn();
    assert.equal(t.held, false);
  }
  assert.equal(t.flushes.length, 3);
});

test("batcher: a held connection flushed early is not flushed again by its slot", async () => {
  const batcher = new WriteBatcher(50);
  const t = new FakeTarget();
  batcher.hold(t);
  await nextTurn();
  batcher.hold(t);
  batcher.flush(t);
  assert.equal(t.held, false, "flushed without waiting out the hold");
  assert.equal(t.flushes.length, 2);
  await sleep(120);
  assert.equal(t.flushes.length, 2, "one flush per hold");
});

test("writeDelayMs is bounded: 0 to 1000", () => {
  assert.equal(resolveOptions({ writeDelayMs: 0 }).writeDelayMs, 0);
  assert.equal(resolveOptions({ writeDelayMs: 1000 }).writeDelayMs, 1000);
  assert.throws(() => resolveOptions({ writeDelayMs: -1 }), /writeDelayMs/);
  assert.throws(() => resolveOptions({ writeDelayMs: 1001 }), /writeDelayMs/);
  assert.throws(() => resolveOptions({ writeDelayMs: Number.NaN }), /writeDelayMs/);
});

/** Records, for each message number `"n":k` received (or what `pattern` numbers), the index of the TCP read that carried it. */
class ReadLog {
  reads = 0;
  readonly readOf = new Map<number, number>();
  readonly at = new Map<number, number>();
  constructor(readonly pattern = /"n":(\d+)/g) {}
  onText(text: string): void {
    this.reads++;
    for (const match of text.matchAll(this.pattern)) {
      const n = Number(match[1]);
      this.readOf.set(n, this.reads);
      this.at.set(n, performance.now());
    }
  }
  async waitFor(n: number): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!this.readOf.has(n)) {
      if (Date.now() > deadline) throw new Error(`message ${n} never came`);
      await sleep(5);
    }
  }
}

/**
 * Publishes message 1 and waits for it; publishes 2–6 in separate turns (20 ms apart), which a socket
 * flushed by message 1 holds and sends in one write; then, idle for longer than the delay, publishes 7,
 * which must come without the hold.
 */
async function exercise(publish: (n: number) => Promise<unknown>, log: ReadLog, delayMs: number): Promise<void> {
  await publish(1);
  await log.waitFor(1);
  for (let n = 2; n <= 6; n++) {
    await publish(n);
    await sleep(20);
  }
  await log.waitFor(6);
  const reads = new Set([2, 3, 4, 5, 6].map((n) => log.readOf.get(n)));
  assert.equal(reads.size, 1, `messages 2–6 arrived in ${reads.size} reads, expected one write`);
  assert.notEqual(log.readOf.get(1), log.readOf.get(2), "message 1 (idle socket) went out on its own");
  await sleep(delayMs + 100);
  const sent = performance.now();
  await publish(7);
  await log.waitFor(7);
  const latency = log.at.get(7)! - sent;
  assert.ok(latency < delayMs / 2, `an idle socket is not held: message 7 took ${latency.toFixed(0)} ms (delay ${delayMs} ms)`);
}

test("SSE over a real socket: a busy stream's messages share one write, an idle one's go at once, bytes intact", async () => {
  const delayMs = 800;
  const running = await startHub({ writeDelayMs: delayMs });
  let socket: Socket | null = null;
  try {
    const url = new URL(running.url);
    const log = new ReadLog();
    let raw = "";
    socket = connect(Number(url.port), url.hostname);
    socket.setEncoding("utf8");
    socket.on("data", (text: string) => {
      raw += text;
      log.onText(text);
    });
    socket.write(`GET /api/stream?channel=batch HTTP/1.1\r\nhost: ${url.host}\r\naccept: text/event-stream\r\n\r\n`);
    const deadline = Date.now() + 10_000;
    while (!raw.includes("event: ready")) {
      if (Date.now() > deadline) throw new Error("no ready event");
      await sleep(5);
    }
    await exercise((n) => running.hub.publish("batch", { n }), log, delayMs);
    // The chunked framing and the events are exactly what res.write would have produced.
    const body = raw.slice(raw.indexOf("\r\n\r\n") + 4);
    let rest = body;
    let events = "";
    for (;;) {
      const eol = rest.indexOf("\r\n");
      const size = parseInt(rest.slice(0, eol), 16);
      assert.ok(Number.isInteger(size), `chunk size line: ${JSON.stringify(rest.slice(0, 20))}`);
      if (rest.length < eol + 2 + size + 2) break;
      events += rest.slice(eol + 2, eol + 2 + size);
      assert.equal(rest.slice(eol + 2 + size, eol + 4 + size), "\r\n");
      rest = rest.slice(eol + 4 + size);
      if (rest === "") break;
    }
    const data = [...events.matchAll(/^data: (.*)$/gm)].map((m) => m[1]).filter((d) => d!.startsWith('{"n"'));
    assert.deepEqual(data, [1, 2, 3, 4, 5, 6, 7].map((n) => JSON.stringify({ n })));
  } finally {
    socket?.destroy();
    await running.close();
  }
});

test("WebSocket over a real socket: a busy socket's frames share one write, an idle one's go at once", async () => {
  const delayMs = 800;
  const running = await startHub({ writeDelayMs: delayMs });
  const ws = new WebSocket(`${running.url.replace("http", "ws")}/api/ws`);
  try {
    const log = new ReadLog();
    const frames: string[] = [];
    ws.on("upgrade", (res) => res.socket.on("data", (chunk: Buffer) => log.onText(chunk.toString("latin1"))));
    ws.on("message", (data) => frames.push(String(data)));
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    ws.send(JSON.stringify({ type: "join", room: "batch" }));
    const deadline = Date.now() + 10_000;
    while (!frames.some((f) => f.startsWith('{"type":"joined"'))) {
      if (Date.now() > deadline) throw new Error("not joined");
      await sleep(5);
    }
    await exercise((n) => running.hub.publish("batch", { n }), log, delayMs);
    const messages = frames.filter((f) => f.startsWith('{"type":"message"')).map((f) => JSON.parse(f) as { room: string; data: unknown });
    assert.deepEqual(
      messages.map((m) => [m.room, m.data]),
      [1, 2, 3, 4, 5, 6, 7].map((n) => ["batch", { n }]),
    );
  } finally {
    ws.terminate();
    await running.close();
  }
});

test("WebSocket publish acks: a burst's acks share one write, and a publisher awaiting each ack is never held", async () => {
  // A hold far longer than the test: an ack held for it would show as a wait of 800 ms per publish.
  const delayMs = 800;
  const running = await startHub({ writeDelayMs: delayMs });
  const ws = new WebSocket(`${running.url.replace("http", "ws")}/api/ws`);
  try {
    const log = new ReadLog(/"type":"ack","ref":(\d+)/g);
    const acks: Array<{ ref: number; id: string }> = [];
    ws.on("upgrade", (res) => res.socket.on("data", (chunk: Buffer) => log.onText(chunk.toString("latin1"))));
    ws.on("message", (data) => acks.push(JSON.parse(String(data)) as { ref: number; id: string }));
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    const publish = (n: number): void => ws.send(JSON.stringify({ type: "publish", room: "acks", data: { n }, ref: n }));
    // One after another, each awaited: every ack comes within the turn, not after the hold.
    const started = performance.now();
    for (let n = 1; n <= 20; n++) {
      publish(n);
      await log.waitFor(n);
    }
    const took = performance.now() - started;
    assert.ok(took < delayMs, `20 awaited publishes took ${took.toFixed(0)} ms (hold ${delayMs} ms)`);
    // A burst in one TCP segment (the client's socket corked around it): its acks share one write,
    // counted on the hub's side of the connection (the client may read separate writes as one).
    const socket = (ws as unknown as { _socket: Socket })._socket;
    const write = Socket.prototype.write;
    let hubWrites = 0;
    Socket.prototype.write = function (this: Socket, ...args: Parameters<Socket["write"]>): boolean {
      if (this.remotePort === socket.localPort && this !== socket) hubWrites++;
      return write.apply(this, args);
    } as Socket["write"];
    try {
      socket.cork();
      for (let n = 21; n <= 25; n++) publish(n);
      socket.uncork();
      await log.waitFor(25);
    } finally {
      Socket.prototype.write = write;
    }
    assert.equal(hubWrites, 1, `the burst's five acks took ${hubWrites} writes, expected one`);
    const stored = await fetch(`${running.url}/api/messages?channel=acks&since=0&limit=100`).then((r) => r.json() as Promise<Array<{ id: string }>>);
    assert.deepEqual(acks.map((a) => a.ref), Array.from({ length: 25 }, (_, i) => i + 1), "every ack, in order");
    assert.deepEqual(stored.map((m) => m.id), acks.map((a) => a.id), "each ack names its stored message");
  } finally {
    ws.terminate();
    await running.close();
  }
});

/** A WebSocket joined to `room`, collecting every text frame and how it closed. */
async function joinedSocket(url: string, room: string): Promise<{ ws: WebSocket; frames: string[]; closed: Promise<number> }> {
  const ws = new WebSocket(`${url.replace("http", "ws")}/api/ws`);
  const frames: string[] = [];
  ws.on("message", (data) => frames.push(String(data)));
  const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  ws.send(JSON.stringify({ type: "join", room }));
  await until(() => frames.some((f) => f.startsWith('{"type":"joined"')), "joined");
  return { ws, frames, closed };
}

async function until(done: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const dataOf = (frames: readonly string[]): unknown[] =>
  frames.filter((f) => f.startsWith('{"type":"message"')).map((f) => (JSON.parse(f) as { data: { n: number } }).data.n);

test("WebSocket: messages held by the batcher go out before a frame sent after them, and before the close frame", async () => {
  // A hold far longer than the test's steps (50 ms): anything sent after a held message would overtake it.
  const running = await startHub({ writeDelayMs: 1000 });
  try {
    const { ws, frames, closed } = await joinedSocket(running.url, "order");
    await running.hub.publish("order", { n: 1 });
    await until(() => dataOf(frames).length === 1, "message 1");
    await running.hub.publish("order", { n: 2 });
    await sleep(50);
    assert.deepEqual(dataOf(frames), [1], "message 2 is held");
    ws.send(JSON.stringify({ type: "ping", ref: "p" }));
    await until(() => frames.some((f) => f.startsWith('{"type":"pong"')), "pong");
    const pong = frames.findIndex((f) => f.startsWith('{"type":"pong"'));
    const second = frames.findIndex((f) => f.includes('"n":2'));
    assert.ok(second !== -1 && second < pong, `message 2 before the pong: ${JSON.stringify(frames.slice(1))}`);
    await running.hub.publish("order", { n: 3 });
    await sleep(50);
    const draining = running.hub.drain(2000);
    assert.equal(await closed, 1001);
    await draining;
    assert.deepEqual(dataOf(frames), [1, 2, 3], "the held message went out before the close frame");
  } finally {
    await running.close();
  }
});

test("SSE: messages held by the batcher go out before the stream ends", async () => {
  const running = await startHub({ writeDelayMs: 1000 });
  try {
    const stream = await openSse(`${running.url}/api/stream?channel=order`);
    await stream.waitForText("event: ready");
    await running.hub.publish("order", { n: 1 });
    await stream.waitFor(1);
    await running.hub.publish("order", { n: 2 });
    await sleep(50);
    assert.equal(stream.events.length, 1, "message 2 is held");
    await running.hub.drain(2000);
    await stream.waitFor(2, 2000);
    assert.deepEqual(stream.events.map((e) => e.data), ['{"n":1}', '{"n":2}']);
    stream.close();
  } finally {
    await running.close();
  }
});

test("a held connection that queues FLUSH_BYTES is written at once, without waiting out the hold", async () => {
  const running = await startHub({ writeDelayMs: 1000 });
  try {
    const { ws, frames } = await joinedSocket(running.url, "big");
    await running.hub.publish("big", { n: 1 });
    await until(() => dataOf(frames).length === 1, "message 1");
    const half = "x".repeat(FLUSH_BYTES / 2);
    await running.hub.publish("big", { n: 2, pad: half });
    await sleep(50);
    assert.deepEqual(dataOf(frames), [1], "message 2 is held");
    const started = performance.now();
    await running.hub.publish("big", { n: 3, pad: half });
    await until(() => dataOf(frames).length === 3, "messages 2 and 3", 2000);
    const took = performance.now() - started;
    assert.ok(took < 500, `flushed after ${took.toFixed(0)} ms; the hold is 1000 ms`);
    ws.terminate();
  } finally {
    await running.close();
  }
});
