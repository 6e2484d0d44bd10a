/**
 * Scale-out end to end, for Redis and for NATS JetStream: three `ladder serve` processes share a broker
 * behind a round-robin TCP proxy. SSE and WebSocket subscribers spread over all three get every message
 * published on one node, once each, in order, with the ids the publisher was given; then a node dies
 * (SIGKILL), its clients reconnect through the proxy to the others and resume — SSE with Last-Event-ID,
 * WebSocket with a join `since` — and still nothing is lost and nothing arrives twice.
 *
 * Needs Redis at 127.0.0.1:6379 and nats-server -js at 127.0.0.1:4222 (test/helpers/brokers.ts).
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { brokerAvailable, deleteNatsStreams, deleteRedisKeys, NATS_URL, REDIS_URL } from "./helpers/brokers.js";
import { publishTo, RoundRobinProxy, sseSubscriber, startNode, wsSubscriber, type LadderNode, type Subscriber } from "./helpers/nodes.js";

const redisPrefix = `ladder-test:scale:${process.pid}:`;
const natsStream = `LADDER_TEST_SCALE_${process.pid}`;

const engines: Array<{ name: string; url: string }> = [];
if (await brokerAvailable("Redis", REDIS_URL)) {
  engines.push({ name: "redis", url: `${REDIS_URL}?prefix=${encodeURIComponent(redisPrefix)}` });
  after(() => deleteRedisKeys(REDIS_URL, redisPrefix));
}
if (await brokerAvailable("NATS", NATS_URL)) {
  engines.push({ name: "nats", url: `${NATS_URL}?stream=${natsStream}&prefix=ladder-test.scale${process.pid}` });
  after(() => deleteNatsStreams(NATS_URL, natsStream));
}

const PER_KIND = 6;
const BEFORE_KILL = 40;
const AFTER_KILL = 60;

function assertExactly(subscribers: Subscriber[], published: string[], what: string): void {
  for (const [i, s] of subscribers.entries()) {
    const ids = s.received.map((r) => r.id);
    assert.deepEqual(ids, published, `${what}: ${s.kind} subscriber ${i} got ${ids.length} of ${published.length} (or out of order / twice)`);
    assert.deepEqual(s.received.map((r) => (r.data as { n: number }).n), published.map((_, n) => n), `${what}: ${s.kind} subscriber ${i} data`);
    assert.deepEqual(s.gaps, [], `${what}: ${s.kind} subscriber ${i} got a gap`);
  }
}

for (const engine of engines) {
  describe(`scale-out over ${engine.name}`, () => {
    test("three nodes behind a proxy: every message once to everyone, also after a node is killed", { timeout: 60_000 }, async (t) => {
      const channel = `scale.${engine.name}.${process.pid}`;
      const t0 = Date.now();
      const mark = (what: string): void => t.diagnostic(`${what} at +${Date.now() - t0} ms`);
      const nodes: LadderNode[] = await Promise.all([0, 1, 2].map(() => startNode(engine.url)));
      mark("three nodes ready");
      const proxy = new RoundRobinProxy(nodes.map((n) => n.port));
      const base = await proxy.listen();
      const subscribers: Subscriber[] = [];
      try {
        // Opened one by one, alternating kinds, so round robin puts both kinds on every node.
        for (let i = 0; i < PER_KIND * 2; i++) {
          const s = i % 2 === 0 ? sseSubscriber(base, channel) : wsSubscriber(base, channel);
          subscribers.push(s);
          await s.waitLive();
        }
        mark("12 subscribers live");
        for (const node of nodes) assert.equal(proxy.openPerBackend().get(node.port), (PER_KIND * 2) / 3, "connections spread evenly");

        const [publisherNode, , victim] = nodes as [LadderNode, LadderNode, LadderNode];
        const published: string[] = [];
        for (let n = 0; n < BEFORE_KILL; n++) published.push(await publishTo(publisherNode.url, channel, { n }));
        await Promise.all(subscribers.map((s) => s.waitFor(BEFORE_KILL)));
        assertExactly(subscribers, published, "before the kill");
        mark("everything delivered before the kill");

        const victimClients = subscribers.filter((_, i) => proxy.assignments[i] === victim.port);
        assert.equal(victimClients.length, 4);
        await victim.kill("SIGKILL");
        // Publishing goes on while the victim's clients find another node.
        for (let n = BEFORE_KILL; n < BEFORE_KILL + AFTER_KILL; n++) {
          published.push(await publishTo(publisherNode.url, channel, { n }));
          if (n % 10 === 0) await new Promise((resolve) => setTimeout(resolve, 20));
        }
        await Promise.all(subscribers.map((s) => s.waitFor(BEFORE_KILL + AFTER_KILL)));
        mark("everything delivered after the kill");
        await new Promise((resolve) => setTimeout(resolve, 200)); // anything doubled would show up by now
        assertExactly(subscribers, published, "after the kill");
        for (const s of victimClients) assert.ok(s.connects() >= 2, `${s.kind} client of the killed node reconnected`);
        assert.equal(proxy.openPerBackend().get(victim.port) ?? 0, 0);
        for (const node of nodes.slice(0, 2)) assert.equal(node.log().match(/"level":50/g), null, `no errors logged: ${node.log()}`);
      } finally {
        for (const s of subscribers) s.stop();
        await proxy.close();
        await Promise.all(nodes.map((n) => n.kill("SIGTERM")));
      }
    });
  });
}
