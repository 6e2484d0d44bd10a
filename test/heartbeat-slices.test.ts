/**
 * The hub's heartbeat tick visits its connections a slice per event-loop turn (hub.ts): with more
 * connections than a slice, every one must still get its comment or ping on every tick.
 */
import assert from "node:assert/strict";
import { get, type IncomingMessage } from "node:http";
import { test } from "node:test";
import { WebSocket } from "ws";
import { sleep, startHub } from "./helpers/server.js";

const STREAMS = 1_100;
const SOCKETS = 100;

test(`a heartbeat tick reaches all of ${STREAMS} SSE streams and ${SOCKETS} WebSockets, past one slice of 500`, async () => {
  const running = await startHub({ heartbeatMs: 300 });
  const responses: IncomingMessage[] = [];
  const sockets: WebSocket[] = [];
  try {
    const commented = new Set<number>();
    await Promise.all(
      Array.from({ length: STREAMS }, (_, i) =>
        new Promise<void>((resolve, reject) => {
          get(`${running.url}/api/stream?channel=beat${i % 50}`, { agent: false }, (res) => {
            responses.push(res);
            res.on("data", (chunk: Buffer) => {
              if (chunk.toString("latin1").includes(":\n\n")) commented.add(i);
            });
            resolve();
          }).once("error", reject);
        }),
      ),
    );
    const pinged = new Set<number>();
    await Promise.all(
      Array.from({ length: SOCKETS }, (_, i) => {
        const ws = new WebSocket(`${running.url.replace("http", "ws")}/api/ws`);
        sockets.push(ws);
        ws.on("ping", () => pinged.add(i));
        return new Promise<void>((resolve, reject) => {
          ws.once("open", resolve);
          ws.once("error", reject);
        });
      }),
    );
    const deadline = Date.now() + 10_000;
    while ((commented.size < STREAMS || pinged.size < SOCKETS) && Date.now() < deadline) await sleep(50);
    assert.equal(commented.size, STREAMS, "every SSE stream got a heartbeat comment");
    assert.equal(pinged.size, SOCKETS, "every WebSocket got a ping");
  } finally {
    for (const res of responses) res.destroy();
    for (const ws of sockets) ws.terminate();
    await running.close();
  }
});
