/**
 * The memory engine's budget (issue 20): the eviction order against a plain model (property test), gaps
 * for evicted cursors, the one publish that may fail (a message larger than the whole budget), prompt
 * freeing of idle channels, the engine's own sweep timer, the options and the metrics.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { MemoryEngine, MESSAGE_OVERHEAD_BYTES } from "../src/engines/memory.js";
import { resolveOptions } from "../src/server/options.js";
import { resolveSettings } from "../src/cli/settings.js";
import { LadderError } from "../src/protocol/index.js";
import { publish, startHub } from "./helpers/server.js";

// ---- a model of the documented policy, written plainly (arrays and a use counter, no lists)

interface ModelChannel {
  ids: string[];
  sizes: number[];
  lastUse: number;
  listeners: number;
  /** Ids the budget evicted, oldest first. */
  evicted: string[];
}

class Model {
  readonly channels = new Map<string, ModelChannel>();
  #use = 0;
  constructor(
    readonly maxBytes: number,
    readonly maxChannels: number,
  ) {}

  bytes(): number {
    let total = 0;
    for (const ch of this.channels.values()) for (const size of ch.sizes) total += size;
    return total;
  }

  #over(): boolean {
    return this.bytes() > this.maxBytes || this.channels.size > this.maxChannels;
  }

  #get(name: string): ModelChannel {
    let ch = this.channels.get(name);
    if (!ch) this.channels.set(name, (ch = { ids: [], sizes: [], lastUse: 0, listeners: 0, evicted: [] }));
    return ch;
  }

  #dropOldest(ch: ModelChannel): void {
    ch.evicted.push(ch.ids.shift()!);
    ch.sizes.shift();
  }

  publish(name: string, id: string, size: number): void {
    const ch = this.#get(name);
    ch.lastUse = ++this.#use;
    ch.ids.push(id);
    ch.sizes.push(size);
    if (this.#over()) this.#evict(name);
  }

  read(name: string): void {
    const ch = this.channels.get(name);
    if (ch) ch.lastUse = ++this.#use;
  }

  subscribe(name: string): void {
    const ch = this.#get(name);
    ch.listeners++;
    ch.lastUse = ++this.#use;
    if (this.channels.size > this.maxChannels) this.#evict(name);
  }

  unsubscribe(name: string): void {
    const ch = this.channels.get(name)!;
    if (--ch.listeners > 0) return;
    ch.lastUse = ++this.#use;
    if (ch.ids.length === 0) this.channels.delete(name);
  }

  /** Idle channels least recently used first (whole channels while over the count, else oldest messages), then subscribed ones. */
  #evict(keep: string): void {
    const byUse = (live: boolean): string[] =>
      [...this.channels.entries()].filter(([, ch]) => (ch.listeners > 0) === live).sort((a, b) => a[1].lastUse - b[1].lastUse).map(([name]) => name);
    for (const name of byUse(false)) {
      if (!this.#over()) return;
      const ch = this.channels.get(name)!;
      if (name === keep) {
        while (this.bytes() > this.maxBytes && ch.ids.length > 1) this.#dropOldest(ch);
        continue;
      }
      if (this.channels.size > this.maxChannels) while (ch.ids.length > 0) this.#dropOldest(ch);
      else while (this.bytes() > this.maxBytes && ch.ids.length > 0) this.#dropOldest(ch);
      if (ch.ids.length === 0) this.channels.delete(name);
    }
    for (const name of byUse(true)) {
      if (this.bytes() <= this.maxBytes) return;
      const ch = this.channels.get(name)!;
      while (this.bytes() > this.maxBytes && ch.ids.length > (name === keep ? 1 : 0)) this.#dropOldest(ch);
      if (ch.ids.length === 0 && name !== keep) ch.lastUse = ++this.#use;
    }
  }
}

type Op =
  | { kind: "publish"; channel: number; size: number }
  | { kind: "read"; channel: number }
  | { kind: "subscribe"; channel: number }
  | { kind: "unsubscribe"; channel: number };

