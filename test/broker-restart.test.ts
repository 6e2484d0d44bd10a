/**
 * The broker goes away and comes back, with two `ladder serve` nodes on it (one publishing, one serving
 * SSE and WebSocket subscribers): for Redis and for NATS JetStream, each a private server on another
 * loopback port with its own temp data directory, so the shared services are untouched.
 *
 * - Nodes started before their broker are up but not ready: /readyz 503, publishes 503. They become
 *   ready by themselves when the broker starts.
 * - The broker is killed (SIGKILL) in the middle of a publish stream and restarted: publishes fail fast
 *   with 503 meanwhile (never acknowledged and then dropped), /readyz says so, connected subscribers
 *   stay connected, and once the broker is back every publish that got 201 reaches every subscriber,
 *   in order, once.
 * - Only the subscribers' node loses its broker (its link goes through a TCP proxy that is cut): the
 *   other node keeps publishing, and when the link is back the node reads what it missed from history.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { compareIds } from "../src/protocol/index.js";
import { programAvailable, startNats, startRedis, waitUntil, type BrokerProcess } from "./helpers/brokers.js";
import { isReady, publishTo, RoundRobinProxy, sseSubscriber, startNode, wsSubscriber, type LadderNode, type Subscriber } from "./helpers/nodes.js";

interface Attempt {
  readonly n: number;
  readonly status: number;
  readonly id: string | null;
  readonly ms: number;
}

const brokers: Array<{ name: string; program: string; start: () => Promise<BrokerProcess>; engine: (b: BrokerProcess | string) => string }> = [];
if (await programAvailable("redis-server")) {
  brokers.push({ name: "redis", program: "redis-server", start: () => startRedis([], { start: false }), engine: (b) => `${typeof b === "string" ? b : b.url}?prefix=ladder-test%3Arestart%3A` });
}
if (await programAvailable("nats-server")) {
  brokers.push({ name: "nats", program: "nats-server", start: () => startNats({ start: false }), engine: (b) => `${typeof b === "string" ? b : b.url}?stream=LADDER_TEST_RESTART&prefix=ladder-test.restart` });
}

/** Asserts each subscriber got exactly these ids, in order, once, without a gap or a reconnect. */
function assertDelivered(subscribers: Subscriber[], ids: string[]): void {
  for (const [i, s] of subscribers.entries()) {
    assert.deepEqual(s.received.map((r) => r.id), ids, `${s.kind} ${i}: every acknowledged message, in order, once`);
    assert.deepEqual(s.gaps, [], `${s.kind} ${i}: no gap`);
    assert.equal(s.connects(), 1, `${s.kind} ${i}: stayed connected`);
  }
}

