/**
 * Clients that misbehave below the protocol: oversized request heads, slow-loris heads and bodies,
 * connections that never speak (also over TLS and HTTP/2), and a flood of connections from one address.
 * In every case the hub stays up, the clients that behave keep receiving every message in order, and
 * once the flood is gone the hub's connections, per-address slots and heap are back where they were.
 *
 * The flood comes from 127.0.0.2 (all of 127/8 is loopback on Linux) so that the well-behaved clients on
 * 127.0.0.1 are a different address, as they would be in production.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { connect as h2connect, constants as h2constants } from "node:http2";
import net from "node:net";
import { after, before, describe, test, type TestContext } from "node:test";
import { WebSocket } from "ws";
import type { RunningServer, ServeOptions } from "../src/index.js";
import { heapAfterGc, mb, settle } from "./helpers/heap.js";
import { publishOnce, rawHttp1, rawSse, rawSseIds, type Raw } from "./helpers/raw.js";
import { joinedWs, openSse, startHub, type SseStream } from "./helpers/server.js";

const LIMITS = { maxHeaderBytes: 4096, headersTimeoutMs: 600, requestTimeoutMs: 1200 } as const;
/** node checks its request timers on a period (≤ 1 s here); a loaded CI machine adds its own lateness. */
const LATE_MS = 3000;
const FLOOD_ADDRESS = "127.0.0.2";
const noop = (): void => {};
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes `lines` one every `everyMs` until the socket closes. */
function trickle(socket: net.Socket, first: string, line: string, everyMs: number): void {
  socket.write(first);
  const timer = setInterval(() => socket.write(line), everyMs);
  socket.once("close", () => clearInterval(timer));
}

function assertCutInTime(elapsed: number, limitMs: number, what: string): void {
  assert.ok(elapsed >= limitMs * 0.9, `${what}: closed after ${elapsed} ms, before its ${limitMs} ms limit`);
  assert.ok(elapsed <= limitMs + LATE_MS, `${what}: still open ${elapsed} ms after it began (limit ${limitMs} ms)`);
}

const MODES: ReadonlyArray<{ name: string; options: ServeOptions; h2: boolean }> = [
  { name: "HTTP/1.1", options: {}, h2: false },
  { name: "TLS (HTTP/2 and HTTP/1.1 by ALPN)", options: { tls: "self-signed" }, h2: true },
  { name: "TLS with HTTP/1.1 only", options: { tls: "self-signed", http2: false }, h2: false },
  { name: "cleartext h2c beside HTTP/1.1", options: { h2c: true }, h2: true },
];

