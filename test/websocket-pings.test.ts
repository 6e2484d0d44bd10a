/**
 * WebSocket pings that ride on data (transports/ws-liveness.ts): a socket carrying messages takes its ping
 * in the same write as its next messages instead of a system call of its own, while a live peer is never
 * dropped and a dead one is still dropped within wsTimeoutMs + heartbeatMs of when it was last heard.
 * The decision is checked on a simulated clock (drifting ticks, adversarial data timings), the wiring over
 * real sockets, where "one write" is seen as one TCP read on loopback.
 */
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { test } from "node:test";
import { WebSocket } from "ws";
import { PeerLiveness } from "../src/server/transports/ws-liveness.js";
// A seeded PRNG (mulberry32), so a failing schedule can be replayed.
import { seededRandom } from "../soak/faults.js";
import { sleep, startHub } from "./helpers/server.js";

// ---- The decision on a simulated clock ----

interface Sim {
  readonly heartbeatMs: number;
  readonly wsTimeoutMs: number;
  /** Extra delay of each tick over the interval (setInterval runs late under load), by tick number. */
  readonly drift: (tick: number) => number;
  /** Times the socket writes messages. */
  readonly data: readonly number[];
  /** Times the peer sends a frame of its own. */
  readonly talk?: readonly number[];
  /** The peer answers each ping this long after it went out… */
  readonly rtt: number;
  /** …until this time (Infinity: it never dies). */
  readonly deadAt: number;
  readonly until: number;
}

interface SimResult {
  /** Tick time at which the peer was terminated, or null. */
  readonly terminatedAt: number | null;
  /** When the peer was last heard from before it was terminated. */
  readonly lastHeard: number;
  readonly pingsAlone: number;
  readonly pingsWithData: number;
  /** Ticks at which a ping was due (not skipped) and the socket wrote no data in the half interval before. */
  readonly idleTicksPinged: number;
  readonly idleTicks: number;
}

/** Drives a PeerLiveness the way WebSocketConnection does, a millisecond at a time. */
function simulate(sim: Sim): SimResult {
  const { heartbeatMs: H, wsTimeoutMs: W } = sim;
  const liveness = new PeerLiveness(0);
  const pongs: number[] = [];
  const data = [...sim.data].sort((a, b) => a - b);
  const talk = [...(sim.talk ?? [])].sort((a, b) => a - b);
  let lastWrite = Number.NEGATIVE_INFINITY;
  let nextTick = H + sim.drift(1);
  let tick = 1;
  let pingsAlone = 0;
  let pingsWithData = 0;
  let idleTicks = 0;
  let idleTicksPinged = 0;
  const ping = (at: number): void => {
    liveness.pinged(at);
    if (at < sim.deadAt) pongs.push(at + sim.rtt);
  };
  for (let t = 0; t <= sim.until; t++) {
    while (pongs.length > 0 && pongs[0]! <= t) {
      pongs.shift();
      liveness.heard(t);
    }
    while (talk.length > 0 && talk[0]! <= t) {
      talk.shift();
      if (t < sim.deadAt) liveness.heard(t);
    }
    while (data.length > 0 && data[0]! <= t) {
      data.shift();
      lastWrite = t;
      if (liveness.pending) {
        pingsWithData++;
        ping(t);
      }
    }
    if (t === nextTick) {
      const active = t - lastWrite < H / 2;
      const beat = liveness.beat(t, H, W, active);
      if (beat === "terminate") return { terminatedAt: t, lastHeard: liveness.lastSeen, pingsAlone, pingsWithData, idleTicksPinged, idleTicks };
      if (!active && beat !== "none") idleTicks++;
      if (beat === "ping") {
        pingsAlone++;
        if (!active) idleTicksPinged++;
        ping(t);
      }
      tick++;
      nextTick = t + H + sim.drift(tick);
    }
  }
  return { terminatedAt: null, lastHeard: liveness.lastSeen, pingsAlone, pingsWithData, idleTicksPinged, idleTicks };
}


/** Writes at random gaps of up to `maxGap` ms. */
function randomData(random: () => number, maxGap: number, until: number): number[] {
  const times: number[] = [];
  for (let t = Math.floor(random() * maxGap); t < until; t += 1 + Math.floor(random() * maxGap)) times.push(t);
  return times;
}

const H = 100;
const MAX_DRIFT = 8;
const CONFIGS = [200, 250, 400].map((wsTimeoutMs) => ({ heartbeatMs: H, wsTimeoutMs }));

