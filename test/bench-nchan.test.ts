/**
 * The bench's Nchan peer (bench/nchan.ts), against a real nginx with the Nchan module started from the
 * configuration the bench writes: on the many-small-channels shape each message reaches its own channel's
 * subscriber and no other, with the bench's own SSE and WebSocket clients and publisher; the publish mode's
 * `POST /pub/<channel>` stores the body whole and keeps the newest 1,000. No timing is asserted.
 *
 * Needs nginx-light and libnginx-mod-nchan: skips loudly without them locally, fails under CI=true.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { channelOf, openSubscribers, type ClientOptions, type Subscriber } from "../bench/load.js";
import { DeliveryMetrics } from "../bench/metrics.js";
import { findNchan, NCHAN_MESSAGES_KEPT, NCHAN_PUBLISH, NchanServer } from "../bench/nchan.js";
import { parseOptions, type BenchOptions } from "../bench/options.js";
import { nchanTarget, publishCases } from "../bench/publish.js";
import { Publisher } from "../bench/publisher.js";
import { publisherPlan } from "../bench/scenario.js";
import { IN_CI, waitUntil } from "./helpers/brokers.js";
import { sleep } from "./helpers/server.js";

const install = findNchan();
if (typeof install === "string") {
  if (IN_CI) throw new Error(`${install} (CI=true: a missing Nchan fails the test)`);
  process.stderr.write(`\n!!! SKIPPING the bench's Nchan tests: ${install}\n\n`);
}
const skip = typeof install === "string" ? "needs nginx with the Nchan module" : false;

describe("the bench's Nchan peer", { skip }, () => {
  let server: NchanServer;
  before(async () => {
    server = await NchanServer.start(install as Exclude<typeof install, string>, { cpu: null, taskset: null, maxConnections: 200 });
  });
  after(() => server.stop());

  for (const pattern of ["sse", "websocket"] as const) {
    test(`${pattern} on many channels: every message reaches its channel's one subscriber, and only it`, async () => {
      const channels = 4;
      const metrics = new DeliveryMetrics();
      const options: ClientOptions = { base: new URL(server.url), metrics, pollIntervalMs: 1000, longPollWaitSeconds: 25, channels, webSocketSubscribedOnOpen: true };
      const subscribers: Subscriber[] = await openSubscribers(pattern, channels, options);
      const publisher = new Publisher(new URL(server.url), channels, { dialect: NCHAN_PUBLISH });
      // The channels outlive a test (the server is shared): count what this one adds.
      const kept = async (c: number) => (await server.channelInfo(channelOf(c, channels)))?.messages ?? 0;
      const before = await Promise.all(Array.from({ length: channels }, (_, c) => kept(c)));
      try {
        await waitUntil("subscribers held", async () => (await server.stats()).held >= channels);
        const sent = await publisher.run(40, 0.5);
        assert.equal(sent.failed, 0);
        assert.equal(sent.ok, 20);
        await waitUntil("deliveries", () => metrics.seen >= sent.ok);
        // Were the channels one (the fixed id of old), each message would reach all four subscribers.
        await sleep(200);
        assert.equal(metrics.seen, sent.ok, "one delivery per message");
        for (let c = 0; c < channels; c++) {
          const info = await server.channelInfo(channelOf(c, channels));
          assert.equal(info?.subscribers, 1, `channel ${c}: its one subscriber`);
          assert.equal((info?.messages ?? 0) - before[c]!, sent.ok / channels, `channel ${c}: its share of the messages`);
        }
        assert.equal(await server.channelInfo("bench"), null, "nothing went to the one-channel id");
      } finally {
        for (const s of subscribers) s.close();
        publisher.close();
      }
    });
  }

  test("one channel: a publish with no ?channel= goes to bench, as the fan-out cases send it", async () => {
    const metrics = new DeliveryMetrics();
    const options: ClientOptions = { base: new URL(server.url), metrics, pollIntervalMs: 1000, longPollWaitSeconds: 25, webSocketSubscribedOnOpen: true };
    const subscribers = [...(await openSubscribers("sse", 2, options)), ...(await openSubscribers("websocket", 2, options))];
    const publisher = new Publisher(new URL(server.url));
    try {
      await waitUntil("subscribers held", async () => (await server.stats()).held >= 4);
      const sent = await publisher.run(20, 0.5);
      assert.equal(sent.ok, 10);
      await waitUntil("deliveries", () => metrics.seen >= 4 * sent.ok);
      await sleep(200);
      assert.equal(metrics.seen, 4 * sent.ok, "every subscriber has every message once");
    } finally {
      for (const s of subscribers) s.close();
      publisher.close();
    }
  });

  test("--publisher ws on one channel: Nchan's WebSocket publisher answers every frame, and every subscriber gets it", async () => {
    const metrics = new DeliveryMetrics();
    const options: ClientOptions = { base: new URL(server.url), metrics, pollIntervalMs: 1000, longPollWaitSeconds: 25, webSocketSubscribedOnOpen: true };
    const subscribers = [...(await openSubscribers("sse", 2, options)), ...(await openSubscribers("websocket", 2, options))];
    const publisher = new Publisher(new URL(server.url), 1, { via: "ws", connections: 2, dialect: NCHAN_PUBLISH });
    try {
      await waitUntil("subscribers held", async () => (await server.stats()).held >= 4);
      await publisher.open();
      const sent = await publisher.run(40, 0.5);
      assert.deepEqual([sent.ok, sent.failed], [20, 0], "each frame answered with the channel's info");
      await waitUntil("deliveries", () => metrics.seen >= 4 * sent.ok);
      await sleep(200);
      assert.equal(metrics.seen, 4 * sent.ok, "every subscriber has every message once");
    } finally {
      for (const s of subscribers) s.close();
      publisher.close();
    }
    // On more than one channel a WebSocket per channel would be needed: the fan-out keeps Nchan on HTTP and says so.
    await assert.rejects(new Publisher(new URL(server.url), 4, { via: "ws", dialect: NCHAN_PUBLISH }).open(), /no WebSocket publisher for 4 channels/);
    const plan = (args: string[]) => publisherPlan("nchan", parseOptions(args) as BenchOptions);
    assert.equal(plan(["--publisher", "ws", "--publisher-connections", "3"]).label, "ws×3");
    const many = plan(["--publisher", "ws", "--subscribers", "100", "--channels", "100", "--patterns", "sse"]);
    assert.deepEqual([many.via, many.label], ["http", "http"]);
    assert.match(many.fallback ?? "", /one channel per connection: 100 channels would need 100 publisher connections/);
  });

  test("publish mode: POST /pub/<channel> answers 2xx, stores the body whole and keeps the newest 1,000", async () => {
    const target = nchanTarget(server);
    const channel = "publish-mode";
    const total = NCHAN_MESSAGES_KEPT + 5;
    // One after another, so the order stored is the order sent.
    for (let seq = 0; seq < total; seq++) {
      const { path, body } = target.single(channel, `{"seq":${seq}}`);
      const res = await fetch(`${server.url}${path}`, { method: "POST", body });
      await res.arrayBuffer();
      assert.ok(res.status >= 200 && res.status < 300, `publish ${seq} answered ${res.status}`);
    }
    assert.deepEqual(await server.channelInfo(channel), { messages: NCHAN_MESSAGES_KEPT, subscribers: 0 });
    // The oldest message kept is the one after the five pushed out, byte for byte the posted body.
    const res = await fetch(`${server.url}/api/messages?channel=${channel}`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), '{"channel":"publish-mode","data":{"seq":5}}');
  });
});

test("publish mode: Nchan runs the single HTTP form only, and only when installed", () => {
  const options = parseOptions(["--publish", "http,http-batch,ws,ws-batch"]) as BenchOptions;
  const nchanCases = (installed: boolean) => publishCases(options, installed).filter((c) => c.impl === "nchan");
  assert.deepEqual(nchanCases(true), [{ scenario: "http", impl: "nchan", engine: "memory", connections: 20 }]);
  assert.deepEqual(nchanCases(false), []);
  assert.deepEqual(
    publishCases(parseOptions(["--publish", "http", "--impls", "ladder,baseline"]) as BenchOptions, true).map((c) => c.impl),
    ["ladder", "baseline"],
  );
});
