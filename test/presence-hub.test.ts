/**
 * Presence through the hub, on real sockets: SSE (`presence=1`), WebSocket (`join` with `presence: true`,
 * the `presence` frame), polls that name their client, and `GET /api/presence`; permissions and bad input;
 * then three `ladder serve` nodes per broker (Redis, NATS) with one SIGKILLed: its members leave within
 * the node timeout. Missing brokers skip loudly (fail under CI=true).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SignJWT } from "jose";
import type { RunningServer } from "../src/index.js";
import { brokerAvailable, deleteNatsStreams, deleteRedisKeys, NATS_URL, REDIS_URL, waitUntil } from "./helpers/brokers.js";
import { startNode, type LadderNode } from "./helpers/nodes.js";
import { openSse, openWs, sleep, startHub } from "./helpers/server.js";

const SECRET = "presence-secret-presence-secret-0123";
const LEAVE_MS = 300;

async function token(sub: string, info?: unknown): Promise<string> {
  return new SignJWT({ ladder: { subscribe: ["*"], publish: ["*"], ...(info !== undefined ? { info } : {}) } })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(sub)
    .setExpirationTime("10m")
    .sign(new TextEncoder().encode(SECRET));
}

async function presenceOf(base: string, channel: string, extra = "", headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}/api/presence?channel=${channel}${extra}`, { headers });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const clients = (body: Record<string, unknown>): string[] => (body.members as Array<{ client: string }>).map((m) => m.client).sort();

describe("presence on one hub", () => {
  let hub: RunningServer;
  before(async () => {
    hub = await startHub({ presence: { channels: ["chat.*"], leaveDelayMs: LEAVE_MS, maxMembers: 3 } });
  });
  after(() => hub.close());

  test("SSE and WebSocket members: snapshot, joins and leaves in order, the list and the count over HTTP", async () => {
    const sse = await openSse(`${hub.url}/api/stream?channel=chat.a&presence=1&client=sse1`);
    await sse.waitFor(1, 3000, () => sse.events.some((e) => e.event === "presence"), "presence snapshot");
    const snapshot = JSON.parse(sse.events.find((e) => e.event === "presence")!.data) as { channel: string; members: Array<{ client: string }>; count: number };
    assert.deepEqual([snapshot.channel, snapshot.members.map((m) => m.client), snapshot.count], ["chat.a", ["sse1"], 1], "the snapshot holds the stream itself");
    assert.equal(sse.events.find((e) => e.event === "presence")!.id, undefined, "presence events do not move the resume cursor");

    const ws = await openWs(hub.url, "/api/ws?client=ws1");
    ws.send({ type: "join", room: "chat.a", presence: true });
    await ws.next((f) => f.type === "joined");
    const list = await ws.next((f) => f.type === "presence");
    assert.deepEqual((list.members as Array<{ client: string }>).map((m) => m.client).sort(), ["sse1", "ws1"]);
    await sse.waitFor(1, 3000, () => sse.events.some((e) => e.event === "join"), "join on SSE");
    assert.deepEqual(JSON.parse(sse.events.find((e) => e.event === "join")!.data).client, "ws1", "one channel: the member itself is the data");

    const read = await presenceOf(hub.url, "chat.a");
    assert.equal(read.status, 200);
    assert.deepEqual([read.body.channel, clients(read.body), read.body.count], ["chat.a", ["sse1", "ws1"], 2]);
    assert.deepEqual((await presenceOf(hub.url, "chat.a", "&count=1")).body, { channel: "chat.a", count: 2 });

    ws.send({ type: "presence", room: "chat.a", ref: 7 });
    const asked = await ws.next((f) => f.type === "presence" && f.ref === 7);
    assert.equal(asked.count, 2);

    const message = await fetch(`${hub.url}/api/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ channel: "chat.a", data: "hi" }) });
    assert.equal(message.status, 201);
    await ws.close();
    await sse.waitFor(1, 3000, () => sse.events.some((e) => e.event === "leave"), "leave on SSE");
    const kinds = sse.events.map((e) => e.event ?? "message");
    assert.deepEqual(kinds, ["presence", "join", "message", "leave"], "joins and leaves in order with the messages");
    sse.close();
  });

  test("a client that reconnects within the leave delay makes no leave and no join; a poller that names its client is listed", async () => {
    const watcher = await openSse(`${hub.url}/api/stream?channel=chat.b&presence=1&client=watcher`);
    await watcher.waitFor(1, 3000, () => watcher.events.some((e) => e.event === "presence"), "snapshot");
    const first = await openWs(hub.url, "/api/ws?client=flappy");
    first.send({ type: "join", room: "chat.b" });
    await first.next((f) => f.type === "joined");
    await watcher.waitFor(2, 3000, () => watcher.events.some((e) => e.event === "join"), "join");
    await first.close();
    await sleep(LEAVE_MS / 3);
    const second = await openWs(hub.url, "/api/ws?client=flappy");
    second.send({ type: "join", room: "chat.b" });
    await second.next((f) => f.type === "joined");
    await sleep(LEAVE_MS * 2);
    assert.deepEqual(watcher.events.map((e) => e.event), ["presence", "join"], "no leave, no second join");

    const polled = await fetch(`${hub.url}/api/messages?channel=chat.b&since=now&client=poller`);
    assert.equal(polled.status, 200);
    await polled.text();
    await watcher.waitFor(3, 3000, () => watcher.events.filter((e) => e.event === "join").length === 2, "poller joins");
    assert.deepEqual(clients((await presenceOf(hub.url, "chat.b")).body), ["flappy", "poller", "watcher"]);
    await watcher.waitFor(4, 3000, () => watcher.events.some((e) => e.event === "leave"), "poller leaves after the delay");
    assert.equal(JSON.parse(watcher.events.find((e) => e.event === "leave")!.data).client, "poller");
    await second.close();
    watcher.close();
  });

  test("lists are capped at maxMembers with an exact count; bad input gets its code", async () => {
    const sockets = await Promise.all([1, 2, 3, 4].map((i) => openWs(hub.url, `/api/ws?client=m${i}`)));
    for (const ws of sockets) ws.send({ type: "join", room: "chat.big" });
    await Promise.all(sockets.map((ws) => ws.next((f) => f.type === "joined")));
    const read = await presenceOf(hub.url, "chat.big");
    assert.deepEqual([(read.body.members as unknown[]).length, read.body.count], [3, 4]);
    assert.equal((await presenceOf(hub.url, "chat.big", "&limit=2")).body.members instanceof Array, true);
    assert.deepEqual((await presenceOf(hub.url, "chat.big", "&limit=9")).status, 400);
    assert.deepEqual((await presenceOf(hub.url, "other")).body, { error: { code: "not_found", message: "presence is not enabled for channel other" } });
    assert.equal((await presenceOf(hub.url, "bad%20channel")).status, 400);
    assert.equal((await fetch(`${hub.url}/api/presence?channel=chat.big`, { method: "POST" })).status, 405);
    const bad = await fetch(`${hub.url}/api/stream?channel=chat.x&client=${"x".repeat(65)}`);
    assert.equal(bad.status, 400, "a client id past 64 characters");
    const ws = sockets[0]!;
    ws.send({ type: "presence", room: "other", ref: "r1" });
    assert.equal((await ws.next((f) => f.type === "error" && f.ref === "r1")).code, "not_found");
    ws.send({ type: "join", room: "other", presence: true, ref: "r2" });
    assert.equal((await ws.next((f) => f.type === "error" && f.ref === "r2")).code, "not_found");
    ws.send({ type: "presence", room: "no spaces", ref: "r3" });
    assert.equal((await ws.next((f) => f.type === "error" && f.ref === "r3")).code, "bad_channel");
    await Promise.all(sockets.map((s) => s.close()));
  });
});

test("with access control: reading presence needs subscribe permission; a token's sub and info are the member's", async () => {
  const hub = await startHub({
    presence: { channels: ["room.*"], leaveDelayMs: LEAVE_MS },
    auth: { rules: [{ match: "room.*", subscribe: "token", publish: "token" }], jwt: { secret: SECRET } },
  });
  try {
    assert.equal((await presenceOf(hub.url, "room.1")).status, 401);
    const ada = await token("ada", { name: "Ada" });
    const sse = await openSse(`${hub.url}/api/stream?channel=room.1&presence=1&client=tab1`, { authorization: `Bearer ${ada}` });
    await sse.waitFor(1, 3000, () => sse.events.some((e) => e.event === "presence"), "snapshot");
    const read = await presenceOf(hub.url, "room.1", "", { authorization: `Bearer ${ada}` });
    assert.equal(read.status, 200);
    const [member] = read.body.members as Array<Record<string, unknown>>;
    assert.deepEqual([member!.client, member!.user, member!.info], ["tab1", "ada", { name: "Ada" }]);
    const narrow = await new SignJWT({ ladder: { subscribe: ["room.2"], publish: [] } }).setProtectedHeader({ alg: "HS256" }).setSubject("bob").setExpirationTime("10m").sign(new TextEncoder().encode(SECRET));
    assert.equal((await presenceOf(hub.url, "room.1", "", { authorization: `Bearer ${narrow}` })).status, 403);
    sse.close();
  } finally {
    await hub.close();
  }
});

for (const broker of [
  { name: "redis", url: () => `${REDIS_URL}?prefix=${encodeURIComponent(`ladder-test:ph${process.pid}:`)}`, probe: REDIS_URL, clean: () => deleteRedisKeys(REDIS_URL, `ladder-test:ph${process.pid}:`) },
  { name: "nats", url: () => `${NATS_URL}?stream=LADDER_TEST_PH${process.pid}&prefix=ladder-test.ph${process.pid}`, probe: NATS_URL, clean: () => deleteNatsStreams(NATS_URL, `LADDER_TEST_PH${process.pid}`) },
]) {
  test(`three nodes on ${broker.name}: a member on one is seen on another within 1 s; a SIGKILLed node's members leave`, async (t) => {
    if (!(await brokerAvailable(broker.name, broker.probe))) return t.skip(`${broker.name} not reachable`);
    const args = ["--presence", "chat.*", "--presence-leave-delay", "0.3", "--presence-node-timeout", "2"];
    const nodes: LadderNode[] = await Promise.all([0, 1, 2].map(() => startNode(broker.url(), args)));
    try {
      const channel = `chat.${broker.name}${process.pid}`;
      const watcher = await openSse(`${nodes[1]!.url}/api/stream?channel=${channel}&presence=1&client=watcher`);
      await watcher.waitFor(1, 5000, () => watcher.events.some((e) => e.event === "presence"), "snapshot");
      const ws = await openWs(nodes[0]!.url, "/api/ws?client=doomed");
      const joinedAt = Date.now();
      ws.send({ type: "join", room: channel });
      await watcher.waitFor(2, 3000, () => watcher.events.some((e) => e.event === "join"), "join across nodes");
      assert.ok(Date.now() - joinedAt < 1000, `seen on another node after ${Date.now() - joinedAt} ms`);
      await waitUntil("listed on the third node", async () => clients((await presenceOf(nodes[2]!.url, channel)).body).join() === "doomed,watcher", 3000);
      const killedAt = Date.now();
      await nodes[0]!.kill("SIGKILL");
      await watcher.waitFor(3, 6000, () => watcher.events.some((e) => e.event === "leave"), "leave of the dead node's member");
      const took = Date.now() - killedAt;
      assert.equal(JSON.parse(watcher.events.find((e) => e.event === "leave")!.data).client, "doomed");
      assert.ok(took < 2000 + 500 + 1000, `left ${took} ms after the kill (node timeout 2 s, heartbeat 0.5 s)`);
      assert.deepEqual(clients((await presenceOf(nodes[2]!.url, channel)).body), ["watcher"]);
      watcher.close();
    } finally {
      await Promise.all(nodes.map((n) => n.kill()));
      await broker.clean();
    }
  });
}
