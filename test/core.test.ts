/**
 * The no-loss core on its own: Subscription and Fanout driven directly, with the memory engine (wrapped
 * to act like a broker where a case needs it: a slow history read, a live feed running behind) and a fake
 * sink that records what reaches it. Table-driven: each case states the situation and what must arrive.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Engine, MessageListener, ReadResult } from "../src/engines/engine.js";
import { MemoryEngine } from "../src/engines/memory.js";
import { START_CURSOR, type Gap, type Message, type MessageId } from "../src/protocol/index.js";
import type { Delivery } from "../src/server/core/delivery.js";
import { Fanout, type LiveListener } from "../src/server/core/fanout.js";
import { Subscription, type SubscriptionSink } from "../src/server/core/subscription.js";

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The memory engine seen as a broker: reads are async (no readSync), and can be held; the live feed can lag. */
class StagedEngine implements Engine {
  readonly name = "staged";
  readonly inner = new MemoryEngine({ maxCount: 100_000, maxAgeMs: 3_600_000 });
  subscribes = 0;
  unsubscribes = 0;
  reads = 0;
  failNextSubscribe = false;
  /** While set, live messages wait here: the feed runs behind history, as a broker's can. */
  feedHeld: Message[] | null = null;
  /** While set, reads wait for it; `snapshotFirst`: the read takes its result before waiting (it sees nothing published meanwhile). */
  #gate: Promise<void> | null = null;
  #open: () => void = () => undefined;
  snapshotFirst = false;
  readonly #listeners = new Map<string, MessageListener>();

  closeGate(): void {
    this.#gate = new Promise((resolve) => (this.#open = resolve));
  }
  openGate(): void {
    this.#gate = null;
    this.#open();
  }
  releaseFeed(): void {
    const held = this.feedHeld ?? [];
    this.feedHeld = null;
    for (const message of held) this.#listeners.get(message.channel)?.(message);
  }
  /** A message the feed hands over again (a broker redelivering after a reconnect). */
  redeliver(message: Message): void {
    this.#listeners.get(message.channel)?.(message);
  }

