/**
 * Leak test: thousands of SSE streams, held long-polls and WebSockets are opened and then abandoned by
 * the client in the middle of waiting (FIN, RST, mid-handshake, right after a join, while a publish is
 * being written to them). Afterwards the server must be back where it started: no registered
 * connections, no fan-out channels, no open server sockets, the same timers and handles by type, and a
 * heap (after forced GC, measured after a warm-up round) within a few MB of where it was.
 *
 * Everything runs against 127.0.0.1 with bounded concurrency (BATCH at a time). Scale with
 * LADDER_LEAK_SCALE (default 1 = 2000 of each kind).
 */
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, describe, test, type TestContext } from "node:test";
import { WebSocket } from "ws";
import type { RunningServer } from "../src/index.js";
import { heapAfterGc, mb, settle as settleWithin } from "./helpers/heap.js";
import { startHub } from "./helpers/server.js";

const SCALE = Number(process.env.LADDER_LEAK_SCALE ?? "1") || 1;
/** Connections per transport in the measured round. */
const N = Math.round(2000 * SCALE);
/** Subscribers (all transports together) in the measured publish-in-flight round. */
const N_INFLIGHT = Math.round(600 * SCALE);
/** The warm-up round runs the same scenarios with the same concurrency, at this fraction. */
const WARMUP = 0.2;
/** Concurrent client connections at most. */
const BATCH = 200;
const HOST = "127.0.0.1";
const SETTLE_MS = 10_000;
const HEAP_BOUND = 5 * 1024 * 1024;
const TEST_TIMEOUT = 60_000;
/** WebSocket peers that stop answering pings are dropped after this (heartbeat every HEARTBEAT_MS). */
const HEARTBEAT_MS = 500;
const WS_TIMEOUT_MS = 1500;
/** Silent WebSocket peers (never answer a ping, never close) in the measured round. */
const N_SILENT = BATCH;

/** Channels that never get a message (so a long-poll on them is held); the mix creates and releases fan-out entries. */
const holdChannel = (i: number): string => `hold-${i % 37}`;
/** Channels the publish-in-flight round publishes to. Fixed set: their retained history is the same after warm-up. */
const PUB_CHANNELS = Array.from({ length: 8 }, (_, i) => `pub-${i}`);
/** Shared payload: retained history holds references to one string, not a copy per message. */
const BLOB = "x".repeat(32 * 1024);

const noop = (): void => {};

let running: RunningServer;
let port: number;

// ---------------------------------------------------------------------------------------------------------
// Client bookkeeping: every client socket the test opens goes through rawConnect, so we know when they are
// all closed before looking at the process's handles.

const clientSockets = new Set<net.Socket>();
/** Operations that did not reach the state they were meant to be aborted in (e.g. no `joined`). */
const problems: string[] = [];

function rawConnect(): net.Socket {
  const socket = net.connect({ host: HOST, port });
  socket.on("error", noop);
  clientSockets.add(socket);
  socket.once("close", () => clientSockets.delete(socket));
  return socket;
}

/** Resolves when the socket is closed; destroys it (and records a problem) if that takes longer than `ms`. */
function closed(socket: net.Socket, label: string, ms = 15_000): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed && socket.closed) return resolve();
    const guard = setTimeout(() => {
      problems.push(`${label}: still open after ${ms} ms`);
      socket.destroy();
    }, ms);
    socket.once("close", () => {
      clearTimeout(guard);
      resolve();
    });
  });
}

function httpGet(path: string, headers: Record<string, string> = {}): { req: http.ClientRequest; socket: net.Socket } {
  let socket!: net.Socket;
  const req = http.request({
    host: HOST,
    port,
    path,
    headers,
    // No agent: the request owns exactly this socket, nothing is pooled or kept alive.
    createConnection: () => (socket = rawConnect()),
  });
  req.on("error", noop);
  req.on("response", (res) => res.on("error", noop));
  req.end();
  return { req, socket };
}

const settle = (cond: () => boolean | Promise<boolean>, ms = SETTLE_MS): Promise<boolean> => settleWithin(cond, ms);

const serverConnections = (): Promise<number> =>
  new Promise((resolve, reject) => running.server.getConnections((error, count) => (error ? reject(error) : resolve(count))));

function resources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
  return counts;
}


