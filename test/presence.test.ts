/**
 * Presence across nodes, one suite over each bus: in process, Redis pub/sub and core NATS (real brokers;
 * missing ones skip loudly, or fail under CI=true). Several Presence instances stand for several nodes,
 * each with its own bus connection; a crash is a node whose connection is cut with no goodbye.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { createBus, MemoryBus, type BusHandler, type PresenceBus } from "../src/server/presence/bus.js";
import type { PresenceEvent } from "../src/protocol/index.js";
import { Presence, type PresenceOptions } from "../src/server/presence/presence.js";
import { brokerAvailable, NATS_URL, REDIS_URL } from "./helpers/brokers.js";
import { sleep } from "./helpers/server.js";

/** A real bus behind a switch: cut, it neither sends nor delivers (a node that died without a word). */
class CuttableBus implements PresenceBus {
  readonly #inner: PresenceBus;
  cut = false;
  /** Drops this node's next publishes whose payload matches (a lost announcement). */
  dropNext: RegExp | null = null;
  constructor(inner: PresenceBus) {
    this.#inner = inner;
  }
  publish(topic: string, payload: string): void {
    if (this.cut) return;
    if (this.dropNext?.test(payload)) {
      this.dropNext = null;
      return;
    }
    this.#inner.publish(topic, payload);
  }
  subscribe(topic: string, handler: BusHandler): Promise<() => void> {
    return this.#inner.subscribe(topic, (payload) => {
      if (!this.cut) handler(payload);
    });
  }
  close(): Promise<void> {
    return this.#inner.close();
  }
}

interface Kind {
  readonly name: string;
  readonly bus: () => Promise<PresenceBus>;
  readonly available: () => Promise<boolean>;
}

const shared = new MemoryBus();
const kinds: Kind[] = [
  { name: "memory", bus: async () => shared, available: async () => true },
  { name: "redis", bus: () => createBus(`${REDIS_URL}?prefix=${encodeURIComponent(`ladder-test:presence${process.pid}:`)}`), available: () => brokerAvailable("Redis", REDIS_URL) },
  { name: "nats", bus: () => createBus(`${NATS_URL}?prefix=ladder-test.presence${process.pid}`), available: () => brokerAvailable("NATS", NATS_URL) },
];

const FAST: Partial<PresenceOptions> = { leaveDelayMs: 300, heartbeatMs: 100, nodeTimeoutMs: 600, gatherMs: 300, resyncMs: 60_000 };