for (const mode of MODES) {
  describe(`request limits over ${mode.name}`, () => {
    let running: RunningServer;
    let bystander: { ws: WebSocket; ids: string[] };
    let sse: Raw;
    const channel = "bystanders";

    before(async () => {
      running = await startHub({ ...mode.options, ...LIMITS });
      bystander = await joinedWs(running.url, channel);
      sse = await rawSse(running.url, channel);
    });

    after(async () => {
      bystander.ws.terminate();
      sse.socket.destroy();
      await running.close();
    });

    test("an oversized request head gets 431 and the connection is closed", async () => {
      const raw = await rawHttp1(running.url);
      raw.socket.write(`GET /api/messages?since=0 HTTP/1.1\r\nhost: hub\r\nx-big: ${"a".repeat(LIMITS.maxHeaderBytes * 2)}\r\n\r\n`);
      await raw.closed;
      assert.match(raw.text(), /^HTTP\/1\.1 431 /);
      assert.match(raw.text(), /"code":"headers_too_large"/);
      // Just under the limit is fine.
      const ok = await rawHttp1(running.url);
      ok.socket.write(`GET /api/messages?since=0 HTTP/1.1\r\nhost: hub\r\nconnection: close\r\nx-big: ${"a".repeat(LIMITS.maxHeaderBytes - 200)}\r\n\r\n`);
      await ok.closed;
      assert.match(ok.text(), /^HTTP\/1\.1 200 /);
    });

    test("a head sent a line at a time (slow-loris) is cut with 408 at headersTimeout", async () => {
      const raw = await rawHttp1(running.url);
      trickle(raw.socket, "GET /api/messages?since=0 HTTP/1.1\r\nhost: hub\r\n", "x-slow: 1\r\n", 100);
      assertCutInTime(await raw.closed, LIMITS.headersTimeoutMs, "slow head");
      assert.match(raw.text(), /^HTTP\/1\.1 408 /);
      assert.match(raw.text(), /"code":"request_timeout"/);
    });

    test("a connection that sends nothing is closed at headersTimeout", async () => {
      const raw = await rawHttp1(running.url);
      assertCutInTime(await raw.closed, LIMITS.headersTimeoutMs, "silent connection");
    });

    test("a publish body sent a byte at a time is cut with 408 at requestTimeout", async () => {
      const raw = await rawHttp1(running.url);
      const head = "POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{";
      trickle(raw.socket, head, " ", 100);
      assertCutInTime(await raw.closed, LIMITS.requestTimeoutMs, "slow body");
      assert.match(raw.text(), /^HTTP\/1\.1 408 /);
    });

    if (mode.options.tls) {
      test("a TLS handshake that never finishes is cut at headersTimeout", async () => {
        const raw = await rawHttp1(running.url, { handshake: false });
        raw.socket.write(Buffer.from([0x16, 0x03, 0x01])); // the start of a ClientHello, and no more
        assertCutInTime(await raw.closed, LIMITS.headersTimeoutMs, "half handshake");
      });
    }

    if (mode.h2) {
      test("an HTTP/2 connection that opens no stream is closed at headersTimeout", async () => {
        const session = h2connect(running.url, { rejectUnauthorized: false });
        session.on("error", noop);
        const openedAt = await new Promise<number>((resolve) => session.once("connect", () => resolve(Date.now())));
        const elapsed = await new Promise<number>((resolve) => session.once("close", () => resolve(Date.now() - openedAt)));
        assertCutInTime(elapsed, LIMITS.headersTimeoutMs, "idle HTTP/2 connection");
      });

      test("an HTTP/2 header list over the limit is refused; the connection goes on", async () => {
        const session = h2connect(running.url, { rejectUnauthorized: false });
        session.on("error", noop);
        // The limit is announced in SETTINGS; a header list sent before the client has them is the client's risk.
        const announced = await new Promise<number | undefined>((resolve) => session.once("remoteSettings", (s) => resolve(s.maxHeaderListSize)));
        assert.equal(announced, LIMITS.maxHeaderBytes);
        const request = (headers: Record<string, string>): Promise<{ status?: number; code?: string; rst?: number }> =>
          new Promise((resolve) => {
            const stream = session.request({ ":path": "/api/messages?since=0", ...headers });
            stream.on("response", (h) => resolve({ status: Number(h[":status"]) }));
            stream.on("error", (error: NodeJS.ErrnoException) => resolve({ code: error.code, rst: stream.rstCode }));
            stream.resume();
          });
        const big = await request({ "x-big": "a".repeat(LIMITS.maxHeaderBytes * 2) });
        assert.equal(big.status, undefined, "no answer to an oversized header list");
        assert.equal(big.code, "ERR_HTTP2_STREAM_ERROR");
        assert.equal(big.rst, h2constants.NGHTTP2_ENHANCE_YOUR_CALM);
        assert.deepEqual(await request({}), { status: 200 });
        session.close();
      });
    }

    test("meanwhile an SSE stream and a WebSocket outlive both timeouts and receive every message in order", async () => {
      // Every earlier test took at least a timeout; this makes sure both have passed for the bystanders too.
      await sleep(LIMITS.requestTimeoutMs + 200);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await publishOnce(running.url, channel, { i }));
      await settle(() => bystander.ids.length >= 5 && ids.every((id) => sse.text().includes(`id: ${id}\n`)), 5000);
      assert.deepEqual(bystander.ids, ids);
      assert.deepEqual(rawSseIds(sse), ids);
      assert.equal(sse.socket.destroyed, false, "the SSE stream is still open");
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// A flood of connections from one address.

/** Raw TCP connections from the flood address: resolves once each has connected and either stayed or been closed. */
async function floodSockets(port: number, count: number): Promise<{ open: net.Socket[]; refused: number }> {
  const sockets = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Socket | null>((resolve) => {
          const socket = net.connect({ host: "127.0.0.1", port, localAddress: FLOOD_ADDRESS });
          socket.on("error", noop);
          socket.once("close", () => resolve(null));
          // A refused one is closed by the server right after the accept; one still open after a beat was let in.
          socket.once("connect", () => setTimeout(() => resolve(socket.destroyed ? null : socket), 300));
        }),
    ),
  );
  const open = sockets.filter((s): s is net.Socket => s !== null && !s.destroyed);
  return { open, refused: count - open.length };
}

/**
 * An SSE request on a connection of its own, from `localAddress` or claiming a forwarded client: its
 * status (with the refusal's body and Retry-After), and the request to end it.
 */
function sseRequest(
  url: string,
  channel: string,
  from: { localAddress?: string; forwardedFor?: string | null } = {},
): Promise<{ status: number; retryAfter?: string; body: string; req: http.ClientRequest }> {
  const headers: Record<string, string> = { accept: "text/event-stream" };
  if (typeof from.forwardedFor === "string") headers["x-forwarded-for"] = from.forwardedFor;
  const local = from.localAddress ? { localAddress: from.localAddress } : {};
  return new Promise((resolve, reject) => {
    const req = http.get(`${url}/api/stream?channel=${channel}`, { agent: false, headers, ...local }, (res) => {
      if (res.statusCode === 200) return resolve({ status: 200, body: "", req });
      let body = "";
      res.on("data", (chunk: Buffer) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, req, ...(res.headers["retry-after"] ? { retryAfter: String(res.headers["retry-after"]) } : {}) }));
    });
    req.on("error", reject);
  });
}