const peak = { connections: 0, channels: 0 };
/** How many clients were aborted in each way (measured rounds only; reset after the warm-up). */
const tallies = new Map<string, number>();
function tally(label: string): void {
  tallies.set(label, (tallies.get(label) ?? 0) + 1);
}
function samplePeak(): void {
  const s = running.hub.stats();
  peak.connections = Math.max(peak.connections, s.connections);
  peak.channels = Math.max(peak.channels, s.channels);
}

/** Waits (bounded) for every client socket to close, then for the hub to have released everything. */
async function settleHub(): Promise<void> {
  await settle(() => clientSockets.size === 0);
  await settle(() => {
    const s = running.hub.stats();
    return s.connections === 0 && s.channels === 0;
  });
}

/** Channels the memory engine holds (retained history or listeners). */
const engineChannels = (): number => (running.hub.engine as unknown as { channelCount: number }).channelCount;

async function assertHubReleased(what: string): Promise<void> {
  await settleHub();
  assert.equal(clientSockets.size, 0, `${what}: ${clientSockets.size} client sockets still open`);
  const stats = running.hub.stats();
  const misbehaved = problems.splice(0);
  assert.equal(stats.connections, 0, `${what}: hub still counts connections ${JSON.stringify(stats.byKind)}`);
  assert.equal(stats.channels, 0, `${what}: fan-out still holds ${stats.channels} channels`);
  assert.deepEqual(misbehaved, [], `${what}: ${misbehaved.length} operations misbehaved`);
}

async function inBatches(total: number, run: (start: number, count: number) => Promise<void>, size = BATCH): Promise<void> {
  for (let start = 0; start < total; start += size) await run(start, Math.min(size, total - start));
}

// ---------------------------------------------------------------------------------------------------------
// SSE

function sseOnce(i: number): Promise<void> {
  const channels = i % 7 === 0 ? [holdChannel(i), holdChannel(i + 1), holdChannel(i + 2)] : [holdChannel(i)];
  const { req, socket } = httpGet(`/api/stream?${channels.map((c) => `channel=${c}`).join("&")}`, { accept: "text/event-stream" });
  const done = closed(socket, `sse #${i}`);
  switch (i % 5) {
    case 0:
      // Gone while the request is in flight: right after it is written, before any answer.
      req.once("finish", () => setImmediate(() => (tally("sse: request in flight"), req.destroy())));
      break;
    case 1:
      // At the first bytes (the `retry:` line): the subscription may still be starting.
      req.once("response", (res) => res.once("data", () => (tally("sse: at first bytes"), req.destroy())));
      break;
    case 2:
      // Headers only, body never read.
      req.once("response", () => (tally("sse: headers only"), socket.destroy()));
      break;
    default: {
      // Once live (the id-only event that follows the subscription start): FIN (res.destroy) or RST.
      req.once("response", (res) => {
        let text = "";
        res.on("data", (chunk: Buffer) => {
          text += chunk.toString("utf8");
          if (!/(^|\n)id:/.test(text)) return;
          if (i % 5 === 3) (tally("sse: live, res.destroy()"), res.destroy());
          else (tally("sse: live, RST"), socket.resetAndDestroy());
        });
      });
    }
  }
  return done;
}

async function sseRound(total: number): Promise<void> {
  await inBatches(total, async (start, count) => {
    const ops = Array.from({ length: count }, (_, k) => sseOnce(start + k));
    samplePeak();
    await Promise.all(ops);
  });
}

// ---------------------------------------------------------------------------------------------------------
// Long-poll

