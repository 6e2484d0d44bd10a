/** A library user mounts the hub in their own node:http server, with their own routes beside it. */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { createHub, LadderError } from "../src/index.js";
import { openSse, openWs, publish } from "./helpers/server.js";

test("createHub: request and upgrade handlers in a user's server, middleware-style next, hub.publish", async () => {
  const hub = createHub({ heartbeatMs: 1000 });
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    hub.handleRequest(req, res, () => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("the app's own route");
    });
  });
  server.on("upgrade", (req, socket, head) => {
    if (!hub.handleUpgrade(req, socket, head)) socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    assert.equal(await (await fetch(`${base}/app`)).text(), "the app's own route");
    const sse = await openSse(`${base}/api/stream?channel=orders`);
    const ws = await openWs(base);
    ws.send({ type: "join", room: "orders" });
    await ws.next((f) => f.type === "joined");
    await sse.waitForText("id: ");
    const fromServer = await hub.publish("orders", { total: 3 });
    const fromHttp = await publish(base, { total: 4 }, "orders");
    const events = await sse.waitFor(2);
    assert.deepEqual(events.map((e) => [e.id, JSON.parse(e.data)]), [[fromServer.id, { total: 3 }], [fromHttp.id, { total: 4 }]]);
    assert.equal((await ws.next((f) => f.type === "message")).id, fromServer.id);
    assert.equal((await ws.next((f) => f.type === "message")).id, fromHttp.id);
    sse.close();
    await ws.close();
    await assert.rejects(hub.publish("bad channel", 1), (e: unknown) => e instanceof LadderError && e.code === "bad_channel");
    await assert.rejects(hub.publish("ok", undefined), (e: unknown) => e instanceof LadderError && e.code === "bad_request");
  } finally {
    await hub.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

test("paths are configurable", async () => {
  const hub = createHub({ paths: { messages: "/rt/msg", stream: "/rt/sse", websocket: "/rt/ws" } });
  const server = createServer();
  hub.attach(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const res = await fetch(`${base}/rt/msg`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"data":1}' });
    assert.equal(res.status, 201);
    assert.equal((await fetch(`${base}/api/messages`)).status, 404);
    const ws = await openWs(base, "/rt/ws");
    ws.send({ type: "ping" });
    assert.equal((await ws.next((f) => f.type === "pong")).type, "pong");
    await ws.close();
  } finally {
    await hub.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});
