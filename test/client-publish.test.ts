/**
 * Publish that survives a blink: the connection is cut after the hub stored a publish and before its ack
 * reached the client; the client sends it again with the same idempotency key on the next connection and
 * the hub answers with the first id — one copy in the log, on memory, Redis and NATS, over WebSocket and
 * HTTP. Publishes made while the hub is unreachable wait in the bounded queue and go out in order.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocket } from "ws";
import { createClient, LadderError, type ClientOptions, type LadderClient, type TransportName, type WebSocketConstructor } from "../src/client/index.js";
import type { Engine } from "../src/engines/engine.js";
import { MemoryEngine } from "../src/engines/memory.js";
import { NatsEngine } from "../src/engines/nats.js";
import { RedisEngine } from "../src/engines/redis.js";
import { brokerAvailable, deleteNatsStreams, deleteRedisKeys, NATS_URL, REDIS_URL } from "./helpers/brokers.js";
import { startProxy, type Proxy } from "./helpers/proxy.js";
import { sleep, startHub } from "./helpers/server.js";

const engines: Array<{ name: string; create(): Promise<Engine> }> = [{ name: "memory", create: async () => new MemoryEngine({ maxCount: 1000, maxAgeMs: 600_000 }) }];
const redisPrefix = `ladder-test:pub:${process.pid}:`;
if (await brokerAvailable("Redis", REDIS_URL)) {
  engines.push({
    name: "redis",
    create: async () => {
      const engine = new RedisEngine({ url: REDIS_URL, prefix: redisPrefix, maxCount: 1000, maxAgeMs: 600_000 });
      await engine.whenReady();
      return engine;
    },
  });
  after(() => deleteRedisKeys(REDIS_URL, redisPrefix));
}
const natsStream = `LADDER_TEST_PUB_${process.pid}`;
if (await brokerAvailable("NATS", NATS_URL)) {
  let n = 0;
  engines.push({
    name: "nats",
    create: async () => {
      const engine = new NatsEngine({ url: NATS_URL, stream: `${natsStream}_${++n}`, prefix: `ladder-test.pub${process.pid}.${n}`, maxCount: 1000, maxAgeMs: 600_000 });
      await engine.whenReady();
      return engine;
    },
  });
  after(() => deleteNatsStreams(NATS_URL, natsStream));
}

function client(url: string, transport: TransportName[], extra: Partial<ClientOptions> = {}): LadderClient {
  return createClient({ url, transport, WebSocket: WebSocket as unknown as WebSocketConstructor, backoff: { minMs: 20, maxMs: 100 }, ...extra });
}

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function history(base: string, channel: string): Promise<Array<{ id: string; data: unknown }>> {
  const res = await fetch(`${base}/api/messages?channel=${channel}&since=0&limit=100`);
  return (await res.json()) as Array<{ id: string; data: unknown }>;
}

/** Cuts every connection through the proxy once the engine has stored the next publish, before the hub acks it. */
function cutAfterStore(engine: Engine, proxy: Proxy): { cuts: () => number } {
  const publish = engine.publish.bind(engine);
  let armed = true;
  let cuts = 0;
  const cut = (): void => {
    if (armed) {
      armed = false;
      cuts++;
      proxy.cutAll();
    }
  };
  engine.publish = async (...args) => {
    const stored = await publish(...args);
    cut();
    return stored;
  };
  // The hub publishes through publishSync where the engine has it (the memory engine).
  const publishSync = engine.publishSync?.bind(engine);
  if (publishSync) {
    engine.publishSync = (...args) => {
      const stored = publishSync(...args);
      cut();
      return stored;
    };
  }
  return { cuts: () => cuts };
}

for (const { name, create } of engines) {
  for (const transport of ["websocket", "poll"] as const) {
    test(`${name}, ${transport}: a publish whose ack is cut off is stored once and resolves with its first id`, async () => {
      const engine = await create();
      const running = await startHub({ engine });
      const proxy = await startProxy(running.url);
      const channel = `pub-${transport}`;
      const c = client(proxy.url, [transport], { pollIntervalMs: 100 });
      try {
        c.subscribe("elsewhere");
        await until("connected", () => c.state === "connected");
        const hook = cutAfterStore(engine, proxy);
        const result = await c.publish(channel, { n: 1 });
        assert.equal(hook.cuts(), 1, "the connection was cut between store and ack");
        assert.equal(result.duplicate, true, "the resend was recognised by its key");
        const stored = await history(running.url, channel);
        assert.deepEqual(stored.map((m) => m.data), [{ n: 1 }], "exactly one copy in the log");
        assert.equal(result.id, stored[0]!.id);
        // The next publish goes through normally.
        const next = await c.publish(channel, { n: 2 });
        assert.equal(next.duplicate, undefined);
        assert.deepEqual((await history(running.url, channel)).map((m) => m.data), [{ n: 1 }, { n: 2 }]);
      } finally {
        c.close();
        await proxy.close();
        await running.close();
        await engine.close();
      }
    });
  }
}