async function longPollRound(total: number): Promise<void> {
  // Most are aborted while held (the hub counts them as long-polls); a few while the request is in flight.
  await inBatches(total, async (start, count) => {
    const polls = Array.from({ length: count }, (_, k) => {
      const i = start + k;
      const { req, socket } = httpGet(`/api/messages?channel=${holdChannel(i)}&wait=30`);
      req.once("response", (res) => {
        problems.push(`long-poll #${i} answered ${res.statusCode} instead of being held`);
        res.resume();
      });
      return { i, req, socket, done: closed(socket, `long-poll #${i}`) };
    });
    const held = await settle(() => running.hub.stats().byKind["long-poll"] === count);
    if (!held) problems.push(`long-poll batch at ${start}: only ${running.hub.stats().byKind["long-poll"]}/${count} held`);
    samplePeak();
    for (const { i, req, socket } of polls) {
      tally(held ? "long-poll: aborted while held" : "long-poll: aborted (batch not confirmed held)");
      if (i % 3 === 0) req.destroy();
      else if (i % 3 === 1) socket.resetAndDestroy();
      else socket.end(); // half-close: FIN, the server notices and ends its side
    }
    await Promise.all(polls.map((p) => p.done));
  });
  await inBatches(Math.ceil(total / 10), async (start, count) => {
    const ops = Array.from({ length: count }, (_, k) => {
      const { req, socket } = httpGet(`/api/messages?channel=${holdChannel(start + k)}&wait=30`);
      req.once("finish", () => setTimeout(() => (tally("long-poll: request in flight"), req.destroy()), k % 3));
      return closed(socket, `early long-poll #${start + k}`);
    });
    await Promise.all(ops);
  });
}

// ---------------------------------------------------------------------------------------------------------
// WebSocket

const HANDSHAKE = (): string =>
  `GET /api/ws HTTP/1.1\r\nHost: ${HOST}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;

/** A masked client text frame (payload < 126 bytes). */
function maskedText(text: string): Buffer {
  const payload = Buffer.from(text, "utf8");
  assert.ok(payload.length < 126);
  const mask = [0x12, 0x34, 0x56, 0x78];
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length, ...mask]), Buffer.from(payload.map((b, j) => b ^ mask[j % 4]!))]);
}

function wsClient(): { ws: WebSocket; socket: () => net.Socket } {
  let socket: net.Socket | undefined;
  const ws = new WebSocket(`ws://${HOST}:${port}/api/ws`, {
    perMessageDeflate: false,
    createConnection: (() => (socket = rawConnect())) as unknown as typeof net.createConnection,
  });
  ws.on("error", noop);
  return { ws, socket: () => socket! };
}

function wsOnce(i: number): Promise<void> {
  const room = holdChannel(i);
  const variant = i % 8;
  if (variant <= 2) {
    const { ws, socket } = wsClient();
    const done = closed(socket(), `ws #${i}`);
    ws.once("open", () => {
      ws.send(JSON.stringify({ type: "join", room }));
      if (variant === 1) {
        tally("ws: terminate right after join");
        ws.terminate(); // right after the join, before `joined`
        return;
      }
      ws.on("message", (data) => {
        if (!String(data).includes('"joined"')) return;
        if (variant === 0) (tally("ws: clean close after joined"), ws.close(1000, "bye")); // clean close handshake
        else (tally("ws: terminate after joined"), ws.terminate());
      });
    });
    return done;
  }
  const socket = rawConnect();
  const done = closed(socket, `raw ws #${i}`);
  socket.once("connect", () => {
    switch (variant) {
      case 3:
        // Mid-handshake: half the request headers, then gone.
        socket.write(HANDSHAKE().slice(0, 40), () => (tally("ws raw: half the upgrade headers"), socket.destroy()));
        break;
      case 4:
        // Full upgrade request, gone before the 101.
        socket.write(HANDSHAKE(), () => (tally("ws raw: upgrade sent, gone before 101"), socket.destroy()));
        break;
      case 5:
        // Gone on the 101: the server has just created the connection.
        socket.write(HANDSHAKE());
        socket.once("data", () => (tally("ws raw: RST on the 101"), socket.resetAndDestroy()));
        break;
      case 6:
        // Upgrade and join in one write (the join arrives as the upgrade's head), RST once joined.
        socket.write(Buffer.concat([Buffer.from(HANDSHAKE()), maskedText(JSON.stringify({ type: "join", room }))]));
        {
          let text = "";
          socket.on("data", (chunk: Buffer) => {
            text += chunk.toString("latin1");
            if (text.includes('"joined"')) (tally("ws raw: RST after joined"), socket.resetAndDestroy());
          });
        }
        break;
      default:
        // Upgrade, join, then a half-close without a close frame.
        socket.write(Buffer.concat([Buffer.from(HANDSHAKE()), maskedText(JSON.stringify({ type: "join", room }))]));
        socket.once("data", () => (tally("ws raw: FIN after upgrade+join"), socket.end()));
        socket.resume();
    }
  });
  return done;
}

