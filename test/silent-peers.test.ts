/**
 * Peers that go silent: a connection that sends nothing, one byte or half a request line; a keep-alive
 * connection (HTTP/1.1) or an HTTP/2 connection with nothing left in flight; an HTTP/2 request body that
 * never ends; a refused upgrade whose peer neither reads its answer nor closes. Each is closed within its
 * limit plus a second (node and the listener check on a period of a quarter of headersTimeoutMs), over
 * every listener kind, while SSE streams (HTTP/1.1 and HTTP/2), a WebSocket and held polls on the same hub
 * keep receiving.
 */
import assert from "node:assert/strict";
import { constants as h2constants } from "node:http2";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { WebSocket } from "ws";
import type { RunningServer, ServeOptions } from "../src/index.js";
import { RAW_ANSWER_GRACE_MS } from "../src/server/edge/refusal.js";
import { connectH2, type H2Client, type H2Sse } from "./helpers/h2.js";
import { settle } from "./helpers/heap.js";
import { publishOnce, rawHttp1, rawSse, rawSseIds, type Raw } from "./helpers/raw.js";
import { joinedWs, sleep, startHub } from "./helpers/server.js";

const LIMITS = { headersTimeoutMs: 500, requestTimeoutMs: 1000, keepAliveTimeoutMs: 1000 } as const;
/** The bound: closed within the limit plus one second. */
const LATE_MS = 1000;
/**
 * node:http closes an idle keep-alive connection this long after the timeout it announces in
 * `Keep-Alive: timeout=`, so that the client, told the shorter figure, closes first.
 */
const NODE_KEEP_ALIVE_BUFFER_MS = 1000;
const noop = (): void => {};
/** A test waits on closes and answers that may never come when a bound is broken: it fails, not hangs. */
const BOUNDED = { timeout: 15_000 } as const;

function assertCutInTime(elapsed: number, limitMs: number, what: string): void {
  assert.ok(elapsed >= limitMs * 0.9, `${what}: closed after ${elapsed} ms, before its ${limitMs} ms limit`);
  assert.ok(elapsed <= limitMs + LATE_MS, `${what}: still open ${elapsed} ms after it began (limit ${limitMs} ms)`);
}

function connections(running: RunningServer): Promise<number> {
  return new Promise((resolve, reject) => running.server.getConnections((error, count) => (error ? reject(error) : resolve(count))));
}

const MODES: ReadonlyArray<{ name: string; options: ServeOptions; h2: boolean; front: boolean }> = [
  { name: "HTTP/1.1", options: {}, h2: false, front: false },
  { name: "TLS (HTTP/2 and HTTP/1.1 by ALPN)", options: { tls: "self-signed" }, h2: true, front: true },
  { name: "TLS with HTTP/1.1 only", options: { tls: "self-signed", http2: false }, h2: false, front: true },
  { name: "cleartext h2c beside HTTP/1.1", options: { h2c: true }, h2: true, front: true },
];

