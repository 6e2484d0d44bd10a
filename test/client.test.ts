/**
 * The client against a real hub, once per rung (the same cases for each), through a proxy that cuts,
 * refuses and freezes connections like real networks do.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { createClient, type ClientOptions, type LadderClient, type Message, type TransportName } from "../src/client/index.js";
import type { Gap } from "../src/protocol/index.js";
import type { RunningServer } from "../src/index.js";
import { startProxy, type Proxy } from "./helpers/proxy.js";
import { publish, sleep, startHub } from "./helpers/server.js";

let hub: RunningServer;
let proxy: Proxy;
before(async () => {
  hub = await startHub({ historySize: 5, heartbeatMs: 200 });
  proxy = await startProxy(hub.url);
});
after(async () => {
  await proxy.close();
  await hub.close();
});

let seq = 0;
const channel = (): string => `c${process.pid}x${++seq}`;

function client(options: ClientOptions = {}): LadderClient {
  return createClient({
    url: proxy.url,
    WebSocket,
    backoff: { minMs: 50, maxMs: 200 },
    probe: { minMs: 200, maxMs: 400 },
    pollIntervalMs: 100,
    longPollWaitSeconds: 2,
    heartbeatTimeoutMs: 1500,
    openTimeoutMs: 1500,
    ...options,
  });
}

async function until(check: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

function collect(c: LadderClient, ch: string, since?: string): { messages: Message[]; gaps: Gap[] } {
  const out = { messages: [] as Message[], gaps: [] as Gap[] };
  const sub = c.subscribe(ch, since ? { since } : {});
  sub.on("message", (m) => out.messages.push(m));
  sub.on("gap", (g) => out.gaps.push(g));
  return out;
}

const rungs: TransportName[] = ["websocket", "sse", "long-poll", "poll"];

for (const rung of rungs) {
  describe(`client over ${rung}`, () => {
    test("subscribes, receives in order with id/channel/data/time, and publishes", async () => {
      const c = client({ transport: rung });
      const ch = channel();
      const got = collect(c, ch);
      await until(() => c.state === "connected" && c.cursor(ch) !== null, "connected and live");
      assert.equal(c.transport, rung);
      const a = await publish(hub.url, { n: 1 }, ch);
      const b = await c.publish(ch, { n: 2 });
      await until(() => got.messages.length === 2, "two messages");
      assert.deepEqual(got.messages.map((m) => [m.id, m.channel, m.data]), [[a.id, ch, { n: 1 }], [b.id, ch, { n: 2 }]]);
      assert.equal(typeof got.messages[0]!.time, "number");
      c.close();
    });

    test("cut, publish while cut, heal: exactly the missed messages, once, in order", async () => {
      const c = client({ transport: rung });
      const ch = channel();
      const got = collect(c, ch);
      await until(() => c.state === "connected" && c.cursor(ch) !== null, "live");
      const first = await publish(hub.url, 0, ch);
      await until(() => got.messages.length === 1, "first");
      const states: string[] = [];
      c.on("state", ({ newState }) => states.push(newState));
      proxy.rules.down = true;
      proxy.cutAll();
      const missed = [];
      for (let i = 1; i <= 3; i++) missed.push(await publish(hub.url, i, ch));
      await sleep(100);
      proxy.rules.down = false;
      await until(() => got.messages.length === 4, "missed messages after heal");
      assert.deepEqual(got.messages.map((m) => m.id), [first.id, ...missed.map((m) => m.id)]);
      assert.ok(states.includes("disconnected"), `went through disconnected: ${states.join(",")}`);
      await until(() => c.state === "connected", "connected again");
      assert.equal(c.transport, rung, "a cut after delivering does not step down");
      const live = await publish(hub.url, 4, ch);
      await until(() => got.messages.length === 5, "live after heal");
      assert.equal(got.messages[4]!.id, live.id);
      c.close();
    });

    test("resumes from a saved cursor; a gap event when history no longer reaches back", async () => {
      const ch = channel();
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await publish(hub.url, i, ch)).id);
      const c1 = client({ transport: rung });
      const resumed = collect(c1, ch, ids[0]);
      await until(() => resumed.messages.length === 2, "resumed two");
      assert.deepEqual(resumed.messages.map((m) => m.id), ids.slice(1));
      assert.deepEqual(resumed.gaps, []);
      c1.close();
      for (let i = 3; i < 9; i++) ids.push((await publish(hub.url, i, ch)).id);
      const c2 = client({ transport: rung });
      const late = collect(c2, ch, ids[1]);
      await until(() => late.messages.length === 5, "retained five");
      assert.equal(late.gaps.length, 1);
      assert.deepEqual(late.gaps[0], { channel: ch, reason: "trimmed", since: ids[1], resume: ids[3] });
      assert.deepEqual(late.messages.map((m) => m.data), [4, 5, 6, 7, 8]);
      c2.close();
    });

    test("several subscriptions share one client; unsubscribe stops one", async () => {
      const c = client({ transport: rung });
      const x = channel();
      const y = channel();
      const gx = collect(c, x);
      const subY = c.subscribe(y);
      const gy: Message[] = [];
      subY.on("message", (m) => gy.push(m));
      await until(() => c.state === "connected" && c.cursor(x) !== null && c.cursor(y) !== null, "both live");
      await publish(hub.url, "x1", x);
      await publish(hub.url, "y1", y);
      await until(() => gx.messages.length === 1 && gy.length === 1, "both");
      subY.unsubscribe();
      await sleep(150);
      await publish(hub.url, "y2", y);
      await publish(hub.url, "x2", x);
      await until(() => gx.messages.length === 2, "x2");
      await sleep(300);
      assert.deepEqual(gy.map((m) => m.data), ["y1"]);
      c.close();
    });
  });
}

describe("climbing down and back up the ladder", () => {
  test("auto picks WebSocket first", async () => {
    const c = client();
    collect(c, channel());
    await until(() => c.state === "connected", "connected");
    assert.equal(c.transport, "websocket");
    c.close();
  });

  test("upgrades refused → SSE; SSE refused too → long-poll; the rung and reason are observable", async () => {
    proxy.rules.refuseUpgrades = true;
    proxy.rules.sse = "refuse";
    try {
      const c = client({ probe: { minMs: 60_000, maxMs: 60_000 } });
      const events: string[] = [];
      c.on("transport", ({ transport, reason }) => events.push(`${transport}:${reason.split(":")[0]}`));
      const ch = channel();
      const got = collect(c, ch);
      await until(() => c.state === "connected" && c.cursor(ch) !== null, "connected");
      assert.equal(c.transport, "long-poll");
      assert.deepEqual(events, ["websocket:initial", "sse:fallback", "long-poll:fallback"]);
      assert.deepEqual([...c.failedTransports].sort(), ["sse", "websocket"]);
      const m = await publish(hub.url, "via long-poll", ch);
      await until(() => got.messages.length === 1, "delivered");
      assert.equal(got.messages[0]!.id, m.id);
      c.close();
    } finally {
      proxy.rules.refuseUpgrades = false;
      proxy.rules.sse = "pass";
    }
  });

  test("a network that buffers SSE is noticed by the open timeout and stepped over", async () => {
    proxy.rules.refuseUpgrades = true;
    proxy.rules.sse = "buffer";
    try {
      const c = client({ openTimeoutMs: 500, probe: { minMs: 60_000, maxMs: 60_000 } });
      collect(c, channel());
      await until(() => c.transport === "long-poll" && c.state === "connected", "long-poll");
      c.close();
    } finally {
      proxy.rules.refuseUpgrades = false;
      proxy.rules.sse = "pass";
    }
  });

  test("after stepping down, a background probe climbs back once the upgrade works, losing and repeating nothing", async () => {
    proxy.rules.refuseUpgrades = true;
    const c = client();
    const ch = channel();
    const transports: string[] = [];
    c.on("transport", ({ transport }) => transports.push(transport));
    const got = collect(c, ch);
    await until(() => c.transport === "sse" && c.state === "connected" && c.cursor(ch) !== null, "on sse");
    const published: string[] = [];
    let publishing = true;
    const publisher = (async () => {
      for (let i = 0; publishing && i < 200; i++) {
        published.push((await publish(hub.url, i, ch)).id);
        await sleep(10);
      }
    })();
    await sleep(100);
    proxy.rules.refuseUpgrades = false;
    await until(() => c.transport === "websocket", "climbed back to websocket", 10_000);
    await sleep(200);
    publishing = false;
    await publisher;
    await until(() => got.messages.length === published.length, `all ${published.length} delivered`);
    assert.deepEqual(got.messages.map((m) => m.id), published);
    assert.deepEqual(transports, ["websocket", "sse", "websocket"]);
    c.close();
  });

  for (const rung of ["websocket", "sse"] as const) {
    test(`a frozen ${rung} peer is noticed by heartbeats and replaced; nothing lost`, async () => {
      const c = client({ transport: rung, heartbeatTimeoutMs: 1000 });
      const ch = channel();
      const got = collect(c, ch);
      await until(() => c.state === "connected" && c.cursor(ch) !== null, "live");
      proxy.rules.frozen = true;
      const frozenAt = Date.now();
      const m1 = await publish(hub.url, "during freeze", ch);
      await until(() => c.state !== "connected", "freeze noticed", 5000);
      const noticed = Date.now() - frozenAt;
      assert.ok(noticed < 2500, `noticed after ${noticed} ms`);
      proxy.rules.frozen = false;
      proxy.cutAll();
      await until(() => got.messages.length === 1, "message from the freeze delivered after the replacement");
      assert.equal(got.messages[0]!.id, m1.id);
      c.close();
    });
  }
});

test("close() leaves no timers behind", async () => {
  const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
  await sleep(50);
  const before = timers();
  const clients = rungs.map((rung) => client({ transport: rung }));
  for (const c of clients) collect(c, channel());
  await until(() => clients.every((c) => c.state === "connected"), "all connected");
  for (const c of clients) c.close();
  for (const c of clients) assert.equal(c.state, "closed");
  await until(() => timers() <= before, `timers back to ${before} (now ${timers()})`, 5000);
});

test("reconnect storms are spread: many clients losing the server do not all return in the same 100 ms", async () => {
  const n = 60;
  const clients = Array.from({ length: n }, () => client({ transport: "websocket", backoff: { minMs: 1000, maxMs: 5000 } }));
  const reconnectAt: number[] = [];
  for (const c of clients) {
    collect(c, "storm");
    c.on("state", ({ newState }) => {
      if (newState === "connecting" && cutAt > 0) reconnectAt.push(Date.now() - cutAt);
    });
  }
  let cutAt = 0;
  await until(() => clients.every((c) => c.state === "connected"), "all connected");
  cutAt = Date.now();
  proxy.cutAll();
  await until(() => reconnectAt.length >= n, "every client retried", 5000);
  const buckets = new Map<number, number>();
  for (const t of reconnectAt.slice(0, n)) buckets.set(Math.floor(t / 100), (buckets.get(Math.floor(t / 100)) ?? 0) + 1);
  const busiest = Math.max(...buckets.values());
  assert.ok(busiest <= n * 0.35, `busiest 100 ms held ${busiest} of ${n} reconnects`);
  assert.ok(buckets.size >= 6, `spread over ${buckets.size} windows of 100 ms`);
  for (const c of clients) c.close();
});

test("publishBatch posts many messages in one request: an id or its own error each, good ones published once and in order", async () => {
  const c = client();
  const ch = channel();
  const results = await c.publishBatch([{ channel: ch, data: 1 }, { channel: "bad channel!", data: 2 }, { channel: ch, data: 3 }]);
  assert.equal(results.length, 3);
  assert.ok("id" in results[0]! && "id" in results[2]!);
  assert.equal("error" in results[1]! && results[1].error.code, "bad_channel");
  const stored = (await (await fetch(`${hub.url}/api/messages?channel=${ch}&since=0`)).json()) as Message[];
  assert.deepEqual(stored.map((m) => m.data), [1, 3]);
  assert.deepEqual(stored.map((m) => m.id), [(results[0] as { id: string }).id, (results[2] as { id: string }).id]);
  await assert.rejects(c.publishBatch([]), (error: unknown) => (error as { code?: string }).code === "bad_request");
  c.close();
});