async function wsRound(total: number): Promise<void> {
  await inBatches(total, async (start, count) => {
    const ops = Array.from({ length: count }, (_, k) => wsOnce(start + k));
    samplePeak();
    await Promise.all(ops);
  });
}

/**
 * Peers that vanish without a FIN (a pulled cable, a suspended laptop): upgraded and joined, then they never
 * answer a ping. The hub must drop them itself after wsTimeoutMs; the test only reads and discards.
 */
async function silentPeerRound(total: number): Promise<void> {
  await inBatches(total, async (start, count) => {
    const ops = Array.from({ length: count }, (_, k) => {
      const socket = rawConnect();
      socket.once("connect", () => socket.write(Buffer.concat([Buffer.from(HANDSHAKE()), maskedText(JSON.stringify({ type: "join", room: holdChannel(start + k) }))])));
      socket.resume();
      socket.once("close", () => tally("ws raw: silent peer dropped by the hub"));
      return closed(socket, `silent ws peer #${start + k}`, WS_TIMEOUT_MS + 10_000);
    });
    await settle(() => running.hub.stats().byKind.websocket === count, 5000);
    samplePeak();
    await Promise.all(ops);
  });
}

// ---------------------------------------------------------------------------------------------------------
// Publish in flight: subscribers that vanish just before, during and just after a publish is written to them.

type When = "before" | "during" | "after";

interface Subscriber {
  readonly when: When;
  readonly live: Promise<void>;
  readonly done: Promise<void>;
  /** Called once publishing starts. */
  arm(): void;
  kill(): void;
}

function whenFor(i: number): When {
  return (["before", "during", "after"] as const)[i % 3]!;
}

function liveSignal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

function sseSubscriber(i: number, channel: string): Subscriber {
  const { req, socket } = httpGet(`/api/stream?channel=${channel}`, { accept: "text/event-stream" });
  const live = liveSignal();
  let armed = false;
  const when = whenFor(i);
  req.once("response", (res) => {
    let text = "";
    res.on("data", (chunk: Buffer) => {
      if (armed && when === "during") {
        if (!socket.destroyed) tally("in flight: sse RST on first bytes of the message");
        return socket.resetAndDestroy();
      }
      text += chunk.toString("utf8");
      if (/(^|\n)id:/.test(text)) live.resolve();
    });
  });
  socket.once("close", live.resolve);
  return { when, live: live.promise, done: closed(socket, `in-flight sse #${i}`), arm: () => (armed = true), kill: () => socket.destroy() };
}

function wsSubscriber(i: number, channel: string): Subscriber {
  const { ws, socket } = wsClient();
  const live = liveSignal();
  let armed = false;
  const when = whenFor(i);
  ws.once("open", () => ws.send(JSON.stringify({ type: "join", room: channel })));
  ws.on("message", (data) => {
    if (armed && when === "during") {
      if (ws.readyState === ws.OPEN) tally("in flight: ws terminate on first message frame");
      return ws.terminate();
    }
    if (String(data).includes('"joined"')) live.resolve();
  });
  ws.once("close", () => live.resolve());
  return { when, live: live.promise, done: closed(socket(), `in-flight ws #${i}`), arm: () => (armed = true), kill: () => ws.terminate() };
}

function longPollSubscriber(i: number, channel: string, since: string): Subscriber {
  const { req, socket } = httpGet(`/api/messages?channel=${channel}&since=${since}&wait=30`);
  const when = whenFor(i);
  let armed = false;
  req.once("response", (res) => {
    if (!armed) problems.push(`in-flight long-poll #${i} answered ${res.statusCode} before the publish`);
    // "during": the answer's headers are here, its body (≈100 KB) is still being written.
    if (when === "during") (tally("in flight: long-poll RST mid-answer"), socket.resetAndDestroy());
    else res.resume();
  });
  // Live is checked in bulk through hub.stats() (the request is held).
  return { when, live: Promise.resolve(), done: closed(socket, `in-flight long-poll #${i}`), arm: () => (armed = true), kill: () => req.destroy() };
}

let publishSeq = 0;