test("publishes made while the hub is unreachable wait and go out in order, once each, when it is back", async () => {
  const running = await startHub();
  const proxy = await startProxy(running.url);
  const c = client(proxy.url, ["websocket", "sse", "long-poll"]);
  try {
    c.subscribe("q");
    await until("connected", () => c.state === "connected");
    proxy.rules.down = true;
    proxy.cutAll();
    await until("disconnected", () => c.state !== "connected");
    const results = [1, 2, 3, 4, 5].map((n) => c.publish("q", n));
    await sleep(300);
    assert.deepEqual(await history(running.url, "q"), [], "nothing reached the hub while it was unreachable");
    proxy.rules.down = false;
    const acked = await Promise.all(results);
    const stored = await history(running.url, "q");
    assert.deepEqual(stored.map((m) => m.data), [1, 2, 3, 4, 5]);
    assert.deepEqual(acked.map((a) => a.id), stored.map((m) => m.id));
  } finally {
    c.close();
    await proxy.close();
    await running.close();
  }
});

test("the queue is bounded: reject-newest refuses the new publish, drop-oldest rejects the oldest not in flight; both queue_full", async () => {
  const running = await startHub();
  const proxy = await startProxy(running.url);
  proxy.rules.down = true;
  const newest = client(proxy.url, ["long-poll"], { publishQueue: { maxCount: 2 } });
  const oldest = client(proxy.url, ["long-poll"], { publishQueue: { maxCount: 2, overflow: "drop-oldest" } });
  const bytes = client(proxy.url, ["long-poll"], { publishQueue: { maxBytes: 10 } });
  try {
    for (const c of [newest, oldest, bytes]) c.subscribe("b");
    const n = [newest.publish("b", 1), newest.publish("b", 2), newest.publish("b", 3)];
    const o = [oldest.publish("b", 1), oldest.publish("b", 2), oldest.publish("b", 3)];
    const first = bytes.publish("b", "12345678");
    const tooMany = bytes.publish("b", "123");
    const refused = async (p: Promise<unknown>): Promise<LadderError> => {
      const error = await p.then(() => null, (e: unknown) => e);
      assert.ok(error instanceof LadderError, `a LadderError, got ${String(error)}`);
      assert.equal(error.code, "queue_full");
      return error;
    };
    await refused(n[2]!);
    // The first publish is in flight (its HTTP attempt is being retried): the oldest waiting one goes.
    await refused(o[1]!);
    await refused(tooMany);
    proxy.rules.down = false;
    await Promise.all([n[0], n[1], o[0], o[2], first]);
    const all = (await history(running.url, "b")).map((m) => m.data);
    assert.equal(all.length, 5);
    assert.deepEqual([...all].map(String).sort(), ["1", "1", "12345678", "2", "3"]);
  } finally {
    for (const c of [newest, oldest, bytes]) c.close();
    await proxy.close();
    await running.close();
  }
});

test("a refused publish is not retried: it rejects with the hub's code", async () => {
  const running = await startHub({ maxMessageBytes: 64 });
  const c = client(running.url, ["websocket"]);
  try {
    c.subscribe("r");
    const error = await c.publish("r", "x".repeat(100)).then(() => null, (e: unknown) => e);
    assert.ok(error instanceof LadderError);
    assert.equal(error.code, "payload_too_large");
    assert.deepEqual(await history(running.url, "r"), []);
  } finally {
    c.close();
    await running.close();
  }
});

test("over HTTP the hub answers a repeated key 200 with the first id and duplicate: true, and refuses a bad key", async () => {
  const running = await startHub();
  try {
    const post = (body: unknown): Promise<Response> =>
      fetch(`${running.url}/api/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const first = await post({ channel: "h", data: 1, key: "abc_DEF-123" });
    assert.equal(first.status, 201);
    const { id } = (await first.json()) as { id: string };
    const again = await post({ channel: "h", data: 1, key: "abc_DEF-123" });
    assert.equal(again.status, 200);
    assert.deepEqual(await again.json(), { id, channel: "h", duplicate: true });
    for (const key of ["", "has space", "x".repeat(65), 7]) {
      const bad = await post({ channel: "h", data: 1, key });
      assert.equal(bad.status, 400);
      assert.equal(((await bad.json()) as { error: { code: string } }).error.code, "bad_request");
    }
    assert.equal((await history(running.url, "h")).length, 1);
  } finally {
    await running.close();
  }
});