test("liveness: a live peer is never terminated, whatever the data timing and however late the ticks run", () => {
  for (const config of CONFIGS) {
    for (let seed = 1; seed <= 300; seed++) {
      const random = seededRandom(seed);
      const drifts = Array.from({ length: 200 }, () => Math.floor(random() * MAX_DRIFT));
      const rtt = 1 + Math.floor(random() * (H / 2 - 2));
      const data = randomData(random, Math.floor(random() * 2.5 * H) + 1, 10_000);
      const result = simulate({ ...config, drift: (k) => drifts[k % drifts.length]!, data, rtt, deadAt: Infinity, until: 10_000 });
      assert.equal(result.terminatedAt, null, `seed ${seed}, wsTimeoutMs ${config.wsTimeoutMs}, rtt ${rtt}: a live peer terminated at ${result.terminatedAt}`);
    }
  }
});

test("liveness: a ping that rides on data just before a tick protects a live peer whose timeout falls due on that tick", () => {
  // The tick at 200 pings (no data in the half interval before), answered at 205; the one at 305 (5 ms late)
  // finds the socket active and the peer silent exactly one interval, and defers; the ping rides on data at
  // 412, 1 ms before a tick 8 ms late, where the peer is silent past two intervals with its pong in flight.
  const drifts = [0, 0, 0, 5, 8];
  const result = simulate({ heartbeatMs: H, wsTimeoutMs: 2 * H, drift: (k) => drifts[k] ?? 0, data: [280, 412], rtt: 5, deadAt: Infinity, until: 800 });
  assert.equal(result.terminatedAt, null, `terminated at ${result.terminatedAt}`);
  assert.ok(result.pingsWithData >= 1);
});

test("liveness: a deferred ping that found no data protects a live peer until it is written on the next tick", () => {
  // The tick at 100 pings, answered at 103; the one at 202 finds data written at 190 and defers; no data
  // follows, and the next tick runs 9 ms late, when the peer has been silent past two intervals.
  const drifts = [0, 0, 2, 9];
  const result = simulate({ heartbeatMs: H, wsTimeoutMs: 2 * H, drift: (k) => drifts[k] ?? 0, data: [190], rtt: 3, deadAt: Infinity, until: 800 });
  assert.equal(result.terminatedAt, null, `terminated at ${result.terminatedAt}`);
  assert.ok(result.pingsAlone >= 4);
});

test("liveness: a dead peer is terminated within wsTimeoutMs + heartbeatMs of when it was last heard", () => {
  for (const config of CONFIGS) {
    for (let seed = 1; seed <= 300; seed++) {
      const random = seededRandom(seed * 7919);
      const drifts = Array.from({ length: 200 }, () => Math.floor(random() * MAX_DRIFT));
      const rtt = 1 + Math.floor(random() * 20);
      const deadAt = 500 + Math.floor(random() * 3000);
      const data = randomData(random, Math.floor(random() * 2.5 * H) + 1, 10_000);
      const talk = randomData(random, 3 * H, deadAt);
      const result = simulate({ ...config, drift: (k) => drifts[k % drifts.length]!, data, talk, rtt, deadAt, until: 10_000 });
      assert.notEqual(result.terminatedAt, null, `seed ${seed}: never terminated`);
      // The bound, plus how late the ticks in between may each run.
      const bound = config.wsTimeoutMs + config.heartbeatMs + 3 * MAX_DRIFT;
      assert.ok(result.terminatedAt! - result.lastHeard <= bound, `seed ${seed}, wsTimeoutMs ${config.wsTimeoutMs}: terminated ${result.terminatedAt! - result.lastHeard} ms after last heard (bound ${bound})`);
    }
  }
});

test("liveness: a peer silent for more than wsTimeoutMs − heartbeatMs is pinged at once, not left to wait for data", () => {
  // It spoke at 60 (so the tick at 100 skipped it) and died; data at 160 makes the socket active at 200,
  // when it has been silent 140 ms: a ping left pending there could ride on data at 299 and, being fresh
  // at the tick at 300, hold off the terminate to 400, past the bound of 360.
  const result = simulate({ heartbeatMs: H, wsTimeoutMs: 2 * H, drift: () => 0, data: [160, 299], talk: [60], rtt: 2, deadAt: 61, until: 1000 });
  assert.ok(result.terminatedAt !== null && result.terminatedAt - 60 <= 3 * H, `terminated ${result.terminatedAt! - 60} ms after last heard`);
});

test("liveness: an idle socket is pinged on every tick; a busy one's pings all ride on its data", () => {
  const idle = simulate({ heartbeatMs: H, wsTimeoutMs: 2 * H, drift: () => 2, data: [], rtt: 2, deadAt: Infinity, until: 3000 });
  assert.equal(idle.terminatedAt, null);
  assert.ok(idle.idleTicks >= 25, `${idle.idleTicks} idle ticks`);
  assert.equal(idle.idleTicksPinged, idle.idleTicks, "every idle tick pings");
  const busy = simulate({ heartbeatMs: H, wsTimeoutMs: 2 * H, drift: () => 2, data: Array.from({ length: 150 }, (_, i) => 7 + i * 20), rtt: 2, deadAt: Infinity, until: 3000 });
  assert.equal(busy.terminatedAt, null);
  // The first tick, 2 ms late, finds the peer silent since it connected, over wsTimeoutMs − heartbeatMs: pinged at once.
  assert.ok(busy.pingsAlone <= 1, `${busy.pingsAlone} pings written alone`);
  assert.ok(busy.pingsWithData >= 25, `${busy.pingsWithData} pings with data`);
});