async function inFlightRound(total: number): Promise<void> {
  // 150 subscribers + 10 vanishing WebSocket publishers + 10 vanishing POSTs: within BATCH sockets at once.
  await inBatches(total, async (start, count) => {
    const since = new Map<string, string>();
    for (const channel of PUB_CHANNELS) since.set(channel, (await running.hub.engine.read(channel, null, 0)).cursor);
    const subs: Subscriber[] = [];
    let longPolls = 0;
    for (let k = 0; k < count; k++) {
      const i = start + k;
      const channel = PUB_CHANNELS[i % PUB_CHANNELS.length]!;
      const kind = Math.floor(i / 3) % 3; // every kind meets every "when"
      if (kind === 0) subs.push(sseSubscriber(i, channel));
      else if (kind === 1) subs.push(wsSubscriber(i, channel));
      else {
        subs.push(longPollSubscriber(i, channel, since.get(channel)!));
        longPolls++;
      }
    }
    await Promise.all(subs.map((s) => s.live));
    const held = await settle(() => running.hub.stats().byKind["long-poll"] === longPolls);
    if (!held) problems.push(`in-flight batch at ${start}: only ${running.hub.stats().byKind["long-poll"]}/${longPolls} long-polls held`);
    const live = running.hub.stats().connections;
    if (live !== count) problems.push(`in-flight batch at ${start}: ${live}/${count} subscribers live before publishing`);
    samplePeak();

    // A few publishers that vanish with their publish (and its ack) in flight.
    const publishers = Array.from({ length: 10 }, (_, k) => {
      const { ws, socket } = wsClient();
      ws.once("open", () => {
        ws.send(JSON.stringify({ type: "publish", room: PUB_CHANNELS[k % PUB_CHANNELS.length], data: { seq: ++publishSeq, blob: "y" }, ref: k }));
        tally("in flight: ws publisher gone before its ack");
        ws.terminate();
      });
      return closed(socket(), `vanishing publisher #${k}`);
    });
    // And a few that vanish halfway through a POST body.
    const posters = Array.from({ length: 10 }, (_, k) => {
      let socket!: net.Socket;
      const req = http.request({
        host: HOST,
        port,
        method: "POST",
        path: "/api/messages",
        headers: { "content-type": "application/json", "content-length": "200" },
        createConnection: () => (socket = rawConnect()),
      });
      req.on("error", noop);
      req.write(`{"channel":"${PUB_CHANNELS[k % PUB_CHANNELS.length]}","data":"`, () => (tally("in flight: POST publisher gone mid-body"), req.destroy()));
      return closed(socket, `vanishing poster #${k}`);
    });

    for (const s of subs) if (s.when === "before") (tally(`in flight: killed in the same tick, before publish`), s.kill());
    for (const s of subs) s.arm();
    const published: Array<Promise<unknown>> = [];
    for (let round = 0; round < 3; round++) {
      for (const channel of PUB_CHANNELS) published.push(running.hub.publish(channel, { seq: ++publishSeq, blob: BLOB }));
    }
    for (const s of subs) if (s.when === "after") (tally(`in flight: killed in the same tick, after publish`), s.kill());
    await Promise.all(published);
    // "during" subscribers vanish on their first bytes of the message (bounded by the guard in closed()).
    await Promise.all([...subs.map((s) => s.done), ...publishers, ...posters]);
    // The server may still be reading what the vanished publishers sent; let it, so the next batch's cursors hold.
    await settle(async () => (await serverConnections()) === 0);
  }, 150);
}

// ---------------------------------------------------------------------------------------------------------

async function allScenarios(fraction: number): Promise<void> {
  await sseRound(Math.round(N * fraction));
  await longPollRound(Math.round(N * fraction));
  await wsRound(Math.round(N * fraction));
  await silentPeerRound(Math.round(N_SILENT * fraction));
  await inFlightRound(Math.round(N_INFLIGHT * fraction));
}

