/**
 * An SSE stream of a hub started with serve() takes its HTTP/1.1 socket from node:http once subscribed
 * (src/server/edge/take-socket.ts), so an idle stream no longer keeps node:http's request, response and
 * parser. These tests check that it lets them go, and that nothing on the wire changed: the same chunked
 * body (events, heartbeats, the last chunk on shutdown), over plain HTTP/1.1 and TLS, and that the
 * client's close, a slow client and a pipelined request end the stream's resources as node:http did.
 */
import assert from "node:assert/strict";
import type { Server as HttpServer, ServerResponse } from "node:http";
import { after, describe, test } from "node:test";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createHub, serve, type RunningServer } from "../src/index.js";
import { heapAfterGc, settle } from "./helpers/heap.js";
import { publishOnce, rawSse, rawSseIds, type Raw } from "./helpers/raw.js";

/** The chunks of a chunked body (after the head), and whatever follows the last one. */
function chunks(text: string): { body: string[]; ended: boolean } {
  let rest = text.slice(text.indexOf("\r\n\r\n") + 4);
  const body: string[] = [];
  for (;;) {
    const line = rest.indexOf("\r\n");
    if (line < 0) return { body, ended: false };
    const size = Number.parseInt(rest.slice(0, line), 16);
    assert.ok(Number.isFinite(size), `bad chunk size line in ${JSON.stringify(rest.slice(0, 40))}`);
    if (size === 0) {
      assert.equal(rest.slice(line), "\r\n\r\n", "the last chunk ends the body and nothing follows");
      return { body, ended: true };
    }
    const data = Buffer.from(rest.slice(line + 2), "latin1");
    if (data.length < size + 2) return { body, ended: false };
    assert.equal(data.subarray(size, size + 2).toString("latin1"), "\r\n", "each chunk ends with CRLF");
    body.push(data.subarray(0, size).toString("utf8"));
    rest = data.subarray(size + 2).toString("latin1");
  }
}

/** Responses of `server`'s requests, held weakly: alive only while something else keeps them. */
function watchResponses(running: RunningServer): WeakRef<ServerResponse>[] {
  const seen: WeakRef<ServerResponse>[] = [];
  (running.server as HttpServer).prependListener("request", (_req, res) => seen.push(new WeakRef(res)));
  return seen;
}

for (const tls of [false, true]) {
  describe(`SSE over ${tls ? "HTTP/1.1 + TLS" : "HTTP/1.1"}: a stream owns its socket once subscribed`, { concurrency: 1 }, () => {
    let running: RunningServer;
    const open: Raw[] = [];
    after(async () => {
      for (const raw of open) raw.socket.destroy();
      await running?.close();
    });

    test("the same chunked body: retry, ready, messages, heartbeats; the client's FIN releases the stream", async () => {
      running = await serve({ port: 0, host: "127.0.0.1", heartbeatMs: 50, ...(tls ? { tls: "self-signed" as const, http2: false } : {}) });
      const raw = await rawSse(running.url, "own");
      open.push(raw);
      const ids = [await publishOnce(running.url, "own", { n: 1 }), await publishOnce(running.url, "own", { n: 2 })];
      assert.ok(await settle(() => rawSseIds(raw).length === 2 && chunks(raw.text()).body.filter((chunk) => chunk === ":\n\n").length >= 2, 5000), raw.text());
      const head = raw.text().slice(0, raw.text().indexOf("\r\n\r\n"));
      assert.match(head, /^HTTP\/1\.1 200 /);
      assert.match(head, /\r\ntransfer-encoding: chunked/i);
      const { body, ended } = chunks(raw.text());
      assert.equal(ended, false);
      assert.match(body[0]!, /^retry: \d+\n\n$/);
      assert.ok(body.some((chunk) => chunk.startsWith("event: ready\n")), "ready event");
      // One event per chunk, each a whole event: what res.write() put on the wire before.
      for (const chunk of body) assert.match(chunk, /\n\n$/);
      assert.deepEqual(rawSseIds(raw), ids);
      assert.equal(running.hub.stats().byKind.sse, 1);
      raw.socket.end();
      assert.ok(await settle(() => running.hub.stats().byKind.sse === 0, 5000), "the stream is released when the client closes");
      await raw.closed;
    });

    test("shutdown ends every stream with the last chunk, then closes its connection", async () => {
      const raws = await Promise.all([rawSse(running.url, "own"), rawSse(running.url, "other")]);
      open.push(...raws);
      const closing = running.close();
      await Promise.all(raws.map((raw) => raw.closed));
      await closing;
      for (const raw of raws) assert.equal(chunks(raw.text()).ended, true, raw.text());
    });
  });
}