const CHANNELS = 6;
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("publish" as const), channel: fc.nat(CHANNELS - 1), size: fc.integer({ min: 1, max: 300 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("read" as const), channel: fc.nat(CHANNELS - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("subscribe" as const), channel: fc.nat(CHANNELS - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("unsubscribe" as const), channel: fc.nat(CHANNELS - 1) }) },
);

test("eviction follows the policy: idle channels least recently used first, oldest messages first, subscribed channels last (property)", async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 600, max: 3000 }), fc.integer({ min: 1, max: CHANNELS }), fc.array(op, { maxLength: 120 }), async (maxLogBytes, maxChannels, ops) => {
      const engine = new MemoryEngine({ maxCount: 1000, maxAgeMs: 3_600_000, maxLogBytes, maxChannels, now: () => 1000, sweepIntervalMs: 0 });
      const model = new Model(maxLogBytes, maxChannels);
      const unsubscribes = new Map<string, Array<() => void>>();
      for (const step of ops) {
        const name = `c${step.channel}`;
        switch (step.kind) {
          case "publish": {
            // `data` is a string of `size` characters: its JSON is size + 2 bytes.
            const message = await engine.publish(name, "x".repeat(step.size));
            model.publish(name, message.id, step.size + 2 + MESSAGE_OVERHEAD_BYTES);
            break;
          }
          case "read":
            engine.readSync(name, null, 0);
            model.read(name);
            break;
          case "subscribe":
            (unsubscribes.get(name) ?? unsubscribes.set(name, []).get(name)!).push(await engine.subscribe(name, () => {}));
            model.subscribe(name);
            break;
          case "unsubscribe": {
            const off = unsubscribes.get(name)?.pop();
            if (!off) break;
            off();
            model.unsubscribe(name);
            break;
          }
        }
        const stats = engine.stats();
        assert.equal(stats.retainedBytes, model.bytes(), "retained bytes");
        assert.equal(stats.channels, model.channels.size, "channels");
        assert.ok(stats.retainedBytes <= maxLogBytes, "within the byte budget");
      }
      // Read what is retained (reads count as use, so the model is done first).
      for (const [name, ch] of model.channels) {
        const all = engine.readSync(name, "0", 10_000);
        assert.deepEqual(all.messages.map((m) => m.id), ch.ids, `retained in ${name}`);
        // A reader from before the newest evicted message is told what it lost.
        if (ch.evicted.length > 0) {
          const fromFirst = engine.readSync(name, "1000-0", 10_000);
          assert.equal(fromFirst.gap?.reason, "trimmed", `gap in ${name}`);
          assert.equal(fromFirst.gap?.resume, ch.evicted.at(-1));
          assert.deepEqual(fromFirst.messages.map((m) => m.id), ch.ids);
        }
      }
      assert.equal(engine.channelCount, model.channels.size);
      await engine.close();
    }),
    { numRuns: 300 },
  );
});

test("a subscriber behind an evicted message gets a trimmed gap; publishing never fails for the budget, except a message larger than all of it", async () => {
  const size = 100 + 2 + MESSAGE_OVERHEAD_BYTES;
  const engine = new MemoryEngine({ maxCount: 1000, maxAgeMs: 3_600_000, maxLogBytes: size * 4, maxChannels: 10, sweepIntervalMs: 0 });
  const got: string[] = [];
  await engine.subscribe("live", (m) => got.push(m.id));
  const start = engine.readSync("live", null, 0).cursor;
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push((await engine.publish("live", "y".repeat(100))).id);
  // Past the budget with only a subscribed channel: its oldest go, and the new message is kept and delivered.
  for (let i = 0; i < 20; i++) ids.push((await engine.publish(`idle${i}`, "y".repeat(100))).id);
  assert.deepEqual(got, ids.slice(0, 4));
  const behind = engine.readSync("live", start, 100);
  assert.equal(behind.gap?.reason, "trimmed");
  assert.equal(behind.gap?.resume, ids[0]);
  assert.deepEqual(behind.messages.map((m) => m.id), ids.slice(1, 4));
  assert.equal(engine.stats().retainedBytes <= size * 4, true);
  // The newest idle channel keeps its message; the older idle ones were evicted whole before "live" lost more.
  assert.equal(engine.readSync("idle19", "0", 10).messages.length, 1);
  assert.equal(engine.readSync("idle0", ids[4]!, 10).messages.length, 0);
  await assert.rejects(engine.publish("big", "z".repeat(size * 4)), (error: unknown) => error instanceof LadderError && error.code === "payload_too_large");
  await engine.close();
});

