/**
 * `ladder serve --workers 2`, as real processes: a primary holding the memory engine's log and two
 * workers sharing the port. Connections are pinned to a chosen worker (cluster hands them round-robin;
 * the kernel's socket table says which worker holds which), so every case checks a behaviour across
 * workers: one log, long-polls answered by a publish on the other worker, SSE/WebSocket fan-out from
 * both, SSE resume elsewhere with Last-Event-ID, node-wide /metrics, a worker killed mid-stream, and
 * a drain on SIGTERM.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { request, type IncomingMessage } from "node:http";
import { after, before, describe, test } from "node:test";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { WebSocket } from "ws";
import { createClient, type WebSocketConstructor } from "../src/client/index.js";
import { restartDelay, startPrimary } from "../src/cluster/primary.js";
import { DEFAULT_MAX_CHANNELS, DEFAULT_MAX_LOG_BYTES } from "../src/engines/memory.js";
import { pinTo, startCluster, type Cluster, type Pinned } from "./helpers/workers.js";

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
let seq = 0;
const fresh = (): string => `workers.${process.pid}.${++seq}`;

async function until(what: string, done: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface Stream {
  readonly events: EventSourceMessage[];
  readonly ended: Promise<void>;
  close(): void;
}

/** An SSE stream over a connection pinned to one worker. */
function sseOn(pinned: Pinned, path: string, headers: Record<string, string> = {}): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const events: EventSourceMessage[] = [];
    let ready: () => void = () => {};
    const live = new Promise<void>((resolve) => (ready = resolve));
    // `ready` says the stream is live: a publish after it reaches the stream.
    const parser = createParser({ onEvent: (event) => (event.event === "ready" ? ready() : events.push(event)) });
    const req = request(pinned.url + path, { agent: pinned.agent, headers: { accept: "text/event-stream", ...headers } }, (res: IncomingMessage) => {
      if (res.statusCode !== 200) return reject(new Error(`stream answered ${res.statusCode}`));
      res.setEncoding("utf8");
      const ended = new Promise<void>((done) => res.on("close", done));
      res.on("data", (chunk: string) => parser.feed(chunk));
      const timer = setTimeout(() => reject(new Error("no ready event")), 5000);
      void live.then(() => {
        clearTimeout(timer);
        resolve({ events, ended, close: () => req.destroy() });
      });
    });
    req.on("error", () => {});
    req.end();
  });
}

/** A WebSocket on whichever worker it lands on, with the worker that holds it. */
async function wsOn(cluster: Cluster, channel: string): Promise<{ ws: WebSocket; worker: number; ids: string[] }> {
  const ws = new WebSocket(`${cluster.url.replace(/^http/, "ws")}/api/ws`);
  const ids: string[] = [];
  let localPort = 0;
  ws.on("upgrade", (res: IncomingMessage) => (localPort = res.socket.localPort ?? 0));
  let joined = false;
  ws.on("message", (data) => {
    const frame = JSON.parse(String(data)) as { type: string; id?: string };
    if (frame.type === "message") ids.push(frame.id!);
    if (frame.type === "joined") joined = true;
  });
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  ws.send(JSON.stringify({ type: "join", room: channel }));
  await until("joined", () => joined);
  return { ws, worker: await cluster.workerOf(localPort), ids };
}

