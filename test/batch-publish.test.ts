/**
 * Batch publish over HTTP and WebSocket: each message of a batch is acknowledged with its id or refused
 * with its own error; the good ones are published exactly once, in the batch's order; a batch over the
 * bounds is refused whole with its documented code, and nothing of it is published.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { RunningServer, ServeOptions } from "../src/index.js";
import { openWs, startHub } from "./helpers/server.js";

const RULES: ServeOptions["auth"] = {
  rules: [
    { match: "public.*", subscribe: "anyone", publish: "anyone" },
    { match: "secret.*", subscribe: "anyone", publish: "nobody" },
  ],
};

async function post(base: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}/api/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function history(base: string, channel: string): Promise<Array<{ id: string; data: unknown }>> {
  const res = await fetch(`${base}/api/messages?channel=${channel}&since=0`);
  assert.equal(res.status, 200);
  return (await res.json()) as Array<{ id: string; data: unknown }>;
}

type Result = { id?: string; channel?: string; room?: string; error?: { code: string; message: string } };

function codes(results: Result[]): Array<string> {
  return results.map((r) => (r.error ? r.error.code : "ok"));
}

/** A batch with good messages on two channels between bad ones of every per-message kind. */
function mixedBatch(key: "channel" | "room", big: string): unknown[] {
  return [
    { [key]: "public.a", data: 1 },
    { [key]: "bad channel!", data: "x" },
    { [key]: "public.b", data: 2 },
    { [key]: "public.a", data: big },
    { [key]: "secret.x", data: "no" },
    { [key]: "public.a" },
    "not an object",
    { [key]: "public.a", data: 3 },
    { [key]: "public.b", data: { four: 4 } },
  ];
}
const MIXED_CODES = ["ok", "bad_channel", "ok", "payload_too_large", "unauthenticated", "bad_request", "bad_request", "ok", "ok"];

describe("batch publish over HTTP", () => {
  let hub: RunningServer;
  before(async () => {
    hub = await startHub({ auth: RULES, maxMessageBytes: 1024, maxBatchMessages: 10, maxBatchBytes: 8192 });
  });
  after(async () => {
    await hub.close();
  });

  test("good messages published once and in order, each bad one refused with its own error", async () => {
    const { status, body } = await post(hub.url, { messages: mixedBatch("channel", "y".repeat(2000)) });
    assert.equal(status, 200);
    const results = body.results as Result[];
    assert.deepEqual(codes(results), MIXED_CODES);
    for (const r of results) if (r.error) assert.ok(r.error.message.length > 0);
    const a = await history(hub.url, "public.a");
    const b = await history(hub.url, "public.b");
    assert.deepEqual(a.map((m) => m.data), [1, 3]);
    assert.deepEqual(b.map((m) => m.data), [2, { four: 4 }]);
    assert.deepEqual([results[0]!.id, results[7]!.id], a.map((m) => m.id));
    assert.deepEqual([results[2]!.id, results[8]!.id], b.map((m) => m.id));
    assert.equal(results[0]!.channel, "public.a");
    assert.equal(results[2]!.channel, "public.b");
  });

  test("a channel on the batch is the default of its messages; without one it is general (which needs a token here)", async () => {
    const { status, body } = await post(hub.url, { channel: "public.c", messages: [{ data: "c1" }, { channel: "public.d", data: "d1" }, { data: "c2" }] });
    assert.equal(status, 200);
    assert.deepEqual(codes(body.results as Result[]), ["ok", "ok", "ok"]);
    assert.deepEqual((await history(hub.url, "public.c")).map((m) => m.data), ["c1", "c2"]);
    const general = await post(hub.url, { messages: [{ data: 1 }] });
    assert.deepEqual(codes(general.body.results as Result[]), ["unauthenticated"]);
  });

  test("bounds: too many messages (413 too_many_messages), too many bytes (413), an empty or missing list (400); nothing published", async () => {
    const many = await post(hub.url, { messages: Array.from({ length: 11 }, (_, i) => ({ channel: "public.bounds", data: i })) });
    assert.equal(many.status, 413);
    assert.equal((many.body.error as { code: string }).code, "too_many_messages");
    const large = await post(hub.url, { messages: Array.from({ length: 9 }, () => ({ channel: "public.bounds", data: "z".repeat(1000) })) });
    assert.equal(large.status, 413);
    assert.equal((large.body.error as { code: string }).code, "payload_too_large");
    for (const messages of [[], "nope", { data: 1 }]) {
      const bad = await post(hub.url, { messages });
      assert.equal(bad.status, 400);
      assert.equal((bad.body.error as { code: string }).code, "bad_request");
    }
    assert.deepEqual(await history(hub.url, "public.bounds"), []);
  });

  test("a single publish larger than maxMessageBytes is still 413, though batch bodies may be larger", async () => {
    const single = await post(hub.url, { channel: "public.single", data: "s".repeat(3000) });
    assert.equal(single.status, 413);
    assert.equal((single.body.error as { code: string }).code, "payload_too_large");
    assert.deepEqual(await history(hub.url, "public.single"), []);
  });
});