test("idle channel state is freed at once: on unsubscribe, and on the read that finds everything aged out", async () => {
  let now = 1_000_000;
  const engine = new MemoryEngine({ maxCount: 10, maxAgeMs: 100, now: () => now, sweepIntervalMs: 0 });
  const off = await engine.subscribe("a", () => {});
  assert.equal(engine.channelCount, 1);
  off();
  assert.equal(engine.channelCount, 0);
  const m = await engine.publish("b", 1);
  now += 1000;
  const r = engine.readSync("b", m.id, 10);
  assert.equal(r.gap, null);
  assert.equal(engine.channelCount, 0, "freed by the read, without a sweep");
  await engine.close();
});

test("the engine runs its own age sweep (unref'd: it keeps no process alive), and close() stops it", async () => {
  const refTimers = (): number => process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
  const before = refTimers();
  let now = 1_000_000;
  const engine = new MemoryEngine({ maxCount: 10, maxAgeMs: 100, now: () => now, sweepIntervalMs: 20 });
  assert.equal(refTimers(), before, "the sweep timer is unref'd");
  await engine.publish("aging", 1);
  now += 1000;
  const deadline = Date.now() + 2000;
  while (engine.channelCount > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(engine.channelCount, 0, "swept without anyone calling sweep()");
  await engine.close();
  // Nothing sweeps a closed engine: a message left in it ages but stays.
  await engine.publish("after-close", 1);
  now += 1000;
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(engine.channelCount, 1);
});

test("budget options: defaults, checks, and the CLI's flags, environment and config keys", () => {
  const defaults = resolveOptions({});
  assert.equal(defaults.maxLogBytes, 64 * 1024 * 1024);
  assert.equal(defaults.maxChannels, 50_000);
  assert.throws(() => resolveOptions({ maxLogBytes: 1000 }), /maxLogBytes must be a number ≥ 65728/);
  assert.throws(() => resolveOptions({ maxChannels: 0 }), /maxChannels must be a number ≥ 1/);
  assert.throws(() => new MemoryEngine({ maxCount: 1, maxAgeMs: 1, maxChannels: Number.NaN }), /maxChannels/);
  const s = resolveSettings({ "max-log-bytes": "1048576" }, { LADDER_MAX_LOG_CHANNELS: "500" });
  assert.equal(s.maxLogBytes, 1_048_576);
  assert.equal(s.maxChannels, 500);
});

test("metrics: retained bytes, channels and evictions of the hub's memory engine", async () => {
  const running = await startHub({ metrics: true, maxChannels: 3, maxMessageBytes: 1024, maxLogBytes: 4096 });
  try {
    for (let i = 0; i < 5; i++) await publish(running.url, { i }, `m${i}`);
    const text = await (await fetch(`${running.url}/metrics`)).text();
    const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    assert.equal(value("ladder_log_channels"), 3);
    assert.equal(value("ladder_log_max_channels"), 3);
    assert.equal(value("ladder_log_max_bytes"), 4096);
    assert.equal(value("ladder_log_retained_bytes"), 3 * (JSON.stringify({ i: 0 }).length + MESSAGE_OVERHEAD_BYTES));
    assert.equal(value("ladder_log_evicted_channels_total"), 2);
    assert.equal(value("ladder_log_evicted_messages_total"), 2);
  } finally {
    await running.close();
  }
});
