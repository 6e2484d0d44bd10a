/**
 * Presence webhooks against a real app server: `member_added` when a member's first connection appears on
 * any node, `member_removed` when its last one is gone (after the leave delay, or after its node died), sent
 * by one node. One hub on the memory engine, then three `ladder serve` nodes per broker (real Redis, real
 * NATS) with a member on two nodes at once and a SIGKILLed node. Every event is checked with the
 * verification function docs/hooks.md prints. Missing brokers skip loudly (fail under CI=true).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { RunningServer } from "../src/index.js";
import { eventually, startApp, type AppCall, type TestApp } from "./helpers/app.js";
import { brokerAvailable, deleteNatsStreams, deleteRedisKeys, NATS_URL, REDIS_URL } from "./helpers/brokers.js";
import { startNode, type LadderNode } from "./helpers/nodes.js";
import { openSse, sleep, startHub, type SseStream } from "./helpers/server.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SECRET = "member-webhook-secret-0123";
const LEAVE_MS = 300;

type Verify = (secret: string, timestamp: string | undefined, body: string, signature: string | undefined) => boolean;

/** `verifyWebhook` exactly as docs/hooks.md prints it, loaded as a module. */
async function verifierFromDocs(): Promise<Verify> {
  const markdown = readFileSync(join(ROOT, "docs", "hooks.md"), "utf8");
  const code = /^export function verifyWebhook[\s\S]*?^}$/m.exec(markdown)?.[0];
  assert.ok(code, "docs/hooks.md shows verifyWebhook");
  const dir = join(ROOT, "dist", "docs-example");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, "verify-webhook.mjs");
  writeFileSync(file, `import { createHmac, timingSafeEqual } from "node:crypto";\n${code}\n`);
  return ((await import(pathToFileURL(file).href)) as { verifyWebhook: Verify }).verifyWebhook;
}

let app: TestApp;
let verify: Verify;
before(async () => {
  verify = await verifierFromDocs();
  app = await startApp((_call, res) => void res.writeHead(204).end());
});
after(() => app.close());

/** The member events the app took for a channel, each checked with the docs' verification. */
function memberEvents(channel: string): Array<{ event: string; client: string }> {
  return app.calls
    .filter((c) => c.body.channel === channel && String(c.body.event).startsWith("member_"))
    .map((c: AppCall) => {
      assert.ok(verify(SECRET, c.headers["ladder-webhook-timestamp"] as string, c.raw, c.headers["ladder-webhook-signature"] as string), "the docs' check accepts it");
      return { event: String(c.body.event), client: (c.body.member as { client: string }).client };
    });
}

async function subscribe(base: string, channel: string, client: string): Promise<SseStream> {
  const stream = await openSse(`${base}/api/stream?channel=${channel}&client=${client}`);
  await stream.waitForText("event: ready");
  return stream;
}

describe("member webhooks on one hub (memory engine)", () => {
  let hub: RunningServer;
  before(async () => {
    hub = await startHub({ presence: { channels: ["room.*"], leaveDelayMs: LEAVE_MS }, hooks: { webhooks: { url: `${app.url}/webhooks`, secret: SECRET } } });
  });
  after(() => hub.close());

  test("a member with two connections is added once and removed once, after its last one leaves", async () => {
    const first = await subscribe(hub.url, "room.one", "tab1");
    const second = await subscribe(hub.url, "room.one", "tab1");
    await eventually(() => memberEvents("room.one").length === 1, 3000, "member_added");
    assert.deepEqual(memberEvents("room.one"), [{ event: "member_added", client: "tab1" }]);
    const added = app.calls.find((c) => c.body.channel === "room.one" && c.body.event === "member_added")!;
    assert.deepEqual(Object.keys(added.body).sort(), ["channel", "event", "id", "member", "time"]);
    assert.equal(typeof (added.body.member as { since: unknown }).since, "number");

    first.close();
    await sleep(LEAVE_MS * 2);
    assert.equal(memberEvents("room.one").length, 1, "one connection left: still a member");
    second.close();
    await eventually(() => memberEvents("room.one").length === 2, 3000, "member_removed");
    await sleep(LEAVE_MS);
    assert.deepEqual(memberEvents("room.one"), [
      { event: "member_added", client: "tab1" },
      { event: "member_removed", client: "tab1" },
    ]);
    // Ordered with the channel's other events: occupied before the member, vacated before it was removed.
    const order = app.calls.filter((c) => c.body.channel === "room.one").map((c) => c.body.event);
    assert.deepEqual(order, ["channel_occupied", "member_added", "channel_vacated", "member_removed"]);
  });

  test("a client that comes back within the leave delay is neither removed nor added again", async () => {
    const first = await subscribe(hub.url, "room.two", "flappy");
    await eventually(() => memberEvents("room.two").length === 1, 3000, "member_added");
    first.close();
    await sleep(LEAVE_MS / 3);
    const again = await subscribe(hub.url, "room.two", "flappy");
    await sleep(LEAVE_MS * 2);
    assert.deepEqual(memberEvents("room.two"), [{ event: "member_added", client: "flappy" }]);
    again.close();
    await eventually(() => memberEvents("room.two").length === 2, 3000, "member_removed");
  });
});

