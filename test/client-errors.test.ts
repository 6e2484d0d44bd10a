/** The client rejects a refused publish with a typed LadderError (code, message, retryAfter), over HTTP and WebSocket. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocket } from "ws";
import { createClient, LadderError, type LadderClient, type TransportName, type WebSocketConstructor } from "../src/client/index.js";
import { sleep, startHub } from "./helpers/server.js";

function client(url: string, transports: TransportName[]): LadderClient {
  return createClient({ url, transport: transports, WebSocket: WebSocket as unknown as WebSocketConstructor });
}

async function rejection(promise: Promise<unknown>): Promise<LadderError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof LadderError, `a LadderError, got ${String(error)}`);
    return error;
  }
  throw new Error("the publish was accepted");
}

test("over HTTP: a rate-limited publish rejects with code rate_limited and the Retry-After as retryAfter", async () => {
  const running = await startHub({ limits: { publishPerSecond: 1, publishBurst: 1 } });
  const c = client(running.url, ["poll"]);
  try {
    await c.publish("e", 1);
    const error = await rejection(c.publish("e", 2));
    assert.equal(error.code, "rate_limited");
    assert.equal(error.status, 429);
    assert.match(error.message, /publishing too fast/);
    assert.ok(error.retryAfter !== undefined && error.retryAfter >= 1, `retryAfter ${String(error.retryAfter)}`);
    const bad = await rejection(c.publish("not a channel!", 3));
    assert.equal(bad.code, "bad_channel");
    assert.equal(bad.retryAfter, undefined);
  } finally {
    c.close();
    await running.close();
  }
});

test("over WebSocket: an error frame rejects the publish with the frame's code and message", async () => {
  const running = await startHub();
  const c = client(running.url, ["websocket"]);
  try {
    c.subscribe("e");
    for (let i = 0; i < 200 && !(c.state === "connected" && c.transport === "websocket"); i++) await sleep(10);
    assert.equal(c.transport, "websocket");
    const error = await rejection(c.publish("not a channel!", 1));
    assert.equal(error.code, "bad_channel");
    assert.match(error.message, /room must be/);
  } finally {
    c.close();
    await running.close();
  }
});

test("a polling rung with nothing to poll proves the path by the one reachability probe: a proxy's 502 ends it", async () => {
  const { createServer } = await import("node:http");
  const proxy = createServer((_req, res) => res.writeHead(502).end("bad gateway"));
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const { port } = proxy.address() as { port: number };
  const c = createClient({ url: `http://127.0.0.1:${port}`, transport: "poll", backoff: { minMs: 5000, maxMs: 5000 } });
  try {
    const reasons: string[] = [];
    c.on("error", ({ reason }) => reasons.push(reason));
    c.connect();
    for (let i = 0; i < 200 && reasons.length === 0; i++) await sleep(10);
    assert.deepEqual(reasons, ["the hub did not answer"]);
    assert.equal(c.state, "disconnected");
  } finally {
    c.close();
    proxy.close();
  }
});