for (const mode of MODES) {
  describe(`silent peers over ${mode.name}`, () => {
    const channel = "bystanders";
    let running: RunningServer;
    let ws: { ws: WebSocket; ids: string[] };
    let sse: Raw;
    let h2: { client: H2Client; sse: H2Sse } | null = null;

    before(async () => {
      running = await startHub({ ...mode.options, ...LIMITS });
      ws = await joinedWs(running.url, channel);
      sse = await rawSse(running.url, channel);
      if (mode.h2) {
        const client = await connectH2(running.url);
        const stream = client.sse(`/api/stream?channel=${channel}`);
        await stream.waitForText("event: ready");
        h2 = { client, sse: stream };
      }
    });

    after(async () => {
      ws.ws.terminate();
      sse.socket.destroy();
      h2?.client.session.destroy();
      await running.close();
    });

    test("a connection that sends nothing, one byte, or half a request line gets 408 and is closed at headersTimeoutMs", BOUNDED, async () => {
      const probes: ReadonlyArray<readonly [string, string]> = [
        ["nothing", ""],
        ["one byte", "G"],
        ["half a request line", "GET /api/messages?since=0 HT"],
      ];
      await Promise.all(
        probes.map(async ([what, bytes]) => {
          const raw = await rawHttp1(running.url);
          if (bytes) raw.socket.write(bytes);
          assertCutInTime(await raw.closed, LIMITS.headersTimeoutMs, what);
          // On the h2c front a connection that sent nothing has not said which protocol to answer in.
          if (bytes || !mode.options.h2c) assert.match(raw.text(), /^HTTP\/1\.1 408 /, what);
        }),
      );
    });

    if (mode.front) {
      test("on the first-bytes front: nothing, or a prefix that does not yet say the protocol, is cut at headersTimeoutMs from the accept", BOUNDED, async () => {
        const probes: Array<Promise<void>> = [];
        const probe = (what: string, send: (socket: net.Socket) => void): void => {
          probes.push(
            (async () => {
              const raw = await rawHttp1(running.url, { handshake: false });
              send(raw.socket);
              assertCutInTime(await raw.closed, LIMITS.headersTimeoutMs, what);
            })(),
          );
        };
        probe("nothing (no TLS handshake, no preface)", noop);
        if (mode.options.h2c) {
          const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
          probe("half the h2c preface", (socket) => socket.write(preface.subarray(0, 8)));
          // A byte every 150 ms: each one resets an idle timer, so only a deadline from the accept cuts it.
          probe("the h2c preface a byte at a time", (socket) => {
            let sent = 0;
            const timer = setInterval(() => (sent < preface.length ? socket.write(preface.subarray(sent, ++sent)) : clearInterval(timer)), 150);
            socket.once("close", () => clearInterval(timer));
          });
        }
        await Promise.all(probes);
      });
    }

    test("an idle keep-alive connection is closed keepAliveTimeoutMs (+ node's second) after its last answer", BOUNDED, async () => {
      const raw = await rawHttp1(running.url);
      const answered = new Promise<number>((resolve) => raw.socket.once("data", () => resolve(Date.now())));
      raw.socket.write(`GET /api/messages?channel=${channel}&since=0 HTTP/1.1\r\nhost: hub\r\n\r\n`);
      const answeredAt = await answered;
      await raw.closed;
      assert.match(raw.text(), /^HTTP\/1\.1 200 /);
      assert.match(raw.text(), new RegExp(`\r\nkeep-alive: timeout=${LIMITS.keepAliveTimeoutMs / 1000}\r\n`, "i"), "the timeout is announced");
      assertCutInTime(Date.now() - answeredAt, LIMITS.keepAliveTimeoutMs + NODE_KEEP_ALIVE_BUFFER_MS, "idle keep-alive connection");
    });

    test("a long-poll held past keepAliveTimeoutMs and requestTimeoutMs is answered, not cut", BOUNDED, async () => {
      const held = async (get: () => Promise<{ status: number; body: string }>, what: string): Promise<void> => {
        const startedAt = Date.now();
        const { status, body } = await get();
        assert.equal(status, 200, `${what}: ${body}`);
        assert.deepEqual(JSON.parse(body), [], what);
        assert.ok(Date.now() - startedAt >= 1100, `${what}: answered after ${Date.now() - startedAt} ms, before its wait`);
      };
      const path = "/api/messages?channel=held-poll&since=now&wait=1.2";
      const waits = [
        held(async () => {
          const raw = await rawHttp1(running.url);
          raw.socket.write(`GET ${path} HTTP/1.1\r\nhost: hub\r\nconnection: close\r\n\r\n`);
          await raw.closed;
          const [head = "", body = ""] = raw.text().split("\r\n\r\n");
          return { status: Number(head.split(" ")[1]), body };
        }, "HTTP/1.1"),
      ];
      if (mode.h2) {
        const client = await connectH2(running.url);
        waits.push(held(() => client.request(path), "HTTP/2"));
        await Promise.all(waits);
        assert.equal(client.session.closed, false, "the HTTP/2 connection holding the poll was not closed as idle");
        await client.close();
      }
      await Promise.all(waits);
    });

    if (mode.h2) {
      test("an HTTP/2 connection whose streams have all ended gets GOAWAY and is closed at keepAliveTimeoutMs", BOUNDED, async () => {
        const client = await connectH2(running.url);
        const goaway = new Promise<number>((resolve) => client.session.once("goaway", (code) => resolve(code)));
        const closed = new Promise<void>((resolve) => client.session.once("close", () => resolve()));
        assert.equal((await client.request(`/api/messages?channel=${channel}&since=0`)).status, 200);
        const answeredAt = Date.now();
        assert.equal(await goaway, h2constants.NGHTTP2_NO_ERROR, "a graceful GOAWAY");
        await closed;
        assertCutInTime(Date.now() - answeredAt, LIMITS.keepAliveTimeoutMs, "idle HTTP/2 connection");
      });

      test("an HTTP/2 request body that never ends gets 408 at requestTimeoutMs; the connection goes on", BOUNDED, async () => {
        const client = await connectH2(running.url);
        const stream = client.session.request({ ":method": "POST", ":path": "/api/messages", "content-type": "application/json" });
        const openedAt = Date.now();
        stream.on("error", noop);
        let body = "";
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => (body += chunk));
        const status = new Promise<number>((resolve) => stream.once("response", (headers) => resolve(Number(headers[":status"]))));
        const closed = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)));
        stream.write(`{"channel":"${channel}",`);
        assert.equal(await status, 408);
        assert.equal(await closed, h2constants.NGHTTP2_NO_ERROR, "the rest of the body is declined with NO_ERROR");
        assertCutInTime(Date.now() - openedAt, LIMITS.requestTimeoutMs, "unfinished HTTP/2 body");
        assert.equal((JSON.parse(body) as { error: { code: string } }).error.code, "request_timeout");
        assert.equal((await client.request(`/api/messages?channel=${channel}&since=0`)).status, 200, "the connection goes on");
        await client.close();
      });
    }

    test("meanwhile the SSE streams and the WebSocket received every message in order, and are still open", BOUNDED, async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await publishOnce(running.url, channel, { i }));
      const sseIds = (): string[] => rawSseIds(sse);
      const h2Ids = (): string[] => (h2 ? h2.sse.events.filter((e) => e.event !== "ready").map((e) => e.id!) : ids);
      await settle(() => ws.ids.length >= 5 && sseIds().length >= 5 && h2Ids().length >= 5, 5000);
      assert.deepEqual(ws.ids, ids, "WebSocket");
      assert.deepEqual(sseIds(), ids, "SSE over HTTP/1.1");
      assert.deepEqual(h2Ids(), ids, "SSE over HTTP/2");
      assert.equal(ws.ws.readyState, WebSocket.OPEN);
      assert.equal(sse.socket.destroyed, false);
      if (h2) assert.equal(h2.client.session.closed, false, "the HTTP/2 connection holding an SSE stream was not closed as idle");
    });
  });
}