describe("ladder serve --workers 2: one log, any worker", () => {
  let cluster: Cluster;
  let a: Pinned;
  let b: Pinned;
  const extra: Pinned[] = [];
  const pin = async (worker: number): Promise<Pinned> => {
    const pinned = await pinTo(cluster, worker);
    extra.push(pinned);
    return pinned;
  };

  before(async () => {
    cluster = await startCluster(["--metrics", "--heartbeat", "1"]);
    const [first, second] = cluster.workerPids();
    assert.ok(first && second && first !== second, "two workers");
    a = await pinTo(cluster, first);
    b = await pinTo(cluster, second);
  });
  after(async () => {
    for (const p of [a, b, ...extra]) p?.close();
    assert.equal(await cluster?.stop(), 0, cluster?.output());
  });

  test("publishes on either worker share one id order, and both read the same history", async () => {
    const ch = fresh();
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push(await (i % 2 ? b : a).publish(ch, i));
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1]! < ids[i]! || ids[i - 1]!.length < ids[i]!.length, `ids increase: ${ids.join(" ")}`);
    for (const p of [a, b]) {
      const answer = await p.request(`/api/messages?channel=${ch}&since=0`);
      assert.equal(answer.status, 200);
      const got = JSON.parse(answer.body) as Array<{ id: string; data: number }>;
      assert.deepEqual(got.map((m) => m.id), ids);
      assert.deepEqual(got.map((m) => m.data), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
  });

  test("a long-poll held on one worker is answered by a publish on the other", async () => {
    for (const [holder, publisher] of [[a, b], [b, a]] as const) {
      const ch = fresh();
      const first = await publisher.publish(ch, "first");
      const holding = (await pin(holder.worker)).request(`/api/messages?channel=${ch}&since=${first}&wait=10`);
      await sleep(200);
      const id = await publisher.publish(ch, "second");
      const answer = await holding;
      assert.equal(answer.status, 200);
      assert.deepEqual((JSON.parse(answer.body) as Array<{ id: string }>).map((m) => m.id), [id]);
    }
  });

  test("SSE streams and WebSockets on both workers get every publish from both, in order, once", async () => {
    const ch = fresh();
    const streams = await Promise.all([a.worker, b.worker, a.worker, b.worker].map(async (w) => sseOn(await pin(w), `/api/stream?channel=${ch}`)));
    const sockets: Array<Awaited<ReturnType<typeof wsOn>>> = [];
    while (new Set(sockets.map((s) => s.worker)).size < 2 || sockets.length < 4) {
      sockets.push(await wsOn(cluster, ch));
      assert.ok(sockets.length < 20, "WebSockets landed on both workers");
    }
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(await (i % 2 ? b : a).publish(ch, { i }));
    await until("every subscriber has every message", () => streams.every((s) => s.events.length >= 20) && sockets.every((s) => s.ids.length >= 20));
    await sleep(100);
    for (const s of streams) assert.deepEqual(s.events.map((e) => e.id), ids);
    for (const s of sockets) assert.deepEqual(s.ids, ids);
    for (const s of streams) s.close();
    for (const s of sockets) s.ws.close();
  });

  test("SSE resumes on the other worker from the Last-Event-ID this one gave", async () => {
    const ch = fresh();
    const before = await sseOn(await pin(a.worker), `/api/stream?channel=${ch}`);
    const seen: string[] = [];
    for (let i = 0; i < 3; i++) seen.push(await a.publish(ch, i));
    await until("three events", () => before.events.length === 3);
    before.close();
    const missed: string[] = [];
    for (let i = 3; i < 6; i++) missed.push(await (i % 2 ? a : b).publish(ch, i));
    const resumed = await sseOn(await pin(b.worker), `/api/stream?channel=${ch}`, { "last-event-id": before.events.at(-1)!.id! });
    const live = await a.publish(ch, 6);
    await until("missed and live events", () => resumed.events.length >= 4);
    await sleep(100);
    assert.deepEqual(resumed.events.map((e) => e.id), [...missed, live]);
    resumed.close();
  });

  test("/metrics and /readyz on either worker describe the whole node", async () => {
    const ch = fresh();
    const streams = [await sseOn(await pin(a.worker), `/api/stream?channel=${ch}`), await sseOn(await pin(b.worker), `/api/stream?channel=${ch}`)];
    // Streams closed by earlier cases may take a moment to be noticed: wait until the count settles.
    const deadline = Date.now() + 3000;
    while (!/^ladder_connections\{transport="sse"\} 2$/m.test((await a.request("/metrics")).body) && Date.now() < deadline) await sleep(50);
    for (const p of [a, b]) {
      const text = (await p.request("/metrics")).body;
      assert.match(text, /^ladder_workers 2$/m);
      assert.match(text, /^ladder_connections\{transport="sse"\} 2$/m, text);
      assert.match(text, /^ladder_engine_ready\{engine="ipc"\} 1$/m);
      // The shared log's budget, from the primary that holds it: reported once, not summed per worker.
      assert.match(text, new RegExp(`^ladder_log_max_bytes ${DEFAULT_MAX_LOG_BYTES}$`, "m"), text);
      assert.match(text, new RegExp(`^ladder_log_max_channels ${DEFAULT_MAX_CHANNELS}$`, "m"));
      assert.match(text, /^ladder_log_retained_bytes [1-9]\d*$/m, "earlier cases published: the log retains bytes");
      assert.match(text, /^ladder_log_channels [1-9]\d*$/m);
      assert.match(text, /^ladder_log_evicted_messages_total 0$/m);
      const ready = await p.request("/readyz");
      assert.equal(ready.status, 200);
    }
    for (const s of streams) s.close();
  });
});