describe("SSE socket taken from node:http: what an idle stream keeps", { concurrency: 1 }, () => {
  const open: Raw[] = [];
  const servers: RunningServer[] = [];
  after(async () => {
    for (const raw of open) raw.socket.destroy();
    await Promise.all(servers.map((server) => server.close()));
  });

  test("node:http's response of every live stream is let go (collectable while the streams go on)", async () => {
    const running = await serve({ port: 0, host: "127.0.0.1" });
    servers.push(running);
    const responses = watchResponses(running);
    const raws = await Promise.all(Array.from({ length: 20 }, () => rawSse(running.url, "idle")));
    open.push(...raws);
    await heapAfterGc();
    assert.equal(responses.length, 20);
    const alive = responses.filter((ref) => ref.deref() !== undefined).length;
    assert.equal(alive, 0, `${alive} of 20 idle streams still keep their ServerResponse`);
    // And they are still streams: a message reaches every one.
    const id = await publishOnce(running.url, "idle", "after");
    assert.ok(await settle(() => raws.every((raw) => rawSseIds(raw).includes(id)), 5000));
  });

  test("a request pipelined behind a stream is not answered (as before) and the stream goes on; its close releases both", async () => {
    const running = await serve({ port: 0, host: "127.0.0.1" });
    servers.push(running);
    const raw = await rawSse(running.url, "piped");
    open.push(raw);
    raw.socket.write("GET /healthz HTTP/1.1\r\nhost: hub\r\n\r\n");
    const id = await publishOnce(running.url, "piped", 1);
    assert.ok(await settle(() => rawSseIds(raw).includes(id), 5000));
    assert.doesNotMatch(raw.text().slice(raw.text().indexOf("\r\n\r\n")), /HTTP\/1\.1/, "nothing but the stream's body on the wire");
    raw.socket.destroy();
    assert.ok(await settle(() => running.hub.stats().connections === 0, 5000));
  });

  test("a client that stops reading is still dropped as a slow consumer", async () => {
    const running = await serve({ port: 0, host: "127.0.0.1", maxBufferedBytes: 64 * 1024 });
    servers.push(running);
    const raw = await rawSse(running.url, "slow");
    open.push(raw);
    raw.socket.pause();
    const big = "x".repeat(60_000);
    for (let i = 0; i < 200 && running.hub.stats().connections > 0; i++) await publishOnce(running.url, "slow", big);
    assert.ok(await settle(() => running.hub.stats().connections === 0, 10_000), "the slow stream was dropped");
    raw.socket.destroy();
  });

  test("a hub mounted on an app's server keeps node:http's objects (the app's middleware may watch them)", async () => {
    const hub = createHub();
    const server = createServer(hub.handleRequest);
    const responses: WeakRef<ServerResponse>[] = [];
    server.prependListener("request", (_req, res) => responses.push(new WeakRef(res)));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const raw = await rawSse(url, "mounted");
      open.push(raw);
      await heapAfterGc();
      assert.equal(responses.filter((ref) => ref.deref() !== undefined).length, 1);
      raw.socket.destroy();
      assert.ok(await settle(() => hub.stats().connections === 0, 5000));
    } finally {
      await hub.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