  publish(channel: string, data: unknown): Promise<Message> {
    return this.inner.publish(channel, data);
  }
  async read(channel: string, since: MessageId | null, limit: number): Promise<ReadResult> {
    this.reads++;
    const early = this.snapshotFirst ? this.inner.readSync(channel, since, limit) : null;
    if (this.#gate) await this.#gate;
    return early ?? this.inner.readSync(channel, since, limit);
  }
  async subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    this.subscribes++;
    if (this.failNextSubscribe) {
      this.failNextSubscribe = false;
      throw new Error("broker unavailable");
    }
    this.#listeners.set(channel, listener);
    const unsubscribe = await this.inner.subscribe(channel, (message) => (this.feedHeld ? this.feedHeld.push(message) : listener(message)));
    return () => {
      this.unsubscribes++;
      this.#listeners.delete(channel);
      unsubscribe();
    };
  }
  ready(): boolean {
    return true;
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

type Event = { readonly id: MessageId; readonly live: boolean } | { readonly gap: Gap };

/** Records what reaches it; `backlog` makes it report a full buffer until {@link release}. */
class FakeSink implements SubscriptionSink {
  readonly events: Event[] = [];
  backlog = false;
  #waiters: Array<() => void> = [];
  message(_channel: string, delivery: Delivery, live: boolean): void {
    this.events.push({ id: delivery.id, live });
  }
  gap(gap: Gap): void {
    this.events.push({ gap });
  }
  backfill(): void {
    throw new Error("no backfill hook in these tests");
  }
  backlogged(): boolean {
    return this.backlog;
  }
  drained(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
  /** The socket drained once (`stillFull`: and filled up again at the next write). */
  release(stillFull: boolean): void {
    this.backlog = stillFull;
    for (const resolve of this.#waiters.splice(0)) resolve();
  }
  get ids(): MessageId[] {
    return this.events.flatMap((e) => ("id" in e ? [e.id] : []));
  }
  get live(): boolean[] {
    return this.events.flatMap((e) => ("id" in e ? [e.live] : []));
  }
}

async function publishMany(engine: Engine, channel: string, n: number): Promise<MessageId[]> {
  const ids: MessageId[] = [];
  for (let i = 0; i < n; i++) ids.push((await engine.publish(channel, i)).id);
  return ids;
}

interface Rig {
  readonly engine: StagedEngine;
  readonly fanout: Fanout;
  readonly sink: FakeSink;
  subscription(since: MessageId | null): Subscription;
}

function rig(): Rig {
  const engine = new StagedEngine();
  const fanout = new Fanout(engine);
  const sink = new FakeSink();
  return { engine, fanout, sink, subscription: (since) => new Subscription(engine, fanout, "c", since, sink) };
}

describe("Subscription: history, then live, each message once and in order", () => {
  const cases: Array<{ name: string; run: (r: Rig) => Promise<void> }> = [
    {
      name: "history after the cursor, then live messages",
      async run({ engine, sink, subscription }) {
        const old = await publishMany(engine, "c", 3);
        await subscription(START_CURSOR).start();
        const fresh = await publishMany(engine, "c", 2);
        assert.deepEqual(sink.ids, [...old, ...fresh]);
        assert.deepEqual(sink.live, [false, false, false, true, true]);
      },
    },
    {
      name: "no cursor: live only, history is not replayed",
      async run({ engine, sink, subscription }) {
        const old = await publishMany(engine, "c", 2);
        const cursor = await subscription(null).start();
        const fresh = await publishMany(engine, "c", 1);
        assert.equal(cursor, old[1], "the cursor is the channel's position");
        assert.deepEqual(sink.ids, fresh);
      },
    },
    {
      name: "catch-up fence: the read ran ahead of a lagging feed; the feed's late copies are dropped",
      async run({ engine, sink, subscription }) {
        engine.feedHeld = [];
        engine.closeGate();
        const starting = subscription(START_CURSOR).start();
        await turn();
        const raced = await publishMany(engine, "c", 3); // in history, still held in the feed
        engine.openGate();
        await starting;
        engine.releaseFeed(); // now the feed brings the three again
        engine.feedHeld = null;
        const fresh = await publishMany(engine, "c", 1);
        assert.deepEqual(sink.ids, [...raced, ...fresh]);
        assert.deepEqual(sink.live, [false, false, false, true]);
      },
    },
    ...[false, true].map((snapshotFirst) => ({
      name: `held list: live messages during a slow read follow history (${snapshotFirst ? "the read did not see them" : "the read saw them too"})`,
      async run({ engine, sink, subscription }: Rig) {
        engine.snapshotFirst = snapshotFirst;
        const old = await publishMany(engine, "c", 2);
        engine.closeGate();
        const starting = subscription(START_CURSOR).start();
        await turn();
        const during = await publishMany(engine, "c", 2); // live while catching up: held
        assert.deepEqual(sink.ids, [], "nothing is handed over before history");
        engine.openGate();
        await starting;
        const fresh = await publishMany(engine, "c", 1);
        assert.deepEqual(sink.ids, [...old, ...during, ...fresh]);
      },
    })),
    {
      name: "held list overflow (over 10 000 live during the read): read again from where history ended, nothing lost",
      async run({ engine, sink, subscription }) {
        engine.snapshotFirst = true;
        const old = await publishMany(engine, "c", 1);
        engine.closeGate();
        const starting = subscription(START_CURSOR).start();
        await turn();
        const during = await publishMany(engine, "c", 10_001);
        engine.openGate();
        await starting;
        assert.equal(sink.ids.length, 10_002);
        assert.deepEqual(sink.ids, [...old, ...during]);
        assert.ok(engine.reads > 1, "the held list was given up for another read");
      },
    },
    {
      name: "slow consumer during catch-up: history is paced by the sink's drain, not dropped",
      async run({ engine, sink, subscription }) {
        const old = await publishMany(engine, "c", 3);
        sink.backlog = true;
        let live = false;
        const starting = subscription(START_CURSOR).start().then(() => (live = true));
        await turn();
        assert.deepEqual(sink.ids, old.slice(0, 1), "one message, then it waits for the drain");
        sink.release(true);
        await turn();
        assert.deepEqual(sink.ids, old.slice(0, 2));
        sink.release(false);
        await starting;
        assert.ok(live);
        assert.deepEqual(sink.ids, old);
      },
    },
    {
      name: "a cursor from before this engine: the gap comes first, then the history after it",
      async run({ engine, sink, subscription }) {
        const old = await publishMany(engine, "c", 2);
        await subscription("1-0").start();
        assert.equal("gap" in sink.events[0]! && sink.events[0].gap.reason, "unknown");
        assert.deepEqual(sink.ids, old);
      },
    },
    {
      name: "closed while catching up: nothing more reaches the sink, and the channel is let go",
      async run({ engine, fanout, sink, subscription }) {
        await publishMany(engine, "c", 2);
        engine.closeGate();
        const s = subscription(START_CURSOR);
        const starting = s.start();
        await turn();
        s.close();
        engine.openGate();
        await starting;
        await publishMany(engine, "c", 1);
        assert.deepEqual(sink.events, []);
        assert.equal(fanout.channelCount, 0);
        assert.equal(engine.unsubscribes, 1);
      },
    },
  ];
  for (const { name, run } of cases) test(name, () => run(rig()));
});

/** A listener that records the deliveries it is handed. */
function listener(): LiveListener & { got: Delivery[] } {
  const got: Delivery[] = [];
  return { got, onLive: (delivery) => got.push(delivery) };
}

describe("Fanout: one engine subscription per channel, one delivery per message", () => {
  const cases: Array<{ name: string; run: (engine: StagedEngine, fanout: Fanout) => Promise<void> }> = [
    {
      name: "many listeners share one engine subscription and one Delivery of each message",
      async run(engine, fanout) {
        const [a, b, c, other] = [listener(), listener(), listener(), listener()];
        await fanout.attach("x", a);
        await fanout.attach("x", b);
        assert.equal(fanout.attach("x", c), null, "a flowing channel attaches without a wait");
        await fanout.attach("y", other);
        assert.equal(engine.subscribes, 2);
        assert.equal(fanout.channelCount, 2);
        await engine.publish("x", 1);
        assert.equal(a.got.length, 1);
        assert.ok(a.got[0] === b.got[0] && b.got[0] === c.got[0], "the same Delivery object");
        assert.equal(other.got.length, 0);
        assert.equal(fanout.liveDeliveries, 3);
      },
    },
    {
      name: "a message that does not advance the channel (a redelivery) is dropped once, for every listener",
      async run(engine, fanout) {
        const a = listener();
        await fanout.attach("x", a);
        const first = await engine.publish("x", 1);
        await engine.publish("x", 2);
        engine.redeliver(first);
        assert.deepEqual(a.got.map((d) => d.message.data), [1, 2]);
      },
    },
    {
      name: "the last listener leaving closes the engine subscription at once",
      async run(engine, fanout) {
        const a = listener();
        await fanout.attach("x", a);
        fanout.detach("x", a);
        assert.equal(engine.unsubscribes, 1);
        assert.equal(fanout.channelCount, 0);
      },
    },
    {
      name: "with linger (an answered long-poll) the subscription stays for a returning listener, then goes",
      async run(engine, fanout) {
        const a = listener();
        await fanout.attach("x", a);
        fanout.detach("x", a, true);
        assert.equal(engine.unsubscribes, 0);
        assert.equal(fanout.channelCount, 0, "a lingering channel has no subscribers");
        assert.equal(fanout.attach("x", a), null, "back within the linger: no new engine subscription");
        assert.equal(engine.subscribes, 1);
        fanout.detach("x", a, true);
        await new Promise((resolve) => setTimeout(resolve, 700));
        assert.equal(engine.unsubscribes, 1);
      },
    },
    {
      name: "an engine subscription that fails rejects the attach, and the next attach starts afresh",
      async run(engine, fanout) {
        engine.failNextSubscribe = true;
        await assert.rejects(fanout.attach("x", listener()) ?? Promise.resolve(), /broker unavailable/);
        assert.equal(fanout.channelCount, 0);
        const a = listener();
        await fanout.attach("x", a);
        await engine.publish("x", 1);
        assert.equal(a.got.length, 1);
        assert.equal(engine.subscribes, 2);
      },
    },
    {
      name: "history reads of a followed channel share one Delivery per message",
      async run(engine, fanout) {
        await fanout.attach("x", listener());
        const message = await engine.publish("x", 1);
        assert.equal(fanout.deliveryFor(message), fanout.deliveryFor({ ...message }));
        const unfollowed = await engine.publish("z", 1);
        assert.notEqual(fanout.deliveryFor(unfollowed), fanout.deliveryFor(unfollowed));
      },
    },
  ];
  for (const { name, run } of cases) {
    test(name, async () => {
      const engine = new StagedEngine();
      await run(engine, new Fanout(engine));
    });
  }
});