describe("batch publish rate limits", () => {
  let hub: RunningServer;
  before(async () => {
    hub = await startHub({ auth: RULES, limits: { publishPerSecond: 0.01, publishBurst: 3 } });
  });
  after(async () => {
    await hub.close();
  });

  test("each message takes from the caller's bucket: those past it are rate_limited, the others published", async () => {
    const { status, body } = await post(hub.url, { channel: "public.rl", messages: [1, 2, 3, 4, 5].map((data) => ({ data })) });
    assert.equal(status, 200);
    assert.deepEqual(codes(body.results as Result[]), ["ok", "ok", "ok", "rate_limited", "rate_limited"]);
    assert.deepEqual((await history(hub.url, "public.rl")).map((m) => m.data), [1, 2, 3]);
  });
});

describe("batch publish over WebSocket", () => {
  let hub: RunningServer;
  before(async () => {
    hub = await startHub({ auth: RULES, maxMessageBytes: 1024, maxBatchMessages: 10 });
  });
  after(async () => {
    await hub.close();
  });

  test("one ack frame with a result per message; subscribers get each good message once, in order", async () => {
    const reader = await openWs(hub.url);
    reader.send({ type: "join", room: "public.a" });
    reader.send({ type: "join", room: "public.b" });
    await reader.next((f) => f.type === "joined" && f.room === "public.a");
    await reader.next((f) => f.type === "joined" && f.room === "public.b");
    const writer = await openWs(hub.url);
    writer.send({ type: "publish", ref: "b1", messages: mixedBatch("room", "y".repeat(1100)) });
    const ack = await writer.next((f) => f.ref === "b1");
    assert.equal(ack.type, "ack");
    const results = ack.results as Result[];
    assert.deepEqual(codes(results), MIXED_CODES);
    assert.equal(results[0]!.room, "public.a");
    const live: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 4; i++) live.push(await reader.next((f) => f.type === "message"));
    assert.deepEqual(live.map((f) => [f.room, f.data]), [["public.a", 1], ["public.b", 2], ["public.a", 3], ["public.b", { four: 4 }]]);
    assert.deepEqual(live.map((f) => f.id), [results[0]!.id, results[2]!.id, results[7]!.id, results[8]!.id]);
    assert.deepEqual((await history(hub.url, "public.a")).map((m) => m.data), [1, 3]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(reader.frames.filter((f) => f.type === "message").length, 4, "no duplicates");
    await reader.close();
    await writer.close();
  });

  test("a room on the frame is the default of its messages; bounds refuse the whole frame with an error frame", async () => {
    const c = await openWs(hub.url);
    c.send({ type: "publish", room: "public.w", ref: 1, messages: [{ data: "w1" }, { room: "public.v", data: "v1" }, { data: "w2" }] });
    const ack = await c.next((f) => f.ref === 1);
    assert.deepEqual(codes(ack.results as Result[]), ["ok", "ok", "ok"]);
    assert.deepEqual((await history(hub.url, "public.w")).map((m) => m.data), ["w1", "w2"]);
    c.send({ type: "publish", room: "public.bounds", ref: 2, messages: Array.from({ length: 11 }, (_, i) => ({ data: i })) });
    const tooMany = await c.next((f) => f.ref === 2);
    assert.deepEqual([tooMany.type, tooMany.code], ["error", "too_many_messages"]);
    c.send({ type: "publish", room: "public.bounds", ref: 3, messages: [] });
    const empty = await c.next((f) => f.ref === 3);
    assert.deepEqual([empty.type, empty.code], ["error", "bad_request"]);
    c.send({ type: "publish", ref: 4, messages: [{ data: "no room" }] });
    const noRoom = await c.next((f) => f.ref === 4);
    assert.deepEqual(codes(noRoom.results as Result[]), ["bad_channel"]);
    assert.deepEqual(await history(hub.url, "public.bounds"), []);
    await c.close();
  });
});
