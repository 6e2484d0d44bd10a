/**
 * What bounds the broker engines, and what a reader sees when the broker dropped what it needed: a
 * `trimmed` gap, never a silent jump and never an error loop (docs/scale-out.md, "Memory").
 *
 * Redis: a channel's stream key deleted under its readers (as `maxmemory` eviction or a flush does), then a
 * private redis-server with a tiny `maxmemory` really evicting keys (`volatile-lru`), and refusing
 * publishes with `noeviction`. NATS: a stream with a small `max_bytes` discarding old messages of other
 * channels. Uses the shared loopback brokers (test/helpers/brokers.ts) and `redis-server` on PATH.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { LadderError, type Message } from "../src/protocol/index.js";
import { NatsEngine } from "../src/engines/nats.js";
import { RedisEngine } from "../src/engines/redis.js";
import { brokerAvailable, deleteNatsStreams, deleteRedisKeys, NATS_URL, programAvailable, REDIS_URL, startRedis, waitUntil } from "./helpers/brokers.js";

const redisUp = await brokerAvailable("Redis", REDIS_URL);
const natsUp = await brokerAvailable("NATS", NATS_URL);
const redisServer = await programAvailable("redis-server");
const prefix = `ladder-test:evict:${process.pid}:`;
if (redisUp) after(() => deleteRedisKeys(REDIS_URL, prefix));
const natsStream = `LADDER_TEST_EVICT_${process.pid}`;
if (natsUp) after(() => deleteNatsStreams(NATS_URL, natsStream));

const blob = "e".repeat(1000);

describe("redis engine: a channel's key vanishes before its TTL", { skip: !redisUp && "Redis missing" }, () => {
  test("readers behind it get a trimmed gap, live listeners go on, a position of an empty channel gets none", async () => {
    const engine = new RedisEngine({ url: REDIS_URL, prefix, maxCount: 100, maxAgeMs: 60_000 });
    await engine.whenReady();
    const { createClient } = await import("redis");
    const admin = createClient({ url: REDIS_URL });
    await admin.connect();
    try {
      const channel = `vanish.${process.pid}`;
      const live: Message[] = [];
      await engine.subscribe(channel, (m) => live.push(m));
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await engine.publish(channel, i)).id);
      await admin.del(`${prefix}{${channel}}:log`);
      const gone = await engine.read(channel, ids[1]!, 10);
      assert.equal(gone.gap?.reason, "trimmed", "messages 2-4 vanished with the key: a gap, not a silent jump");
      assert.deepEqual(gone.messages, []);
      const next = await engine.publish(channel, "next");
      const after = await engine.read(channel, ids[1]!, 10);
      assert.equal(after.gap?.reason, "trimmed");
      assert.deepEqual(after.messages.map((m) => m.id), [next.id]);
      // Resuming from the gap's cursor is clean: no gap again, no error.
      const resumed = await engine.read(channel, after.cursor, 10);
      assert.equal(resumed.gap, null);
      await waitUntil("the live listener's next message", () => live.length === 6);
      assert.deepEqual(live.map((m) => m.data), [0, 1, 2, 3, 4, "next"]);

      // An empty channel's position is not a message id: the first publish after it is no gap.
      const empty = `empty.${process.pid}`;
      const position = (await engine.read(empty, null, 0)).cursor;
      assert.equal((await engine.read(empty, position, 10)).gap, null);
      const first = await engine.publish(empty, "first");
      const fromPosition = await engine.read(empty, position, 10);
      assert.equal(fromPosition.gap, null);
      assert.deepEqual(fromPosition.messages.map((m) => m.id), [first.id]);
    } finally {
      admin.destroy();
      await engine.close();
    }
  });
});

describe("redis engine under maxmemory", { skip: !redisServer && "redis-server missing" }, () => {
  test("volatile-lru evicts channel keys: a reader of an evicted channel gets a gap; noeviction refuses publishes with 503", { timeout: 60_000 }, async () => {
    const redis = await startRedis(["--appendonly", "no", "--maxmemory", "3mb", "--maxmemory-policy", "volatile-lru"]);
    const engine = new RedisEngine({ url: redis.url, maxCount: 100, maxAgeMs: 60_000 });
    const { createClient } = await import("redis");
    const admin = createClient({ url: redis.url });
    try {
      await engine.whenReady();
      await admin.connect();
      const early = [await engine.publish("early", 1), await engine.publish("early", 2), await engine.publish("early", 3)];
      let n = 0;
      // Publish to ever newer channels until Redis has evicted the early channel's key.
      while ((await admin.exists("ladder:{early}:log")) === 1) {
        for (let i = 0; i < 100; i++) await engine.publish(`flood-${n++}`, blob);
        assert.ok(n < 20_000, "redis never evicted the early channel");
      }
      const info = String(await admin.info("stats"));
      assert.ok(Number(/evicted_keys:(\d+)/.exec(info)?.[1]) > 0, "keys were evicted");
      const back = await engine.read("early", early[0]!.id, 10);
      assert.equal(back.gap?.reason, "trimmed");
      assert.equal(back.gap?.since, early[0]!.id);
      // No error loop: the channel goes on where the gap left it.
      const again = await engine.publish("early", 4);
      const resumed = await engine.read("early", back.cursor, 10);
      assert.equal(resumed.gap, null);
      assert.deepEqual(resumed.messages.map((m) => m.id), [again.id]);

      // noeviction: at the limit Redis refuses writes; the engine answers a retryable 503, reads go on.
      await admin.configSet("maxmemory-policy", "noeviction");
      let refused: unknown = null;
      for (let i = 0; i < 20_000 && refused === null; i++) {
        try {
          await engine.publish(`full-${i}`, blob);
        } catch (error) {
          refused = error;
        }
      }
      assert.ok(refused instanceof LadderError && refused.code === "unavailable", `refused with ${String(refused)}`);
      assert.match((refused as LadderError).message, /OOM/);
      assert.equal((await engine.read("early", resumed.cursor, 10)).gap, null);
    } finally {
      admin.destroy();
      await engine.close();
      await redis.destroy();
    }
  });
});

describe("nats engine: the stream's max_bytes", { skip: !natsUp && "NATS missing" }, () => {
  test("old messages of quiet channels are discarded for new ones; their readers get a trimmed gap", { timeout: 60_000 }, async () => {
    const engine = new NatsEngine({ url: `${NATS_URL}?max_bytes=65536`, stream: natsStream, prefix: `ladder-test.evict${process.pid}`, maxCount: 100, maxAgeMs: 60_000 });
    try {
      await engine.whenReady();
      const early = [await engine.publish("early", 1), await engine.publish("early", 2), await engine.publish("early", 3)];
      // About 1 KB each: 200 of them are three times the stream's bytes.
      for (let i = 0; i < 200; i++) await engine.publish(`flood-${i}`, blob);
      const back = await engine.read("early", early[0]!.id, 10);
      assert.equal(back.gap?.reason, "trimmed");
      assert.deepEqual(back.messages, []);
      const again = await engine.publish("early", 4);
      const resumed = await engine.read("early", back.cursor, 10);
      assert.equal(resumed.gap, null);
      assert.deepEqual(resumed.messages.map((m) => m.id), [again.id]);
    } finally {
      await engine.close();
    }
  });
});