for (const broker of [
  { name: "redis", url: () => `${REDIS_URL}?prefix=${encodeURIComponent(`ladder-test:wp${process.pid}:`)}`, probe: REDIS_URL, clean: () => deleteRedisKeys(REDIS_URL, `ladder-test:wp${process.pid}:`) },
  { name: "nats", url: () => `${NATS_URL}?stream=LADDER_TEST_WP${process.pid}&prefix=ladder-test.wp${process.pid}`, probe: NATS_URL, clean: () => deleteNatsStreams(NATS_URL, `LADDER_TEST_WP${process.pid}`) },
]) {
  test(`three nodes on ${broker.name}: one member_added and one member_removed per member, across nodes and a SIGKILLed node`, async (t) => {
    if (!(await brokerAvailable(broker.name, broker.probe))) return t.skip(`${broker.name} not reachable`);
    const dir = mkdtempSync(join(tmpdir(), "ladder-wp-"));
    const config = join(dir, "auth.json");
    writeFileSync(config, JSON.stringify({ rules: [{ match: "room.*", subscribe: "anyone", publish: "anyone" }], hooks: { webhooks: { url: `${app.url}/webhooks`, secret: SECRET } } }));
    const args = ["--presence", "room.*", "--presence-leave-delay", String(LEAVE_MS / 1000), "--presence-node-timeout", "2", "--auth-config", config];
    const nodes: LadderNode[] = await Promise.all([0, 1, 2].map(() => startNode(broker.url(), args)));
    const channel = `room.${broker.name}${process.pid}`;
    const of = (client: string): string[] => memberEvents(channel).filter((e) => e.client === client).map((e) => e.event);
    try {
      // Nodes find each other by heartbeat (every 0.5 s here): let them, as a deployment would have.
      await sleep(1200);
      const onA = await subscribe(nodes[0]!.url, channel, "twin");
      await eventually(() => of("twin").length === 1, 3000, "member_added for twin");
      const onB = await subscribe(nodes[1]!.url, channel, "twin");
      await sleep(800);
      assert.deepEqual(of("twin"), ["member_added"], "its second connection, on another node, adds nothing");
      onA.close();
      await sleep(LEAVE_MS * 3);
      assert.deepEqual(of("twin"), ["member_added"], "one connection is still there, on the other node");
      onB.close();
      await eventually(() => of("twin").length === 2, 3000, "member_removed for twin");

      const doomed = await subscribe(nodes[2]!.url, channel, "doomed");
      await eventually(() => of("doomed").length === 1, 3000, "member_added for doomed");
      await nodes[2]!.kill("SIGKILL");
      doomed.close();
      await eventually(() => of("doomed").length === 2, 6000, "member_removed after its node died");
      // Both survivors saw the node die; give a second one the time it would need to report it too.
      await sleep(1500);
      assert.deepEqual(of("twin"), ["member_added", "member_removed"]);
      assert.deepEqual(of("doomed"), ["member_added", "member_removed"], "reported by one survivor");
    } finally {
      await Promise.all(nodes.map((n) => n.kill()));
      await broker.clean();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
