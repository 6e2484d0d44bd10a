/**
 * Every endpoint and frame validates size and shape: each bad input gets its documented status and code,
 * the process stays up, and what was already published is still there afterwards.
 */
import assert from "node:assert/strict";
import { request } from "node:http";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import type { RunningServer } from "../src/index.js";
import { openWs, publish, startHub } from "./helpers/server.js";

let hub: RunningServer;
let kept: { id: string };
before(async () => {
  hub = await startHub({ maxMessageBytes: 1024, maxChannelsPerConnection: 3 });
  kept = await publish(hub.url, { keep: true }, "kept");
});
after(async () => {
  await hub.close();
});

interface HttpCase {
  readonly name: string;
  readonly method: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
  readonly status: number;
  readonly code: string;
}

const json = { "content-type": "application/json" };
const cases: HttpCase[] = [
  { name: "malformed JSON body", method: "POST", path: "/api/messages", headers: json, body: "{data:", status: 400, code: "bad_json" },
  { name: "empty body", method: "POST", path: "/api/messages", headers: json, body: "", status: 400, code: "bad_json" },
  { name: "body is an array", method: "POST", path: "/api/messages", headers: json, body: "[1]", status: 400, code: "bad_request" },
  { name: "body is a number", method: "POST", path: "/api/messages", headers: json, body: "5", status: 400, code: "bad_request" },
  { name: "body without data", method: "POST", path: "/api/messages", headers: json, body: '{"channel":"a"}', status: 400, code: "bad_request" },
  { name: "bad channel in body", method: "POST", path: "/api/messages", headers: json, body: '{"channel":"a b","data":1}', status: 400, code: "bad_channel" },
  { name: "channel not a string", method: "POST", path: "/api/messages", headers: json, body: '{"channel":5,"data":1}', status: 400, code: "bad_channel" },
  { name: "no content type", method: "POST", path: "/api/messages", body: '{"data":1}', status: 415, code: "unsupported_media_type" },
  { name: "text/plain", method: "POST", path: "/api/messages", headers: { "content-type": "text/plain" }, body: '{"data":1}', status: 415, code: "unsupported_media_type" },
  { name: "body over the size limit", method: "POST", path: "/api/messages", headers: json, body: JSON.stringify({ data: "x".repeat(2000) }), status: 413, code: "payload_too_large" },
  { name: "bad channel in query", method: "GET", path: "/api/messages?channel=%20", status: 400, code: "bad_channel" },
  { name: "channel too long", method: "GET", path: `/api/messages?channel=${"x".repeat(129)}`, status: 400, code: "bad_channel" },
  { name: "two channels on a poll", method: "GET", path: "/api/messages?channel=a&channel=b", status: 400, code: "bad_channel" },
  { name: "since not an id", method: "GET", path: "/api/messages?since=abc", status: 400, code: "bad_since" },
  { name: "since undefined", method: "GET", path: "/api/messages?since=undefined", status: 400, code: "bad_since" },
  { name: "negative wait", method: "GET", path: "/api/messages?wait=-1", status: 400, code: "bad_wait" },
  { name: "wait not a number", method: "GET", path: "/api/messages?wait=soon", status: 400, code: "bad_wait" },
  { name: "limit zero", method: "GET", path: "/api/messages?limit=0", status: 400, code: "bad_limit" },
  { name: "limit not a number", method: "GET", path: "/api/messages?limit=all", status: 400, code: "bad_limit" },
  { name: "PUT on messages", method: "PUT", path: "/api/messages", status: 405, code: "method_not_allowed" },
  { name: "POST on stream", method: "POST", path: "/api/stream", headers: json, body: "{}", status: 405, code: "method_not_allowed" },
  { name: "unknown path", method: "GET", path: "/nope", status: 404, code: "not_found" },
  { name: "WebSocket path without upgrade", method: "GET", path: "/api/ws", status: 400, code: "bad_request" },
  { name: "stream with a bad channel", method: "GET", path: "/api/stream?channel=a/b", status: 400, code: "bad_channel" },
  { name: "stream with too many channels", method: "GET", path: "/api/stream?channel=a&channel=b&channel=c&channel=d", status: 400, code: "too_many_channels" },
  { name: "stream with a bad Last-Event-ID", method: "GET", path: "/api/stream", headers: { "last-event-id": "nonsense" }, status: 400, code: "bad_since" },
  { name: "stream with a bad since", method: "GET", path: "/api/stream?since=a=b", status: 400, code: "bad_since" },
];

