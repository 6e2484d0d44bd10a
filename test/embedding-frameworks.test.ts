/**
 * The hub inside the frameworks people use, real packages on real sockets: Express 5 and 4 with
 * `express.json()` mounted before the hub (the body is taken from req.body), Fastify through
 * @fastify/middie, the browser bundle served by clientBundle(), and the Node client with `ws`.
 */
import assert from "node:assert/strict";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import middie from "@fastify/middie";
import express5 from "express";
import express4 from "express4";
import Fastify from "fastify";
import WebSocket from "ws";
import { createClient } from "../src/client/index.js";
import { clientBundle, createHub, type Hub } from "../src/index.js";
import { openSse } from "./helpers/server.js";

type Express = typeof express5;

async function listenExpress(express: Express, hub: Hub, order: "parser-first" | "hub-first"): Promise<Server> {
  const app = express();
  if (order === "parser-first") app.use(express.json());
  app.use(hub.handleRequest);
  if (order === "hub-first") app.use(express.json());
  app.use(clientBundle());
  app.post("/app/echo", (req, res) => {
    res.json({ echoed: req.body as unknown });
  });
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  server.on("upgrade", (req, socket, head) => hub.handleUpgrade(req, socket, head) || socket.destroy());
  return server;
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

function base(server: Server): string {
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A publish must be answered promptly: the bug this guards against hung for ever. */
function post(url: string, body: string, contentType = "application/json"): Promise<Response> {
  return fetch(url, { method: "POST", headers: { "content-type": contentType }, body, signal: AbortSignal.timeout(5000) });
}

/** What every embedding must do: publish over HTTP, deliver over SSE and WebSocket, hand out the client bundle. */
async function exercise(url: string, hub: Hub): Promise<void> {
  const sse = await openSse(`${url}/api/stream?channel=orders`);
  const client = createClient({ url, WebSocket, transport: "websocket" });
  try {
    const sub = client.subscribe("orders", { since: "0" });
    const seen: unknown[] = [];
    sub.on("message", (m) => seen.push(m.data));
    await sse.waitForText("event: ready");
    const res = await post(`${url}/api/messages`, JSON.stringify({ channel: "orders", data: { total: 3 } }));
    assert.equal(res.status, 201, await res.clone().text());
    const { id } = (await res.json()) as { id: string };
    const [event] = await sse.waitFor(1);
    assert.equal(event!.id, id);
    assert.deepEqual(JSON.parse(event!.data), { total: 3 });
    await client.publish("orders", { total: 4 });
    await waitUntil(() => seen.length === 2);
    assert.deepEqual(seen, [{ total: 3 }, { total: 4 }]);
    assert.equal(client.transport, "websocket");
    // Bad input is still refused with the hub's own codes when a parser read the body.
    const bad = await post(`${url}/api/messages`, JSON.stringify({ channel: "no spaces", data: 1 }));
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, "bad_channel");
    const big = await post(`${url}/api/messages`, JSON.stringify({ data: "x".repeat(hub.options.maxMessageBytes + 10) }));
    assert.equal(big.status, 413);
    const bundle = await fetch(`${url}/ladder-client.js`);
    assert.equal(bundle.status, 200);
    assert.match(bundle.headers.get("content-type") ?? "", /javascript/);
    assert.match(await bundle.text(), /createClient/);
  } finally {
    sse.close();
    client.close();
  }
}

async function waitUntil(done: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

for (const [name, express] of [
  ["Express 5", express5],
  ["Express 4", express4 as unknown as Express],
] as const) {
  for (const order of ["parser-first", "hub-first"] as const) {
    test(`${name}: app.use(hub.handleRequest) with express.json() ${order === "parser-first" ? "before" : "after"} it`, async () => {
      const hub = createHub({ heartbeatMs: 1000, maxMessageBytes: 4096 });
      const server = await listenExpress(express, hub, order);
      try {
        await exercise(base(server), hub);
        // The app's own routes still get their parsed bodies.
        const echo = await post(`${base(server)}/app/echo`, '{"a":1}');
        assert.deepEqual(await echo.json(), { echoed: { a: 1 } });
      } finally {
        await hub.close();
        await closeServer(server);
      }
    });
  }
}

test("Express: a middleware that drained the body without setting req.body gets a prompt 500 that says so, not a hang", async () => {
  const hub = createHub();
  const app = express5();
  app.use((req, _res, next) => {
    req.resume();
    req.once("end", () => next());
  });
  app.use(hub.handleRequest);
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  try {
    const res = await post(`${base(server)}/api/messages`, '{"data":1}');
    assert.equal(res.status, 500);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /mount the hub before body parsers/);
  } finally {
    await hub.close();
    await closeServer(server);
  }
});

test("Fastify 5 with @fastify/middie: app.use(hub.handleRequest) beside Fastify routes", async () => {
  const hub = createHub({ heartbeatMs: 1000, maxMessageBytes: 4096 });
  const app = Fastify();
  await app.register(middie);
  app.use(hub.handleRequest);
  app.use(clientBundle());
  app.post("/app/echo", async (request) => ({ echoed: request.body }));
  app.server.on("upgrade", (req, socket, head) => hub.handleUpgrade(req, socket, head) || socket.destroy());
  await app.listen({ port: 0, host: "127.0.0.1" });
  try {
    await exercise(base(app.server), hub);
    const echo = await post(`${base(app.server)}/app/echo`, '{"a":1}');
    assert.deepEqual(await echo.json(), { echoed: { a: 1 } });
  } finally {
    await hub.close();
    app.server.closeAllConnections();
    await app.close();
  }
});
