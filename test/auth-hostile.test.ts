/**
 * Hostile input against a live hub with access control on: random and truncated WebSocket frames (auth
 * frames with garbage tokens among them), random HTTP request lines and headers. Property: the hub stays
 * up, an authorized listener keeps receiving, and nothing published is lost. Bounded to a few seconds.
 */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { WebSocket } from "ws";
import type { Message } from "../src/protocol/index.js";
import type { RunningServer } from "../src/index.js";
import { sleep, startHub } from "./helpers/server.js";

const API_KEY = "hostile-backend-key-0123456789";
let hub: RunningServer;
before(async () => {
  hub = await startHub({
    auth: { rules: [{ match: "watch", subscribe: "anyone", publish: "nobody" }], jwt: { secret: "hostile-secret-hostile-secret-!!" }, apiKeys: [API_KEY] },
    limits: { connectionsPerIp: 10_000, publishPerSecond: 10_000, publishBurst: 10_000, firstFrameTimeoutMs: 1000 },
  });
});
after(async () => {
  await hub.close();
});

const host = (): { host: string; port: number } => {
  const u = new URL(hub.url);
  return { host: u.hostname, port: Number(u.port) };
};

/** Writes raw bytes on a fresh TCP connection, waits briefly for whatever comes back, then cuts it. */
async function raw(bytes: Buffer | string, waitMs = 30): Promise<void> {
  await new Promise<void>((resolve) => {
    const socket = connect(host(), () => {
      socket.write(bytes);
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, waitMs);
    });
    socket.on("data", () => undefined);
    socket.on("error", () => resolve());
  });
}

/** A WebSocket upgrade, then a client frame header that promises more payload than is sent. */
function truncatedFrame(payload: Buffer, cut: number): Buffer {
  const mask = Buffer.from([1, 2, 3, 4]);
  const head = Buffer.from([0x81, 0x80 | Math.min(payload.length + 10, 125)]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  const upgrade =
    "GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  return Buffer.concat([Buffer.from(upgrade), head, mask, body.subarray(0, Math.min(cut, body.length))]);
}

const frameText = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.json({ maxDepth: 3 }),
  fc.record({ type: fc.constantFrom("join", "leave", "publish", "ping", "auth", "nope"), room: fc.string({ maxLength: 20 }), token: fc.string({ maxLength: 60 }), data: fc.anything({ maxDepth: 2 }) }).map((f) => JSON.stringify(f)),
);

const hostile = fc.oneof(
  frameText.map((text) => ({ kind: "ws" as const, text })),
  fc.tuple(fc.uint8Array({ maxLength: 60 }), fc.nat(80)).map(([bytes, cut]) => ({ kind: "truncated" as const, bytes: Buffer.from(bytes), cut })),
  fc
    .tuple(fc.constantFrom("GET", "POST", "OPTIONS", "PUT", "\u0000", ""), fc.constantFrom("/api/messages", "/api/stream", "/api/ws", "/", "*"), fc.string({ maxLength: 80 }), fc.string({ maxLength: 80 }))
    .map(([method, path, query, header]) => ({ kind: "http" as const, line: `${method} ${path}?${query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${header}\r\nCookie: ladder_token=${header}\r\n\r\n` })),
  fc.uint8Array({ maxLength: 200 }).map((bytes) => ({ kind: "bytes" as const, bytes: Buffer.from(bytes) })),
);

test("hostile frames and request lines: the hub stays up, listeners keep receiving, nothing published is lost", async () => {
  const listener = new WebSocket(hub.url.replace(/^http/, "ws") + "/api/ws");
  const received: unknown[] = [];
  listener.on("message", (d) => {
    const f = JSON.parse(String(d)) as { type: string; data?: unknown };
    if (f.type === "message") received.push(f.data);
  });
  await new Promise((resolve) => listener.once("open", resolve));
  listener.send(JSON.stringify({ type: "join", room: "watch" }));
  await new Promise<void>((resolve) => listener.on("message", (d) => String(d).includes('"joined"') && resolve()));

  const attacker = new WebSocket(hub.url.replace(/^http/, "ws") + "/api/ws");
  attacker.on("error", () => undefined);
  await new Promise((resolve) => attacker.once("open", resolve));

  let marker = 0;
  const publishMarker = async (): Promise<void> => {
    const res = await fetch(hub.url + "/api/messages", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
      body: JSON.stringify({ channel: "watch", data: { marker } }),
    });
    assert.equal(res.status, 201);
    marker++;
  };

  await fc.assert(
    fc.asyncProperty(hostile, async (input) => {
      switch (input.kind) {
        case "ws":
          // The attacker may have been closed for too many bad frames; that is the hub defending itself.
          if (attacker.readyState === WebSocket.OPEN) attacker.send(input.text);
          break;
        case "truncated":
          await raw(truncatedFrame(input.bytes, input.cut));
          break;
        case "http":
          await raw(input.line);
          break;
        case "bytes":
          await raw(input.bytes);
          break;
      }
      await publishMarker();
      return true;
    }),
    // A run count, not interruptAfterTimeLimit: an interrupt abandons a run mid-publish and the count would be off by one.
    { numRuns: 80, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31) },
  );

  const deadline = Date.now() + 3000;
  while (received.length < marker && Date.now() < deadline) await sleep(20);
  assert.deepEqual(received, Array.from({ length: marker }, (_, i) => ({ marker: i })), "the listener got every marker, in order");
  const history = (await (await fetch(hub.url + "/api/messages?channel=watch&since=0&limit=1000")).json()) as Message[];
  assert.deepEqual(history.map((m) => m.data), received, "history holds every marker");
  assert.equal((await fetch(hub.url + "/healthz")).status, 200);
  listener.close();
  attacker.terminate();
});