describe("HTTP bad input", () => {
  for (const c of cases) {
    test(`${c.name} → ${c.status} ${c.code}`, async () => {
      const res = await fetch(hub.url + c.path, { method: c.method, headers: c.headers, body: c.body });
      assert.equal(res.status, c.status);
      assert.match(res.headers.get("content-type") ?? "", /application\/json/);
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, c.code);
      assert.ok(body.error.message.length > 0);
      if (c.status === 405) assert.ok(res.headers.get("allow"));
    });
  }

  test("a huge body with a lying Content-Length is cut off at the limit", async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${hub.url}/api/messages`, { method: "POST", headers: { ...json, "transfer-encoding": "chunked" } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on("error", reject);
      for (let i = 0; i < 50; i++) req.write("x".repeat(1000));
      req.end();
    });
    assert.equal(status, 413);
  });

  test("garbage on the socket does not take the process down", async () => {
    await new Promise<void>((resolve) => {
      const socket = connect(Number(new URL(hub.url).port), "127.0.0.1", () => socket.end("\x00\x01GARBAGE\r\n\r\n"));
      socket.on("close", () => resolve());
      socket.on("error", () => resolve());
      socket.resume();
    });
    const res = await fetch(`${hub.url}/healthz`);
    assert.equal(res.status, 200);
  });
});

describe("WebSocket bad frames", () => {
  const frames: Array<{ name: string; frame: string | Buffer; code: string }> = [
    { name: "invalid JSON", frame: "{nope", code: "bad_json" },
    { name: "not an object", frame: "[1,2]", code: "bad_frame" },
    { name: "unknown type", frame: '{"type":"dance"}', code: "bad_frame" },
    { name: "join without room", frame: '{"type":"join"}', code: "bad_channel" },
    { name: "join with bad room", frame: '{"type":"join","room":"a b"}', code: "bad_channel" },
    { name: "join with bad since", frame: '{"type":"join","room":"a","since":"x"}', code: "bad_since" },
    { name: "publish without data", frame: '{"type":"publish","room":"a","ref":1}', code: "bad_frame" },
    { name: "binary frame", frame: Buffer.from([1, 2, 3]), code: "bad_frame" },
    { name: "publish over the size limit", frame: JSON.stringify({ type: "publish", room: "a", data: "y".repeat(1500) }), code: "payload_too_large" },
  ];
  for (const f of frames) {
    test(`${f.name} → error ${f.code}, connection stays usable`, async () => {
      const c = await openWs(hub.url);
      c.ws.send(f.frame, { binary: Buffer.isBuffer(f.frame) });
      const error = await c.next((x) => x.type === "error");
      assert.equal(error.code, f.code);
      assert.equal(typeof error.message, "string");
      c.send({ type: "ping", ref: "still" });
      assert.equal((await c.next((x) => x.type === "pong")).ref, "still");
      await c.close();
    });
  }

  test("the ref of a bad frame is echoed", async () => {
    const c = await openWs(hub.url);
    c.send({ type: "publish", room: "bad room", data: 1, ref: "r1" });
    const error = await c.next((x) => x.type === "error");
    assert.deepEqual([error.code, error.ref], ["bad_channel", "r1"]);
    await c.close();
  });

  test("too many joined rooms → too_many_channels", async () => {
    const c = await openWs(hub.url);
    for (const room of ["r1", "r2", "r3"]) c.send({ type: "join", room });
    for (let i = 0; i < 3; i++) await c.next((x) => x.type === "joined");
    c.send({ type: "join", room: "r4" });
    assert.equal((await c.next((x) => x.type === "error")).code, "too_many_channels");
    await c.close();
  });

  test("a peer that keeps sending bad frames is closed with 1008", async () => {
    const c = await openWs(hub.url);
    const closed = new Promise<number>((resolve) => c.ws.once("close", (code) => resolve(code)));
    for (let i = 0; i < 30; i++) c.ws.send("nope");
    assert.equal(await closed, 1008);
  });

  test("an oversized frame is closed with 1009", async () => {
    const c = await openWs(hub.url);
    const closed = new Promise<number>((resolve) => c.ws.once("close", (code) => resolve(code)));
    c.ws.send("z".repeat(10_000));
    assert.equal(await closed, 1009);
  });

  test("an upgrade on another path is refused with 404", async () => {
    const ws = new WebSocket(hub.url.replace("http", "ws") + "/elsewhere");
    const status = await new Promise<number>((resolve) => {
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode!));
      ws.on("error", () => resolve(-1));
    });
    assert.equal(status, 404);
  });
});

test("after all of it, the process is up and nothing published was lost", async () => {
  const res = await fetch(`${hub.url}/api/messages?channel=kept&since=0`);
  const msgs = (await res.json()) as Array<{ id: string; data: unknown }>;
  assert.deepEqual(msgs.map((m) => m.id), [kept.id]);
  assert.equal(hub.hub.stats().connections, 0);
});