describe("leak: thousands of abandoned connections leave nothing behind", { concurrency: 1 }, () => {
  let startResources: Record<string, number>;
  let startConnections: number;
  let heapBefore = 0;
  let engineChannelsBefore = 0;

  before(async () => {
    running = await startHub({ historySize: 5, heartbeatMs: HEARTBEAT_MS, wsTimeoutMs: WS_TIMEOUT_MS });
    port = Number(new URL(running.url).port);
    startConnections = await serverConnections();
    // A quiet moment: no request (CloseReq, WriteWrap…) from startup still in flight.
    await settle(() => Object.keys(resources()).every((type) => !/Req$|^WriteWrap$|^Immediate$/.test(type)), 2000);
    startResources = resources();
  });

  after(async () => {
    for (const socket of clientSockets) socket.destroy();
    await running?.close();
  });

  test("warm-up round (JIT, pools, retained history) releases everything", { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const started = Date.now();
    await allScenarios(WARMUP);
    // Measured even if the assertions below fail, so the final comparison still has a reference.
    await settleHub();
    engineChannelsBefore = engineChannels();
    heapBefore = await heapAfterGc();
    t.diagnostic(`warm-up ${Date.now() - started} ms; heap after warm-up ${mb(heapBefore)}; engine channels ${engineChannelsBefore}`);
    tallies.clear();
    await assertHubReleased("warm-up");
  });

  test(`SSE: ${N} streams aborted (before the answer, at first bytes, headers only, live via FIN/RST)`, { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const started = Date.now();
    await sseRound(N);
    await assertHubReleased("SSE");
    t.diagnostic(`${N} SSE streams in ${Date.now() - started} ms`);
  });

  test(`long-poll: ${N} held polls (wait=30) aborted while held, plus ${Math.ceil(N / 10)} in flight`, { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const started = Date.now();
    await longPollRound(N);
    await assertHubReleased("long-poll");
    t.diagnostic(`${N} long-polls in ${Date.now() - started} ms`);
  });

  test(`WebSocket: ${N} sockets (clean close, terminate after join, raw mid-handshake, RST/FIN after join) + ${N_SILENT} silent peers`, { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const started = Date.now();
    await wsRound(N);
    await silentPeerRound(N_SILENT);
    await assertHubReleased("WebSocket");
    t.diagnostic(`${N} WebSockets + ${N_SILENT} silent peers dropped by the heartbeat in ${Date.now() - started} ms`);
  });

  test(`publish in flight: ${N_INFLIGHT} subscribers vanish before, during and after a 32 KB publish`, { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const started = Date.now();
    await inFlightRound(N_INFLIGHT);
    await assertHubReleased("publish in flight");
    t.diagnostic(`${N_INFLIGHT} in-flight subscribers in ${Date.now() - started} ms`);
  });

  test("the server is back where it started: sockets, timers and handles, heap", { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    assert.equal(clientSockets.size, 0, "the test's own client sockets must be closed first");
    await settle(async () => (await serverConnections()) === startConnections);
    const connections = await serverConnections();
    await settle(() => sameCounts(resources(), startResources), 3000);
    const now = resources();
    const stats = running.hub.stats();
    const engineChannelsNow = engineChannels();
    const heapAfter = await heapAfterGc();
    for (const [label, n] of [...tallies].sort()) t.diagnostic(`  ${String(n).padStart(5)}  ${label}`);
    t.diagnostic(`peak during the run: ${peak.connections} connections, ${peak.channels} channels`);
    t.diagnostic(`server sockets: start ${startConnections}, now ${connections}`);
    t.diagnostic(`resources at start ${JSON.stringify(startResources)}, now ${JSON.stringify(now)}`);
    t.diagnostic(`engine channels (retained history): after warm-up ${engineChannelsBefore}, now ${engineChannelsNow}`);
    t.diagnostic(`heap after GC: after warm-up ${mb(heapBefore)}, now ${mb(heapAfter)} (${heapAfter >= heapBefore ? "+" : ""}${mb(heapAfter - heapBefore)})`);

    assert.ok(peak.channels > 1 && peak.connections >= BATCH / 2, `the run did create channels and connections (peak ${JSON.stringify(peak)})`);
    assert.deepEqual({ connections: stats.connections, channels: stats.channels }, { connections: 0, channels: 0 });
    assert.equal(connections, startConnections, "server.getConnections() back to baseline");
    assert.deepEqual(now, startResources, "active timers and handles by type back to baseline");
    assert.equal(engineChannelsNow, engineChannelsBefore, "the engine forgets idle channels it was only subscribed to");
    assert.ok(heapAfter - heapBefore < HEAP_BOUND, `heap grew by ${mb(heapAfter - heapBefore)} (bound ${mb(HEAP_BOUND)})`);
  });
});

function sameCounts(a: Record<string, number>, b: Record<string, number>): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) if ((a[key] ?? 0) !== (b[key] ?? 0)) return false;
  return true;
}