function floodWs(url: string): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/ws`, { localAddress: FLOOD_ADDRESS });
    ws.on("error", noop);
    ws.once("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.once("open", () => {
      resolve(101);
      ws.terminate();
    });
  });
}

describe("a flood of connections from one address", () => {
  const SOCKETS_PER_IP = 40;
  const CONNECTIONS_PER_IP = 16;
  const RAW = 600;
  const STREAMS = 30;
  const ROUNDS = 3;
  const HEAP_BOUND = 3 * 1024 * 1024;
  const channel = "steady";
  let running: RunningServer;
  let sse: SseStream;
  let ws: { ws: WebSocket; ids: string[] };
  const published: string[] = [];

  before(async () => {
    running = await startHub({ limits: { socketsPerIp: SOCKETS_PER_IP, connectionsPerIp: CONNECTIONS_PER_IP, publishPerSecond: 1000, publishBurst: 1000 } });
    sse = await openSse(`${running.url}/api/stream?channel=${channel}`);
    ws = await joinedWs(running.url, channel);
  });

  after(async () => {
    sse.close();
    ws.ws.terminate();
    await running.close();
  });

  const serverConnections = (): Promise<number> =>
    new Promise((resolve, reject) => running.server.getConnections((error, count) => (error ? reject(error) : resolve(count))));

  /** One round: raw sockets past socketsPerIp, then streams and upgrades past connectionsPerIp, publishing throughout. */
  async function round(t: TestContext | null): Promise<void> {
    const raw = floodSockets(Number(new URL(running.url).port), RAW);
    published.push(await publishOnce(running.url, channel, { during: "raw flood" }));
    const { open, refused } = await raw;
    assert.equal(open.length, SOCKETS_PER_IP, `${RAW} sockets from one address: ${open.length} let in (limit ${SOCKETS_PER_IP})`);
    assert.equal(refused, RAW - SOCKETS_PER_IP);
    for (const socket of open) socket.destroy();
    await settle(async () => (await serverConnections()) === 2, 5000);

    // Fewer than socketsPerIp at once, so every one reaches the hub and the per-address stream limit answers.
    const streams = await Promise.all(Array.from({ length: STREAMS }, () => sseRequest(running.url, channel, { localAddress: FLOOD_ADDRESS })));
    const accepted = streams.filter((s) => s.status === 200);
    const limited = streams.filter((s) => s.status === 429);
    assert.equal(accepted.length, CONNECTIONS_PER_IP, `streams let in: ${accepted.length}`);
    assert.equal(limited.length, STREAMS - CONNECTIONS_PER_IP);
    for (const answer of limited) {
      assert.equal(answer.retryAfter, "1");
      assert.equal((JSON.parse(answer.body) as { error: { code: string } }).error.code, "too_many_connections");
    }
    assert.deepEqual(await Promise.all([floodWs(running.url), floodWs(running.url)]), [429, 429], "WebSocket upgrades past the limit");
    for (let i = 0; i < 5; i++) published.push(await publishOnce(running.url, channel, { during: "stream flood", i }));
    for (const answer of accepted) answer.req.destroy();
    await settle(() => running.hub.stats().connections === 2, 5000);
    assert.equal(running.hub.stats().connections, 2, "only the two well-behaved subscribers are left");
    // The address's slots are free again: a stream from it is let in.
    const again = await sseRequest(running.url, channel, { localAddress: FLOOD_ADDRESS });
    assert.equal(again.status, 200);
    again.req.destroy();
    await settle(() => running.hub.stats().connections === 2, 5000);
    t?.diagnostic(`round: ${refused} sockets refused, ${limited.length} streams answered 429`);
  }

  test("the limits hold, the other clients receive every message, and memory returns to where it was", { timeout: 90_000 }, async (t) => {
    await round(null); // warm-up: one-time costs (code, buffers, pools) are not growth
    await settle(async () => (await serverConnections()) === 2, 5000);
    const heapBefore = await heapAfterGc();
    for (let i = 0; i < ROUNDS; i++) await round(t);
    await settle(async () => (await serverConnections()) === 2, 5000);
    const heapAfter = await heapAfterGc();
    t.diagnostic(`heap after GC: after warm-up ${mb(heapBefore)}, after ${ROUNDS} rounds ${mb(heapAfter)} (${mb(heapAfter - heapBefore)})`);

    await settle(() => ws.ids.length >= published.length && sse.events.length >= published.length, 5000);
    assert.deepEqual(ws.ids, published, "the WebSocket subscriber got every message, in order, once");
    assert.deepEqual(sse.events.map((e) => e.id), published, "the SSE subscriber got every message, in order, once");
    assert.equal(await serverConnections(), 2, "server sockets: only the two subscribers");
    assert.ok(heapAfter - heapBefore < HEAP_BOUND, `heap grew by ${mb(heapAfter - heapBefore)} (bound ${mb(HEAP_BOUND)})`);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Per-address limits behind a proxy.

describe("per-address limits behind a proxy (trustProxy)", () => {
  test("behind a trusted proxy each forwarded client has its own limit; forged entries left of the proxy's are ignored", async () => {
    const running = await startHub({ trustProxy: ["loopback"], limits: { connectionsPerIp: 2 } });
    const open: http.ClientRequest[] = [];
    try {
      const statuses = [];
      for (const xff of ["198.51.100.7", "198.51.100.7", "198.51.100.7", "198.51.100.8", "203.0.113.9, 198.51.100.7", "198.51.100.7, 198.51.100.8"]) {
        const { status, req } = await sseRequest(running.url, "proxied", { forwardedFor: xff });
        statuses.push(status);
        open.push(req);
      }
      // .7 twice, .7 over its limit, .8 its first, a forged left entry still counts as .7, then .8 again (its second).
      assert.deepEqual(statuses, [200, 200, 429, 200, 429, 200]);
    } finally {
      for (const req of open) req.destroy();
      await running.close();
    }
  });

  test("without trustProxy X-Forwarded-For is ignored: a client cannot forge its way past the limit", async () => {
    const running = await startHub({ limits: { connectionsPerIp: 2 } });
    const open: http.ClientRequest[] = [];
    try {
      const statuses = [];
      for (const xff of ["198.51.100.1", "198.51.100.2", "198.51.100.3", null]) {
        const { status, req } = await sseRequest(running.url, "proxied", { forwardedFor: xff });
        statuses.push(status);
        open.push(req);
      }
      assert.deepEqual(statuses, [200, 200, 429, 429]);
    } finally {
      for (const req of open) req.destroy();
      await running.close();
    }
  });

  test("publish rate buckets follow the forwarded client; a trusted proxy's own sockets are not capped", async () => {
    const running = await startHub({ trustProxy: ["127.0.0.1"], limits: { publishPerSecond: 0.01, publishBurst: 2, socketsPerIp: 4 } });
    try {
      const post = async (xff: string): Promise<number> => {
        const res = await fetch(`${running.url}/api/messages`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-forwarded-for": xff },
          body: JSON.stringify({ channel: "proxied", data: 1 }),
        });
        await res.arrayBuffer();
        return res.status;
      };
      assert.deepEqual([await post("192.0.2.1"), await post("192.0.2.1"), await post("192.0.2.1"), await post("192.0.2.2")], [201, 201, 429, 201]);
      const { open, refused } = await (async () => {
        const sockets = await Promise.all(
          Array.from({ length: 12 }, () => rawHttp1(running.url).then((raw) => raw.socket)),
        );
        await sleep(200);
        return { open: sockets.filter((s) => !s.destroyed), refused: sockets.filter((s) => s.destroyed).length };
      })();
      assert.equal(refused, 0, "the proxy's 12 connections are all let in, past socketsPerIp 4");
      for (const socket of open) socket.destroy();
    } finally {
      await running.close();
    }
  });
});
