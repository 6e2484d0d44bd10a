/**
 * What the broker engines do beyond the shared conformance suite, on the shared loopback Redis and NATS
 * (own key prefixes and stream names, removed after):
 * - two engines (two nodes) publishing to one channel at once: ids strictly increase, both see the same
 *   order live, and the trim horizon stays exact (NATS: the expected-last-subject-sequence retries);
 * - Redis: a channel key that expired (all its history aged out) still answers old cursors with a gap,
 *   recent ones without;
 * - NATS: a recreated stream gets a new epoch — old cursors get an `unknown` gap, never a silent skip,
 *   and live listeners move on to the new stream.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import type { Engine } from "../src/engines/engine.js";
import { NatsEngine } from "../src/engines/nats.js";
import { RedisEngine } from "../src/engines/redis.js";
import { compareIds, type Message } from "../src/protocol/index.js";
import { brokerAvailable, deleteNatsStreams, deleteRedisKeys, NATS_URL, REDIS_URL, waitUntil } from "./helpers/brokers.js";

const redisPrefix = `ladder-test:engines:${process.pid}:`;
const natsStream = `LADDER_TEST_ENGINES_${process.pid}`;
const natsPrefix = `ladder-test.engines${process.pid}`;

const makers: Array<{ name: string; make: (limits: { maxCount: number; maxAgeMs: number }, tag: string) => Promise<Engine> }> = [];
const redisUp = await brokerAvailable("Redis", REDIS_URL);
const natsUp = await brokerAvailable("NATS", NATS_URL);
if (redisUp) {
  makers.push({
    name: "redis",
    make: async (limits) => {
      const engine = new RedisEngine({ url: REDIS_URL, prefix: redisPrefix, ...limits });
      await engine.whenReady();
      return engine;
    },
  });
  after(() => deleteRedisKeys(REDIS_URL, redisPrefix));
}
if (natsUp) {
  makers.push({
    name: "nats",
    make: async (limits, tag) => {
      const engine = new NatsEngine({ url: NATS_URL, stream: `${natsStream}_${tag}`, prefix: `${natsPrefix}.${tag}`, ...limits });
      await engine.whenReady();
      return engine;
    },
  });
  after(() => deleteNatsStreams(NATS_URL, natsStream));
}

for (const { name, make } of makers) {
  describe(`${name} engine, two nodes`, () => {
    test("concurrent publishers on one channel: increasing ids, one order everywhere, exact trim horizon", { timeout: 30_000 }, async () => {
      const [a, b] = await Promise.all([make({ maxCount: 50, maxAgeMs: 60_000 }, "race"), make({ maxCount: 50, maxAgeMs: 60_000 }, "race")]);
      try {
        const channel = `race.${process.pid}`;
        const seenA: Message[] = [];
        const seenB: Message[] = [];
        await a.subscribe(channel, (m) => seenA.push(m));
        await b.subscribe(channel, (m) => seenB.push(m));
        const published = await Promise.all(Array.from({ length: 120 }, (_, i) => (i % 2 === 0 ? a : b).publish(channel, i)));
        await waitUntil("both nodes saw every message", () => seenA.length >= 120 && seenB.length >= 120, 15_000);
        const order = [...published].sort((x, y) => compareIds(x.id, y.id)).map((m) => m.id);
        assert.equal(new Set(order).size, 120, "ids are unique");
        assert.deepEqual(seenA.map((m) => m.id), order, "node a live order is id order");
        assert.deepEqual(seenB.map((m) => m.id), order, "node b live order is id order");
        const history = await a.read(channel, "0", 100);
        assert.deepEqual(history.messages.map((m) => m.id), order.slice(70), "the newest 50 are kept");
        const fromOld = await b.read(channel, order[10]!, 100);
        assert.deepEqual(fromOld.gap, { channel, reason: "trimmed", since: order[10], resume: order[69] });
        const fromEdge = await b.read(channel, order[69]!, 100);
        assert.equal(fromEdge.gap, null, "the last trimmed id is placeable");
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });
  });
}

describe("redis engine: an expired channel key", { skip: !redisUp && "Redis missing" }, () => {
  test("old cursors get a trimmed gap, recent ones none, before and after the key comes back", async () => {
    const engine = new RedisEngine({ url: REDIS_URL, prefix: redisPrefix, maxCount: 100, maxAgeMs: 60_000 });
    await engine.whenReady();
    const { createClient } = await import("redis");
    const admin = createClient({ url: REDIS_URL });
    await admin.connect();
    try {
      const channel = `expire.${process.pid}`;
      const old = await engine.publish(channel, "old");
      // A key really expires ttlMs after its last publish, never in the same millisecond; a read in the
      // publish's own millisecond would (rightly) place nothing at or after the current time.
      await new Promise((resolve) => setTimeout(resolve, 5));
      // An expired key, as if every message aged out and the key's TTL ran out.
      await admin.del(`${redisPrefix}{${channel}}:log`);
      const ancient = "1000-0"; // far older than the key's TTL: anything after it may be gone
      const r1 = await engine.read(channel, ancient, 10);
      assert.equal(r1.gap?.reason, "trimmed");
      // A message id inside the TTL window: the key did not expire, it vanished (evicted, deleted), and
      // what followed the cursor may have vanished with it (test/broker-eviction.test.ts).
      const recent = await engine.read(channel, old.id, 10);
      assert.equal(recent.gap?.reason, "trimmed");
      const position = (await engine.read(channel, null, 0)).cursor;
      assert.equal((await engine.read(channel, position, 10)).gap, null, "a position handed out for a channel without a key");
      const next = await engine.publish(channel, "next");
      assert.ok(compareIds(next.id, position) > 0, "a new key's ids come after the position handed out");
      const fromPosition = await engine.read(channel, position, 10);
      assert.equal(fromPosition.gap, null);
      assert.deepEqual(fromPosition.messages.map((m) => m.data), ["next"]);
      assert.equal((await engine.read(channel, ancient, 10)).gap?.reason, "trimmed", "the new key remembers the horizon");
    } finally {
      admin.destroy();
      await engine.close();
    }
  });
});

describe("nats engine: the stream is recreated", { skip: !natsUp && "NATS missing" }, () => {
  test("a new epoch: old cursors get an unknown gap, ids keep increasing, live listeners follow", { timeout: 30_000 }, async () => {
    const engine = (await makers.find((m) => m.name === "nats")!.make({ maxCount: 100, maxAgeMs: 60_000 }, "recreate")) as NatsEngine;
    const other = (await makers.find((m) => m.name === "nats")!.make({ maxCount: 100, maxAgeMs: 60_000 }, "recreate")) as NatsEngine;
    try {
      const channel = `recreate.${process.pid}`;
      const live: Message[] = [];
      await engine.subscribe(channel, (m) => live.push(m));
      const before = await engine.publish(channel, "before");
      await waitUntil("first live message", () => live.length === 1);
      await deleteNatsStreams(NATS_URL, `${natsStream}_recreate`);
      // The other node publishes first: it finds no stream, makes a new one (a new epoch) and retries.
      const after1 = await other.publish(channel, "after");
      assert.ok(compareIds(after1.id, before.id) > 0, `${after1.id} sorts after ${before.id}`);
      assert.notEqual(after1.id.split("-")[0], before.id.split("-")[0], "new epoch");
      const r = await engine.read(channel, before.id, 10);
      assert.equal(r.gap?.reason, "unknown");
      assert.deepEqual(r.messages.map((m) => m.data), ["after"]);
      const after2 = await engine.publish(channel, "after 2");
      await waitUntil("live listener got the new stream's messages", () => live.length === 3, 10_000);
      assert.deepEqual(live.map((m) => m.id), [before.id, after1.id, after2.id]);
    } finally {
      await Promise.all([engine.close(), other.close()]);
    }
  });
});