test("a worker killed mid-stream: the client resumes on another with nothing lost or twice, and the worker is restarted", async () => {
  const cluster = await startCluster();
  try {
    const ch = fresh();
    const [first, second] = cluster.workerPids();
    const publishers = [await pinTo(cluster, first!), await pinTo(cluster, second!)];
    const pinnedPorts = new Set(cluster.connections().map((c) => c.localPort));
    const client = createClient({ url: cluster.url, transport: "websocket", WebSocket: WebSocket as unknown as WebSocketConstructor, backoff: { minMs: 20, maxMs: 100 } });
    const got: Array<{ id: string; n: number }> = [];
    const sub = client.subscribe(ch, { since: "0" });
    sub.on("message", (m) => got.push({ id: m.id, n: (m.data as { n: number }).n }));
    await until("client connected", () => client.state === "connected");
    const held = () => cluster.connections().filter((c) => !pinnedPorts.has(c.localPort));
    await until("client's socket seen", () => held().length === 1);
    const victim = held()[0]!.worker;
    const survivor = publishers.find((p) => p.worker !== victim)!;
    const total = 200;
    let killed = false;
    for (let n = 0; n < total; n++) {
      if (n === 80) {
        process.kill(victim, "SIGKILL");
        killed = true;
      }
      // After the kill only the survivor takes publishes (its pinned connection stays up).
      await (killed ? survivor : publishers[n % 2]!).publish(ch, { n });
      if (n % 10 === 0) await sleep(5);
    }
    await until("the client has every message", () => got.length >= total, 10_000);
    await sleep(200);
    assert.deepEqual(got.map((m) => m.n), Array.from({ length: total }, (_, n) => n), "nothing lost, nothing twice, in order");
    const log = JSON.parse((await survivor.request(`/api/messages?channel=${ch}&since=0&limit=1000`)).body) as Array<{ id: string }>;
    assert.deepEqual(got.map((m) => m.id), log.map((m) => m.id), "the ids are the log's");
    await until("the dead worker replaced", () => cluster.workerPids().length === 2 && !cluster.workerPids().includes(victim), 10_000);
    client.close();
    for (const p of publishers) p.close();
  } finally {
    assert.equal(await cluster.stop(), 0, cluster.output());
  }
});

test("SIGTERM to the primary drains every worker: held polls answered, streams ended, exit 0", async () => {
  const cluster = await startCluster();
  const ch = fresh();
  const workers = cluster.workerPids();
  const polls = await Promise.all(workers.map((w) => pinTo(cluster, w)));
  const streamsOn = await Promise.all(workers.map((w) => pinTo(cluster, w)));
  const streams = await Promise.all(streamsOn.map((p) => sseOn(p, `/api/stream?channel=${ch}`)));
  const held = polls.map((p) => p.request(`/api/messages?channel=${ch}&wait=25`));
  await sleep(200);
  const started = Date.now();
  const code = await cluster.stop();
  assert.equal(code, 0, cluster.output());
  for (const answer of await Promise.all(held)) assert.equal(answer.status, 200, "a held poll is answered, not cut");
  await Promise.all(streams.map((s) => s.ended));
  assert.ok(Date.now() - started < 8000, "drained well before the poll's 25 s wait");
  for (const pid of workers) assert.throws(() => process.kill(pid, 0), "worker exited");
  for (const p of [...polls, ...streamsOn]) p.close();
});

test("--workers is checked like every setting: auto, a bound, and no self-signed certificate per process", () => {
  const run = (...args: string[]) => spawnSync(process.execPath, ["bin/ladder.js", "serve", ...args], { encoding: "utf8", timeout: 5000 });
  for (const bad of ["0", "1.5", "1025"]) {
    const out = run(`--workers=${bad}`);
    assert.equal(out.status, 2, `--workers ${bad}`);
    assert.match(out.stderr, /workers: expected auto or a whole number from 1 to 1024/);
  }
  const env = spawnSync(process.execPath, ["bin/ladder.js", "serve"], { encoding: "utf8", timeout: 5000, env: { ...process.env, LADDER_WORKERS: "zero" } });
  assert.equal(env.status, 2);
  assert.match(env.stderr, /LADDER_WORKERS: expected auto/);
  const tls = run("--workers", "2", "--tls-self-signed");
  assert.equal(tls.status, 2);
  assert.match(tls.stderr, /tls-self-signed makes one certificate per process/);
  const presence = run("--workers", "2", "--presence", "chat.*");
  assert.equal(presence.status, 2);
  assert.match(presence.stderr, /--presence with --workers needs a broker engine/);
  assert.match(run("--help").stdout, /--workers <n>/);
});

test("a worker dying again and again is restarted later and later, up to a bound", () => {
  assert.deepEqual([1, 2, 3, 4, 5].map(restartDelay), [0, 100, 200, 400, 800]);
  assert.equal(restartDelay(100), 30_000);
});

test("a worker that stops answering (SIGSTOP) is killed and replaced, so it cannot hold its clients or the primary's memory", async () => {
  // This test's own process is the primary; the workers run `ladder serve` as any cluster worker does.
  const primary = await startPrimary({ workers: 2, exec: "bin/ladder.js", args: ["serve", "--workers", "2", "--port", "0", "--log-level", "error", "--no-demo"], workerTimeoutMs: 1500 });
  try {
    const [victim] = primary.pids();
    process.kill(victim!, "SIGSTOP");
    await until("the stuck worker replaced", () => !primary.pids().includes(victim!) && primary.pids().length === 2, 15_000);
    assert.equal(primary.restarts, 1);
    assert.equal((await fetch(`${primary.url}/healthz`)).status, 200);
  } finally {
    await primary.close();
  }
});