describe("a refused upgrade whose peer neither reads its answer nor closes", () => {
  test("is cut a grace period after the answer, over every HTTP/1.1 listener", BOUNDED, async () => {
    const refusals = [
      "GET /not-the-hub HTTP/1.1\r\nhost: hub\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
      "GET /api/ws HTTP/1.1\r\nhost: hub\r\norigin: https://evil.example\r\nconnection: upgrade\r\nupgrade: websocket\r\n" +
        "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    ];
    const hubs = await Promise.all(MODES.map((mode) => startHub({ ...mode.options, ...LIMITS, allowedOrigins: ["https://app.example"] })));
    const sockets: net.Socket[] = [];
    try {
      await Promise.all(
        hubs.map(async (running, i) => {
          const what = MODES[i]!.name;
          const { hostname, port, protocol } = new URL(running.url);
          const secure = protocol === "https:";
          for (const request of refusals) {
            const socket = secure
              ? tls.connect({ host: hostname, port: Number(port), rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] })
              : net.connect({ host: hostname, port: Number(port) });
            sockets.push(socket);
            socket.on("error", noop);
            await new Promise((resolve) => socket.once(secure ? "secureConnect" : "connect", resolve));
            // Never reads: the answer and the server's FIN stay unread, and no FIN is sent back.
            socket.pause();
            socket.write(request);
          }
          const sentAt = Date.now();
          await sleep(200);
          assert.equal(await connections(running), refusals.length, `${what}: the refused sockets are open at first`);
          const gone = await settle(async () => (await connections(running)) === 0, RAW_ANSWER_GRACE_MS + LATE_MS + 1000);
          assert.ok(gone, `${what}: the server still holds refused sockets ${Date.now() - sentAt} ms after answering`);
          assertCutInTime(Date.now() - sentAt, RAW_ANSWER_GRACE_MS, what);
        }),
      );
    } finally {
      for (const socket of sockets) socket.destroy();
      await Promise.all(hubs.map((running) => running.close()));
    }
  });
});
