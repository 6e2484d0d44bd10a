/**
 * Presence through Ladder's own client, once per rung: `subscribe(channel, { presence: true })` keeps the
 * member list (`sub.presence()`) and reports joins and leaves; the list stays right across a cut and a
 * forced rung change (re-read, not trusted), with no leave and join for members who stayed.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { createClient, type ClientOptions, type LadderClient, type TransportName, type WebSocketConstructor } from "../src/client/index.js";
import type { RunningServer } from "../src/index.js";
import { startProxy, type Proxy } from "./helpers/proxy.js";
import { sleep, startHub } from "./helpers/server.js";

let hub: RunningServer;
let proxy: Proxy;
before(async () => {
  hub = await startHub({ presence: { channels: ["room.*"], leaveDelayMs: 1500 }, heartbeatMs: 200 });
  proxy = await startProxy(hub.url);
});
after(async () => {
  await proxy.close();
  await hub.close();
});

function client(options: ClientOptions): LadderClient {
  return createClient({
    url: proxy.url,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    backoff: { minMs: 50, maxMs: 200 },
    probe: { minMs: 60_000, maxMs: 60_000 },
    pollIntervalMs: 100,
    longPollWaitSeconds: 2,
    heartbeatTimeoutMs: 1500,
    openTimeoutMs: 1500,
    presencePollMs: 200,
    ...options,
  });
}

async function until(check: () => boolean, what: string, ms = 6000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

let seq = 0;
const rungs: TransportName[] = ["websocket", "sse", "long-poll", "poll"];

for (const rung of rungs) {
  describe(`presence in the client over ${rung}`, () => {
    test("the list, joins and leaves; a cut heals with no leave or join for those who stayed", async () => {
      const channel = `room.${rung}.${process.pid}.${++seq}`;
      const watcher = client({ transport: rung, clientId: `watcher${seq}` });
      const stayer = client({ transport: "websocket", clientId: `stayer${seq}` });
      const events: string[] = [];
      try {
        stayer.subscribe(channel);
        const sub = watcher.subscribe(channel, { presence: true });
        sub.on("join", (m) => events.push(`join:${m.client}`));
        sub.on("leave", (m) => events.push(`leave:${m.client}`));
        await until(() => sub.presence().length === 2, "both listed");
        assert.deepEqual(sub.presence().map((m) => m.client).sort(), [`stayer${seq}`, `watcher${seq}`]);

        const visitor = client({ transport: "sse", clientId: `visitor${seq}` });
        visitor.subscribe(channel);
        await until(() => events.includes(`join:visitor${seq}`), "visitor joins");
        visitor.close();
        await until(() => events.includes(`leave:visitor${seq}`), "visitor leaves after the delay");

        const before = events.length;
        proxy.cutAll();
        await until(() => watcher.state === "connected", "watcher back");
        await sleep(600);
        assert.deepEqual(events.slice(before), [], "after the cut: nobody left or joined");
        assert.deepEqual(sub.presence().map((m) => m.client).sort(), [`stayer${seq}`, `watcher${seq}`]);
      } finally {
        watcher.close();
        stayer.close();
      }
    });
  });
}

test("a rung change (WebSocket refused → SSE) keeps the list right: re-read, and the difference reported once", async () => {
  const channel = `room.switch.${process.pid}`;
  const watcher = client({ clientId: "switcher" });
  const other = client({ transport: "sse", clientId: "other" });
  const late = client({ transport: "sse", clientId: "late" });
  const events: string[] = [];
  try {
    const sub = watcher.subscribe(channel, { presence: true });
    sub.on("join", (m) => events.push(`join:${m.client}`));
    sub.on("leave", (m) => events.push(`leave:${m.client}`));
    other.subscribe(channel);
    await until(() => sub.presence().length === 2 && watcher.transport === "websocket", "on websocket with both");
    proxy.rules.refuseUpgrades = true;
    proxy.cutAll();
    late.subscribe(channel);
    await until(() => watcher.transport === "sse" && watcher.state === "connected", "stepped down to SSE", 10_000);
    await until(() => sub.presence().some((m) => m.client === "late"), "late listed after the change");
    assert.deepEqual(events.filter((e) => e.startsWith("leave:")), [], "no leave for those who stayed");
    assert.deepEqual(events.filter((e) => e.startsWith("join:")).sort(), ["join:late", "join:other", "join:switcher"], "each joined once");
  } finally {
    late.close();
    proxy.rules.refuseUpgrades = false;
    watcher.close();
    other.close();
  }
});
