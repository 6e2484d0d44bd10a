/** createClient as a Node user first calls it: errors that say what to pass, and `ws` accepted as it is. */
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { createClient, type ClientOptions } from "../src/client/index.js";

/** Runs `body` as on Node 20, which has no global WebSocket (Node 22 has one). */
function withoutGlobalWebSocket(body: () => void): void {
  const g = globalThis as { WebSocket?: unknown };
  const saved = g.WebSocket;
  delete g.WebSocket;
  try {
    body();
  } finally {
    if (saved !== undefined) g.WebSocket = saved;
  }
}

test('transport "websocket" without a WebSocket class says to pass the ws package', () => {
  withoutGlobalWebSocket(() => {
    assert.throws(() => createClient({ url: "http://127.0.0.1:8080", transport: "websocket" }), (e: unknown) => e instanceof TypeError && /pass \{ WebSocket \} from the ws package/.test(e.message));
    // auto has other rungs to climb: no error, it starts lower.
    createClient({ url: "http://127.0.0.1:8080", transport: "auto" }).close();
  });
});

test("the ws package's class is a WebSocket option as it is (type-checked under strict, no cast)", () => {
  const options: ClientOptions = { url: "http://127.0.0.1:8080", WebSocket, transport: "websocket" };
  const client = createClient(options);
  assert.equal(client.options.WebSocket, WebSocket);
  client.close();
});

test("a url without a scheme is refused with what is expected", () => {
  for (const url of ["127.0.0.1:8080", "localhost:8080", "example.com/hub", "/relative"]) {
    assert.throws(() => createClient({ url }), (e: unknown) => e instanceof TypeError && e.message.includes("url must start with http:// or https://") && e.message.includes(JSON.stringify(url)), url);
  }
  createClient({ url: "https://app.example" }).close();
});