// ---- Over real sockets ----

type Frame = { opcode: number; chunk: number };

/** Reads the server's (unmasked) frames off the client's raw socket, noting the TCP read each one ended in. */
function tapFrames(ws: WebSocket): Frame[] {
  const frames: Frame[] = [];
  let buffered = Buffer.alloc(0);
  let chunk = 0;
  (ws as unknown as { _socket: Socket })._socket.on("data", (data: Buffer) => {
    chunk++;
    buffered = Buffer.concat([buffered, data]);
    for (;;) {
      if (buffered.length < 2) break;
      let length = buffered[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffered.length < 4) break;
        length = buffered.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buffered.length < 10) break;
        length = Number(buffered.readBigUInt64BE(2));
        offset = 10;
      }
      if (buffered.length < offset + length) break;
      frames.push({ opcode: buffered[0]! & 0x0f, chunk });
      buffered = buffered.subarray(offset + length);
    }
  });
  return frames;
}

async function joined(url: string, room: string, options: { autoPong?: boolean } = {}): Promise<WebSocket> {
  const ws = new WebSocket(`${url.replace("http", "ws")}/api/ws`, options);
  await new Promise<void>((resolve, reject) => {
    ws.once("error", reject);
    ws.on("message", (raw) => {
      if ((JSON.parse(String(raw)) as { type: string }).type === "joined") resolve();
    });
    ws.once("open", () => ws.send(JSON.stringify({ type: "join", room })));
  });
  return ws;
}

test("a WebSocket receiving messages gets its pings in the same TCP write as a message, one per tick, and stays open", async () => {
  const running = await startHub({ heartbeatMs: 200, wsTimeoutMs: 1000 });
  try {
    const ws = await joined(running.url, "carry");
    const frames = tapFrames(ws);
    const feed = setInterval(() => void running.hub.publish("carry", { at: Date.now() }), 40);
    await sleep(1500);
    clearInterval(feed);
    const pings = frames.filter((f) => f.opcode === 0x9);
    const withMessage = new Set(frames.filter((f) => f.opcode === 0x1).map((f) => f.chunk));
    assert.ok(pings.length >= 4, `${pings.length} pings over seven ticks`);
    const alone = pings.filter((p) => !withMessage.has(p.chunk)).length;
    assert.equal(alone, 0, `${alone} of ${pings.length} pings came in a read of their own`);
    assert.equal(ws.readyState, ws.OPEN);
    ws.terminate();
  } finally {
    await running.close();
  }
});

test("a WebSocket that receives messages but answers no pings is still dropped within wsTimeoutMs + heartbeatMs", async () => {
  const running = await startHub({ heartbeatMs: 100, wsTimeoutMs: 200 });
  try {
    const ws = await joined(running.url, "deaf", { autoPong: false });
    // Its last frame was the join, answered just now.
    const lastHeard = Date.now();
    const closed = new Promise<number>((resolve) => ws.once("close", () => resolve(Date.now())));
    const feed = setInterval(() => void running.hub.publish("deaf", { at: Date.now() }), 30);
    const closedAt = await Promise.race([closed, sleep(3000).then(() => null)]);
    clearInterval(feed);
    assert.notEqual(closedAt, null, "never dropped");
    // 300 ms, plus a tick's lateness and the slices of a loaded test machine.
    assert.ok(closedAt! - lastHeard < 300 + 150, `dropped ${closedAt! - lastHeard} ms after its last frame`);
  } finally {
    await running.close();
  }
});

test("a WebSocket that answers pings is never dropped at the tightest timeout (two intervals), with data at any pace", async () => {
  const running = await startHub({ heartbeatMs: 100, wsTimeoutMs: 200 });
  try {
    const sockets = await Promise.all(["a", "b", "c"].map((room) => joined(running.url, `pace-${room}`)));
    const random = seededRandom(42);
    const paces = { "pace-a": 15, "pace-b": 70, "pace-c": 160 };
    const stop = Date.now() + 2000;
    await Promise.all(
      Object.entries(paces).map(async ([room, maxGap]) => {
        while (Date.now() < stop) {
          await sleep(Math.floor(random() * maxGap));
          await running.hub.publish(room, { at: Date.now() });
        }
      }),
    );
    for (const ws of sockets) {
      assert.equal(ws.readyState, ws.OPEN);
      ws.terminate();
    }
  } finally {
    await running.close();
  }
});