for (const kind of kinds) {
  describe(`presence over the ${kind.name} bus`, () => {
    const nodes: Presence[] = [];
    const buses: CuttableBus[] = [];
    after(async () => {
      for (const node of nodes) await node.close();
      for (const bus of buses) if (bus !== undefined) await bus.close().catch(() => undefined);
    });
    async function node(options: Partial<PresenceOptions> = {}): Promise<{ presence: Presence; bus: CuttableBus }> {
      const bus = new CuttableBus(await kind.bus());
      if (kind.name !== "memory") buses.push(bus);
      const presence = new Presence({ ...FAST, ...options, bus });
      nodes.push(presence);
      await presence.whenStarted();
      return { presence, bus };
    }
    let seq = 0;
    const channel = (): string => `room.${kind.name}.${process.pid}.${++seq}`;
    function record(events: string[]): (e: PresenceEvent) => void {
      return (e) => events.push(`${e.type}:${e.member.client}`);
    }
    async function until(check: () => boolean, what: string, ms = 3000): Promise<void> {
      const deadline = Date.now() + ms;
      while (!check()) {
        if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
        await sleep(10);
      }
    }

    test("a member on one node is listed and counted on another; its join and leave reach a watcher there", async (t) => {
      if (!(await kind.available())) return t.skip(`${kind.name} not reachable`);
      const [a, b] = [await node(), await node()];
      const ch = channel();
      const events: string[] = [];
      const watch = await b.presence.watch(ch, record(events));
      assert.deepEqual(watch.members, []);
      const leave = a.presence.join(ch, { client: "ada", user: "u1", info: { name: "Ada" }, since: 1000 });
      await until(() => events.length === 1, "join seen on b");
      assert.deepEqual(events, ["join:ada"]);
      const listed = await b.presence.list(ch, 100);
      assert.deepEqual(listed, { members: [{ client: "ada", user: "u1", info: { name: "Ada" }, since: 1000 }], count: 1 });
      assert.equal(await b.presence.count(ch), 1);
      leave();
      await sleep(100);
      assert.deepEqual(events, ["join:ada"], "no leave before the leave delay");
      await until(() => events.length === 2, "leave seen on b");
      assert.deepEqual(events, ["join:ada", "leave:ada"]);
      assert.equal(await a.presence.count(ch), 0);
      watch.stop();
    });

    test("a client with two connections leaves once, after the last; flapping within the delay makes no events", async (t) => {
      if (!(await kind.available())) return t.skip(`${kind.name} not reachable`);
      const [a, b] = [await node(), await node()];
      const ch = channel();
      const events: string[] = [];
      const watch = await b.presence.watch(ch, record(events));
      const first = a.presence.join(ch, { client: "c1", since: 1 });
      const second = a.presence.join(ch, { client: "c1", since: 2 });
      await until(() => events.length === 1, "one join");
      first();
      for (let i = 0; i < 5; i++) {
        a.presence.join(ch, { client: "c1", since: 3 })();
        await sleep(20);
      }
      await sleep(450);
      assert.deepEqual(events, ["join:c1"], "the second connection keeps it in; flaps are absorbed");
      second();
      await until(() => events.length === 2, "leave");
      assert.deepEqual(events, ["join:c1", "leave:c1"]);
      watch.stop();
    });

    test("a client that reconnects on another node within the leave delay makes no leave and no join", async (t) => {
      if (!(await kind.available())) return t.skip(`${kind.name} not reachable`);
      const [a, b, watcher] = [await node(), await node(), await node()];
      const ch = channel();
      const events: string[] = [];
      const watch = await watcher.presence.watch(ch, record(events));
      const onA = a.presence.join(ch, { client: "mover", user: "u2", since: 5 });
      await until(() => events.length === 1, "join");
      onA();
      await sleep(50);
      const onB = b.presence.join(ch, { client: "mover", user: "u2", since: 6 });
      await sleep(600);
      assert.deepEqual(events, ["join:mover"]);
      assert.equal((await watcher.presence.list(ch, 10)).count, 1);
      onB();
      await until(() => events.length === 2, "leave after the last connection");
      watch.stop();
    });

    test("a node that dies without a word: its members leave every view within the node timeout", async (t) => {
      if (!(await kind.available())) return t.skip(`${kind.name} not reachable`);
      const [doomed, b] = [await node(), await node()];
      const ch = channel();
      const events: string[] = [];
      const watch = await b.presence.watch(ch, record(events));
      doomed.presence.join(ch, { client: "ghost", since: 9 });
      await until(() => events.length === 1, "join");
      const cutAt = Date.now();
      doomed.bus.cut = true;
      await until(() => events.length === 2, "leave of the dead node's member", 3000);
      const took = Date.now() - cutAt;
      assert.deepEqual(events, ["join:ghost", "leave:ghost"]);
      assert.ok(took >= 500 && took < 1500, `left after ${took} ms (timeout 600 ms, heartbeat 100 ms)`);
      assert.equal((await b.presence.list(ch, 10)).count, 0, "a dead node is not listed: it does not answer");
      watch.stop();
    });

    test("a lost announcement heals at the next resync", async (t) => {
      if (!(await kind.available())) return t.skip(`${kind.name} not reachable`);
      const a = await node();
      const b = await node({ resyncMs: 900 });
      const ch = channel();
      const events: string[] = [];
      const watch = await b.presence.watch(ch, record(events));
      a.bus.dropNext = /"op":"add"/;
      a.presence.join(ch, { client: "quiet", since: 11 });
      await sleep(100);
      assert.deepEqual(events, [], "the add was lost");
      await until(() => events.length === 1, "join after resync", 2000);
      assert.deepEqual(events, ["join:quiet"]);
      watch.stop();
    });

    test("member reports (webhooks): one per member over all nodes; a lost announcement at the resync and a dead node's members by the lowest live node", async (t) => {
      if (!(await kind.available())) return t.skip(`${kind.name} not reachable`);
      const ch = channel();
      const reports: string[] = [];
      const reporter = (name: string): PresenceOptions["onMember"] => (event, at, member) => void (at === ch && reports.push(`${name}:${event}:${member.client}`));
      const [a, b, c] = [await node({ onMember: reporter("a"), resyncMs: 900 }), await node({ onMember: reporter("b"), resyncMs: 900 }), await node({ onMember: reporter("c"), resyncMs: 900 })];
      const names = new Map([a, b, c].map((n, i) => [n.presence.node, "abc"[i]!]));
      // The nodes hear each other's heartbeats (and read the others' members) first, as in a running cluster.
      await sleep(400);
      const lowest = (among: Array<typeof a>): string => names.get(among.map((n) => n.presence.node).sort()[0]!)!;

      const onA = a.presence.join(ch, { client: "twin", since: 1 });
      await until(() => reports.length === 1, "member_added");
      const onB = b.presence.join(ch, { client: "twin", since: 2 });
      await sleep(200);
      assert.deepEqual(reports, ["a:member_added:twin"], "added once, by the node where it came");
      onA();
      await sleep(500);
      assert.deepEqual(reports, ["a:member_added:twin"], "its connection on b keeps it");
      onB();
      await until(() => reports.length === 2, "member_removed");
      await sleep(200);
      assert.deepEqual(reports, ["a:member_added:twin", "b:member_removed:twin"], "removed once, by the node it left last");

      c.bus.dropNext = /"op":"add","node":"[^"]+","channel"/;
      c.presence.join(ch, { client: "quiet", since: 3 });
      await until(() => reports.length === 3, "member_added found by a resync", 3000);
      await sleep(1000);
      assert.deepEqual(reports.slice(2), [`${lowest([a, b, c])}:member_added:quiet`], "one report, by the lowest node");

      c.bus.cut = true;
      await until(() => reports.length === 4, "member_removed after c died", 3000);
      await sleep(500);
      assert.deepEqual(reports.slice(3), [`${lowest([a, b])}:member_removed:quiet`], "one report, by the lowest survivor");
    });

    test("a watcher that starts late gets the current members, then only changes", async (t) => {
      if (!(await kind.available())) return t.skip(`${kind.name} not reachable`);
      const [a, b] = [await node(), await node()];
      const ch = channel();
      a.presence.join(ch, { client: "early", since: 1 });
      a.presence.join(ch, { client: "earlier", since: 0 });
      await sleep(50);
      const events: string[] = [];
      const watch = await b.presence.watch(ch, record(events));
      assert.deepEqual(watch.members.map((m) => m.client), ["earlier", "early"]);
      const listed = await b.presence.list(ch, 1);
      assert.deepEqual([listed.members.length, listed.count], [1, 2], "a capped list keeps the exact count");
      a.presence.join(ch, { client: "late", since: 2 });
      await until(() => events.length === 1, "join of late");
      assert.deepEqual(events, ["join:late"]);
      watch.stop();
    });
  });
}
