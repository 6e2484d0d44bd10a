/**
 * The engine contract, run against every engine: memory, Redis and NATS JetStream pass the same cases
 * unchanged. Redis and NATS are the shared loopback services (test/helpers/brokers.ts: skipped loudly
 * when missing, failed when CI=true); each run uses its own key prefix and stream names and removes them.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { compareIds, LadderError, type Message } from "../src/protocol/index.js";
import { DEDUPE_WINDOW_MS, type Engine } from "../src/engines/engine.js";
import { MemoryEngine } from "../src/engines/memory.js";
import { MessageChannel } from "node:worker_threads";
import { IpcEngine } from "../src/engines/ipc/engine.js";
import { IpcEngineHost } from "../src/engines/ipc/host.js";
import { messagePort } from "../src/engines/ipc/port.js";
import { NatsEngine } from "../src/engines/nats.js";
import { RedisEngine } from "../src/engines/redis.js";
import { brokerAvailable, deleteNatsStreams, deleteRedisKeys, NATS_URL, REDIS_URL } from "./helpers/brokers.js";

interface EngineFactory {
  readonly name: string;
  create(limits: { maxCount: number; maxAgeMs: number }, clock?: () => number): Promise<Engine>;
}

const factories: EngineFactory[] = [
  { name: "memory", create: async (limits, now) => new MemoryEngine({ ...limits, now }) },
  {
    // A cluster worker's engine: the log is a MemoryEngine on the other end of a message channel (the
    // primary's side), exactly as over node:cluster's IPC.
    name: "ipc",
    create: async (limits, now) => {
      const memory = new MemoryEngine({ ...limits, now });
      const { port1, port2 } = new MessageChannel();
      const host = new IpcEngineHost(memory);
      host.serve(messagePort(port1));
      const engine = new IpcEngine({ port: messagePort(port2) });
      const closeEngine = engine.close.bind(engine);
      engine.close = async () => {
        await closeEngine();
        port2.close();
        host.close();
        await memory.close();
      };
      return engine;
    },
  },
];

const redisPrefix = `ladder-test:conf:${process.pid}:`;
if (await brokerAvailable("Redis", REDIS_URL)) {
  factories.push({
    name: "redis",
    create: async (limits, now) => {
      const engine = new RedisEngine({ url: REDIS_URL, prefix: redisPrefix, ...limits, now });
      await engine.whenReady();
      return engine;
    },
  });
  after(() => deleteRedisKeys(REDIS_URL, redisPrefix));
}

// A JetStream stream's limits are its own, so engines with the same limits share one (as nodes do).
const natsStreams = `LADDER_TEST_CONF_${process.pid}_`;
if (await brokerAvailable("NATS", NATS_URL)) {
  factories.push({
    name: "nats",
    create: async (limits, now) => {
      const stream = `${natsStreams}${limits.maxCount}_${limits.maxAgeMs}`;
      const engine = new NatsEngine({ url: NATS_URL, stream, prefix: `ladder-test.conf${process.pid}.${limits.maxCount}_${limits.maxAgeMs}`, ...limits, now });
      await engine.whenReady();
      return engine;
    },
  });
  after(() => deleteNatsStreams(NATS_URL, natsStreams));
}

let channelSeq = 0;
const fresh = (): string => `conf.${process.pid}.${++channelSeq}`;

for (const factory of factories) {
  describe(`engine conformance: ${factory.name}`, () => {
    test("ids strictly increase within a channel and read returns them oldest first", async () => {
      const engine = await factory.create({ maxCount: 100, maxAgeMs: 60_000 });
      const ch = fresh();
      const published: Message[] = [];
      for (let i = 0; i < 20; i++) published.push(await engine.publish(ch, { i }));
      for (let i = 1; i < published.length; i++) assert.ok(compareIds(published[i - 1]!.id, published[i]!.id) < 0);
      const all = await engine.read(ch, "0", 100);
      assert.deepEqual(all.messages.map((m) => m.data), published.map((m) => m.data));
      assert.equal(all.gap, null);
      assert.equal(all.cursor, published.at(-1)!.id);
      const after = await engine.read(ch, published[9]!.id, 5);
      assert.deepEqual(after.messages.map((m) => (m.data as { i: number }).i), [10, 11, 12, 13, 14]);
      assert.equal(after.cursor, published[14]!.id);
      await engine.close();
    });

    test("publishes issued in one turn, without waiting (as a batch issues them), keep their order per channel", async () => {
      const engine = await factory.create({ maxCount: 200, maxAgeMs: 60_000 });
      const a = fresh();
      const b = fresh();
      const pending: Array<Promise<Message>> = [];
      for (let i = 0; i < 60; i++) pending.push(engine.publish(i % 3 === 0 ? b : a, i));
      const published = await Promise.all(pending);
      for (const ch of [a, b]) {
        const mine = published.filter((m) => m.channel === ch);
        for (let i = 1; i < mine.length; i++) assert.ok(compareIds(mine[i - 1]!.id, mine[i]!.id) < 0, "ids increase in issue order");
        const stored = await engine.read(ch, "0", 200);
        assert.deepEqual(stored.messages.map((m) => m.data), mine.map((m) => m.data));
        assert.deepEqual(stored.messages.map((m) => m.id), mine.map((m) => m.id));
      }
      await engine.close();
    });

    test("publishSync: an engine that appends in this process stores, hands to listeners within the call and keeps order with publish", async () => {
      const engine = await factory.create({ maxCount: 100, maxAgeMs: 60_000 });
      if (!engine.publishSync) {
        // An engine that appends through a broker (or the primary, for a worker) cannot answer within the
        // call, and must not claim to: the hub then awaits publish. Only the memory engine appends here.
        assert.notEqual(factory.name, "memory", "the memory engine appends within the call");
        await engine.close();
        return;
      }
      const ch = fresh();
      const heard: unknown[] = [];
      const unsubscribe = await engine.subscribe(ch, (message) => heard.push(message.data));
      const first = await engine.publish(ch, 1);
      const second = engine.publishSync(ch, 2);
      assert.deepEqual(heard, [1, 2], "the listener heard the message before publishSync returned");
      assert.ok(compareIds(first.id, second.id) < 0);
      const third = await engine.publish(ch, 3);
      assert.ok(compareIds(second.id, third.id) < 0);
      assert.deepEqual((await engine.read(ch, "0", 10)).messages.map((m) => m.id), [first.id, second.id, third.id]);
      const keyed = engine.publishSync(ch, 4, undefined, "k1");
      const again = engine.publishSync(ch, 4, undefined, "k1");
      assert.equal(again.duplicate, true);
      assert.equal(again.id, keyed.id);
      // A refusal throws within the call (a measured size past the whole budget), not a rejected promise.
      assert.throws(() => engine.publishSync!(ch, "x", 2 ** 40), (error: unknown) => error instanceof LadderError && error.code === "payload_too_large");
      unsubscribe();
      await engine.close();
    });

    test("read with since null gives the cursor only; resuming from it misses nothing", async () => {
      const engine = await factory.create({ maxCount: 100, maxAgeMs: 60_000 });
      const ch = fresh();
      await engine.publish(ch, 1);
      const head = await engine.read(ch, null, 10);
      assert.deepEqual(head.messages, []);
      const m2 = await engine.publish(ch, 2);
      const next = await engine.read(ch, head.cursor, 10);
      assert.deepEqual(next.messages.map((m) => m.id), [m2.id]);
      await engine.close();
    });

    test("channels are independent", async () => {
      const engine = await factory.create({ maxCount: 100, maxAgeMs: 60_000 });
      const a = fresh();
      const b = fresh();
      await engine.publish(a, "a1");
      await engine.publish(b, "b1");
      await engine.publish(a, "a2");
      assert.deepEqual((await engine.read(a, "0", 10)).messages.map((m) => m.data), ["a1", "a2"]);
      assert.deepEqual((await engine.read(b, "0", 10)).messages.map((m) => m.data), ["b1"]);
      await engine.close();
    });

    test("history is bounded by count; a cursor before it gets a trimmed gap and the retained rest", async () => {
      const engine = await factory.create({ maxCount: 5, maxAgeMs: 60_000 });
      const ch = fresh();
      const ids: string[] = [];
      for (let i = 0; i < 12; i++) ids.push((await engine.publish(ch, i)).id);
      const r = await engine.read(ch, ids[2]!, 100);
      assert.ok(r.gap);
      assert.equal(r.gap.reason, "trimmed");
      assert.equal(r.gap.since, ids[2]);
      assert.equal(r.gap.resume, ids[6]);
      assert.deepEqual(r.messages.map((m) => m.data), [7, 8, 9, 10, 11]);
      // The last trimmed id itself is placeable: nothing after it is lost.
      const exact = await engine.read(ch, ids[6]!, 100);
      assert.equal(exact.gap, null);
      assert.equal(exact.messages.length, 5);
      // "0" means "whatever is retained", never a gap.
      assert.equal((await engine.read(ch, "0", 100)).gap, null);
      await engine.close();
    });

    test("a read racing the trim of its own page never skips inside it (found by the soak on NATS)", async () => {
      const engine = await factory.create({ maxCount: 5, maxAgeMs: 60_000 });
      const ch = fresh();
      const first = await engine.publish(ch, "first");
      const acked: string[] = [first.id];
      const pages: Array<{ start: string; ids: string[] }> = [];
      let publishing = true;
      const publisher = async (): Promise<void> => {
        for (let i = 0; i < 150; i++) acked.push((await engine.publish(ch, i)).id);
      };
      // Every read starts before what is retained, so its page begins where the trim is busiest.
      const reader = async (): Promise<void> => {
        while (publishing) {
          const r = await engine.read(ch, first.id, 100);
          pages.push({ start: r.gap ? r.gap.resume : first.id, ids: r.messages.map((m) => m.id) });
        }
      };
      const readers = [reader(), reader()];
      await Promise.all([publisher(), publisher()]);
      publishing = false;
      await Promise.all(readers);
      acked.sort(compareIds);
      let checked = 0;
      for (const page of pages) {
        let before = page.start;
        for (const id of page.ids) {
          const skipped = acked.filter((a) => compareIds(a, before) > 0 && compareIds(a, id) < 0);
          assert.deepEqual(skipped, [], `a page went from ${before} to ${id} without a gap`);
          before = id;
          checked++;
        }
      }
      assert.ok(checked > 50, `checked ${checked} messages in ${pages.length} pages`);
      await engine.close();
    });

    test("history is bounded by age", async () => {
      let now = 1_000_000;
      const engine = await factory.create({ maxCount: 100, maxAgeMs: 1000 }, () => now);
      const ch = fresh();
      const old = await engine.publish(ch, "old");
      now += 500;
      const mid = await engine.publish(ch, "mid");
      now += 700;
      const r = await engine.read(ch, "0", 10);
      assert.deepEqual(r.messages.map((m) => m.data), ["mid"]);
      const fromOld = await engine.read(ch, old.id, 10);
      assert.equal(fromOld.gap, null, "nothing after old was lost");
      const before = await engine.read(ch, "1-0", 10);
      assert.equal(before.gap?.resume, old.id);
      assert.deepEqual(before.messages.map((m) => m.id), [mid.id]);
      await engine.close();
    });

    test("an id the engine cannot place (from before a restart, or never issued) gives an unknown gap", async () => {
      let now = 5_000_000;
      const first = await factory.create({ maxCount: 100, maxAgeMs: 60_000 }, () => now);
      const ch = fresh();
      const before = await first.publish(ch, "before restart");
      await first.close();
      now += 10;
      const second = await factory.create({ maxCount: 100, maxAgeMs: 60_000 }, () => now);
      if (factory.name === "memory") {
        const after = await second.publish(ch, "after restart");
        assert.ok(compareIds(after.id, before.id) > 0, "ids must not repeat after a restart");
        const r = await second.read(ch, before.id, 10);
        assert.equal(r.gap?.reason, "unknown");
        assert.deepEqual(r.messages.map((m) => m.data), ["after restart"]);
      }
      const future = await second.read(ch, "99999999999999-0", 10);
      assert.equal(future.gap?.reason, "unknown");
      assert.deepEqual(future.messages, []);
      await second.close();
    });

    test("subscribe delivers live messages in order from when it resolves, and unsubscribe stops them", async () => {
      const engine = await factory.create({ maxCount: 100, maxAgeMs: 60_000 });
      const ch = fresh();
      await engine.publish(ch, "before");
      const got: unknown[] = [];
      const unsubscribe = await engine.subscribe(ch, (m) => got.push(m.data));
      for (let i = 0; i < 5; i++) await engine.publish(ch, i);
      const deadline = Date.now() + 2000;
      while (got.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(got, [0, 1, 2, 3, 4]);
      unsubscribe();
      await engine.publish(ch, "after");
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(got, [0, 1, 2, 3, 4]);
      await engine.close();
    });

    test("a publish repeated with its idempotency key is stored once and answered with the first id", async () => {
      const engine = await factory.create({ maxCount: 100, maxAgeMs: 600_000 });
      const ch = fresh();
      const other = fresh();
      const key = `k${process.pid}x${channelSeq}`;
      const live: unknown[] = [];
      const unsubscribe = await engine.subscribe(ch, (m) => live.push(m.data));
      const first = await engine.publish(ch, "once", undefined, key);
      assert.equal(first.duplicate, undefined);
      // Another publisher's message in between (the retry comes after a reconnect).
      const between = await engine.publish(ch, "between");
      const again = await engine.publish(ch, "once", undefined, key);
      assert.equal(again.id, first.id);
      assert.equal(again.duplicate, true);
      // The same key on another channel is another publish.
      const elsewhere = await engine.publish(other, "once", undefined, key);
      assert.equal(elsewhere.duplicate, undefined);
      const after = await engine.publish(ch, "after", undefined, `${key}b`);
      assert.ok(compareIds(after.id, between.id) > 0);
      assert.deepEqual((await engine.read(ch, "0", 100)).messages.map((m) => m.data), ["once", "between", "after"]);
      assert.deepEqual((await engine.read(other, "0", 100)).messages.map((m) => m.data), ["once"]);
      const deadline = Date.now() + 2000;
      while (live.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(live, ["once", "between", "after"]);
      unsubscribe();
      await engine.close();
    });
  });
}

test("memory engine forgets an idempotency key after the window, and keeps at most dedupeKeys", async () => {
  let now = 1_000_000;
  const engine = new MemoryEngine({ maxCount: 100, maxAgeMs: 10 * DEDUPE_WINDOW_MS, now: () => now, dedupeKeys: 2 });
  const first = await engine.publish("w", 1, undefined, "a");
  now += DEDUPE_WINDOW_MS - 1;
  assert.equal((await engine.publish("w", 1, undefined, "a")).id, first.id);
  now += 1;
  assert.equal((await engine.publish("w", 1, undefined, "a")).duplicate, undefined);
  await engine.publish("w", 2, undefined, "b");
  await engine.publish("w", 3, undefined, "c");
  // Three keys for a capacity of two: the oldest ("a", re-published above) is forgotten.
  assert.equal((await engine.publish("w", 1, undefined, "a")).duplicate, undefined);
  assert.equal((await engine.publish("w", 3, undefined, "c")).duplicate, true);
  assert.equal((await engine.read("w", "0", 100)).messages.length, 5);
  await engine.close();
});

test("memory engine forgets idle channels but still answers their old cursors with a gap", async () => {
  let now = 1_000_000;
  const engine = new MemoryEngine({ maxCount: 10, maxAgeMs: 100, now: () => now });
  const m = await engine.publish("idle", 1);
  await engine.publish("idle", 2);
  now += 1000;
  engine.sweep();
  assert.equal(engine.channelCount, 0);
  const r = await engine.read("idle", m.id, 10);
  assert.equal(r.gap?.reason, "trimmed");
});