/** Publishes one message after another until stopped, recording each answer (201 or otherwise). */
function publishLoop(base: string, channel: string): { attempts: Attempt[]; acknowledged: () => number; stop: () => Promise<void> } {
  const attempts: Attempt[] = [];
  let stopped = false;
  const loop = (async () => {
    for (let n = 0; !stopped; n++) {
      const started = Date.now();
      let status = 201;
      let id: string | null = null;
      try {
        id = await publishTo(base, channel, { n });
      } catch (error) {
        status = (error as { status?: number }).status ?? 0;
      }
      attempts.push({ n, status, id, ms: Date.now() - started });
      await new Promise((resolve) => setTimeout(resolve, status === 201 ? 5 : 50));
    }
  })();
  return {
    attempts,
    acknowledged: () => attempts.filter((a) => a.status === 201).length,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

for (const kind of brokers) {
  describe(`broker restart: ${kind.name}`, () => {
    test("nodes wait for their broker, fail fast while it is down, and deliver every acknowledged publish after", { timeout: 90_000 }, async (t) => {
      const broker = await kind.start();
      const nodes: LadderNode[] = [];
      const subscribers: Subscriber[] = [];
      try {
        // Nodes first: they start, but are not ready and refuse publishes until the broker is there.
        nodes.push(...(await Promise.all([0, 1].map(() => startNode(kind.engine(broker), ["--log-level", "info"], { waitReady: false })))));
        const [publisher, server] = nodes as [LadderNode, LadderNode];
        assert.equal(await isReady(publisher.url), false, "not ready without a broker");
        await assert.rejects(publishTo(publisher.url, "early", 1), (error: { status?: number }) => error.status === 503);
        await broker.start();
        await waitUntil("both nodes ready once the broker is up", async () => (await isReady(publisher.url)) && (await isReady(server.url)), 20_000);

        const channel = `restart.${kind.name}.${process.pid}`;
        for (let i = 0; i < 4; i++) {
          const s = i % 2 === 0 ? sseSubscriber(server.url, channel) : wsSubscriber(server.url, channel);
          subscribers.push(s);
          await s.waitLive();
        }

        const loop = publishLoop(publisher.url, channel);
        await waitUntil("40 acknowledged publishes", () => loop.acknowledged() >= 40, 20_000);
        await broker.stop("SIGKILL");
        const failedBefore = loop.attempts.length;
        await waitUntil("readyz 503 on both nodes while the broker is down", async () => !(await isReady(publisher.url)) && !(await isReady(server.url)), 10_000);
        await waitUntil("publishes refused while the broker is down", () => loop.attempts.slice(failedBefore).filter((a) => a.status === 503).length >= 5, 10_000);
        await broker.start();
        const acknowledgedBeforeRestart = loop.acknowledged();
        await waitUntil("40 more acknowledged publishes after the restart", () => loop.acknowledged() >= acknowledgedBeforeRestart + 40, 30_000);
        await loop.stop();

        const failed = loop.attempts.filter((a) => a.status !== 201);
        assert.ok(failed.length >= 5, "some publishes were refused during the outage");
        assert.deepEqual([...new Set(failed.map((a) => a.status))], [503], "refused with 503 only");
        assert.ok(Math.max(...failed.map((a) => a.ms)) < 3000, `refusals were fast: ${failed.map((a) => a.ms).join(",")} ms`);

        const acknowledged = loop.attempts.filter((a) => a.status === 201);
        await Promise.all(subscribers.map((s) => waitUntil(`${s.kind} subscriber has every acknowledged message`, () => acknowledged.every((a) => s.received.some((r) => r.id === a.id)), 20_000)));
        await new Promise((resolve) => setTimeout(resolve, 200));
        for (const [i, s] of subscribers.entries()) {
          const ids = s.received.map((r) => r.id);
          for (let k = 1; k < ids.length; k++) assert.ok(compareIds(ids[k - 1]!, ids[k]!) < 0, `${s.kind} ${i}: in order, once (${ids[k - 1]} then ${ids[k]})`);
          assert.equal(new Set(ids).size, ids.length, `${s.kind} ${i}: nothing twice`);
          const extra = ids.filter((id) => !acknowledged.some((a) => a.id === id));
          // A publish whose answer was lost with the broker may still have been stored: at least once for those.
          assert.ok(extra.length <= failed.length, `${s.kind} ${i}: only unacknowledged publishes may show up unannounced (${extra.length})`);
          assert.deepEqual(s.gaps, [], `${s.kind} ${i}: no gap`);
          assert.equal(s.connects(), 1, `${s.kind} ${i}: stayed connected through the outage`);
        }
        const caughtUp = [...server.log().matchAll(/"messages":(\d+),"msg":"live feed caught up from history"/g)].map((m) => Number(m[1]));
        t.diagnostic(`${failed.length} publishes refused; the subscribers' node caught up ${caughtUp.reduce((a, b) => a + b, 0)} messages from history after reconnecting`);
      } finally {
        for (const s of subscribers) s.stop();
        await Promise.all(nodes.map((n) => n.kill("SIGKILL")));
        await broker.destroy();
      }
    });

    test("a node cut off from the broker catches its subscribers up when the link is back", { timeout: 90_000 }, async (t) => {
      const broker = await kind.start();
      await broker.start();
      const link = new RoundRobinProxy([broker.port]);
      const linkUrl = (await link.listen()).replace("http:", `${kind.name}:`);
      const nodes: LadderNode[] = [];
      const subscribers: Subscriber[] = [];
      try {
        nodes.push(await startNode(kind.engine(broker), []), await startNode(kind.engine(linkUrl), ["--log-level", "info"]));
        const [publisher, server] = nodes as [LadderNode, LadderNode];
        const channel = `partition.${kind.name}.${process.pid}`;
        for (let i = 0; i < 2; i++) {
          const s = i % 2 === 0 ? sseSubscriber(server.url, channel) : wsSubscriber(server.url, channel);
          subscribers.push(s);
          await s.waitLive();
        }
        const loop = publishLoop(publisher.url, channel);
        await waitUntil("20 acknowledged publishes", () => loop.acknowledged() >= 20, 20_000);
        link.partition(true);
        await waitUntil("the cut-off node reports not ready", async () => !(await isReady(server.url)), 10_000);
        const acknowledgedAtCut = loop.acknowledged();
        await waitUntil("20 publishes while the node is cut off", () => loop.acknowledged() >= acknowledgedAtCut + 20, 20_000);
        link.partition(false);
        await waitUntil("the node is ready again", () => isReady(server.url), 20_000);
        const acknowledgedAtHeal = loop.acknowledged();
        await waitUntil("20 more publishes", () => loop.acknowledged() >= acknowledgedAtHeal + 20, 20_000);
        await loop.stop();
        assert.deepEqual(loop.attempts.filter((a) => a.status !== 201), [], "the publisher's node was never affected");
        const ids = loop.attempts.map((a) => a.id!);
        await Promise.all(subscribers.map((s) => s.waitFor(ids.length, 20_000)));
        await new Promise((resolve) => setTimeout(resolve, 200));
        assertDelivered(subscribers, ids);
        const caughtUp = [...server.log().matchAll(/"messages":(\d+),"msg":"live feed caught up from history"/g)].reduce((sum, m) => sum + Number(m[1]), 0);
        t.diagnostic(`caught up ${caughtUp} messages from history after the link came back`);
        assert.ok(caughtUp > 0, "what was published during the cut came from history");
      } finally {
        for (const s of subscribers) s.stop();
        await Promise.all(nodes.map((n) => n.kill("SIGKILL")));
        await link.close();
        await broker.destroy();
      }
    });
  });
}
