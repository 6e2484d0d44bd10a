/**
 * Backfill: a subscriber whose cursor is older than the channel's history gets what the app's backfill hook
 * gives — messages (flagged `backfilled`, before the retained history, no new ids) or a snapshot in the gap
 * signal — on every rung, through the real client; nothing, or a failing app, leaves the plain gap.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { createClient, type LadderClient, type Message, type TransportName, type WebSocketConstructor } from "../src/client/index.js";
import type { Gap } from "../src/protocol/index.js";
import type { RunningServer } from "../src/index.js";
import { eventually, json, startApp, type TestApp } from "./helpers/app.js";
import { publish, startHub } from "./helpers/server.js";

let app: TestApp;
let hub: RunningServer;
before(async () => {
  app = await startApp((call, res) => {
    const channel = String(call.body.channel);
    if (channel.startsWith("msgs.")) return json(res, 200, { messages: [{ filled: 1 }, { filled: 2 }] });
    if (channel.startsWith("snap.")) return json(res, 200, { snapshot: { state: "current", of: channel } });
    if (channel.startsWith("fail.")) return json(res, 500, {});
    return json(res, 200, {});
  });
  hub = await startHub({ historySize: 3, heartbeatMs: 200, hooks: { timeoutMs: 500, backfill: { url: `${app.url}/backfill` } } });
});
after(async () => {
  await hub.close();
  await app.close();
});

let seq = 0;
/** Publishes six messages to a fresh channel (history keeps the last three); returns their ids. */
async function trimmedChannel(prefix: string): Promise<{ channel: string; ids: string[] }> {
  const channel = `${prefix}.${process.pid}x${++seq}`;
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push((await publish(hub.url, i, channel)).id);
  return { channel, ids };
}

function client(transport: TransportName): LadderClient {
  return createClient({ url: hub.url, transport, WebSocket: WebSocket as unknown as WebSocketConstructor, pollIntervalMs: 100, longPollWaitSeconds: 2 });
}

function collect(c: LadderClient, channel: string, since: string): { messages: Message[]; gaps: Gap[] } {
  const out = { messages: [] as Message[], gaps: [] as Gap[] };
  const sub = c.subscribe(channel, { since });
  sub.on("message", (m) => out.messages.push(m));
  sub.on("gap", (g) => out.gaps.push(g));
  return out;
}

for (const rung of ["websocket", "sse", "long-poll", "poll"] as const) {
  describe(`backfill over ${rung}`, () => {
    test("messages: flagged, before the retained history, no gap, the cursor kept", async () => {
      const { channel, ids } = await trimmedChannel("msgs");
      const c = client(rung);
      try {
        const got = collect(c, channel, ids[0]!);
        await eventually(() => got.messages.length === 5, 5000, "two backfilled and three retained");
        assert.deepEqual(got.messages.map((m) => [m.data, m.backfilled === true]), [
          [{ filled: 1 }, true],
          [{ filled: 2 }, true],
          [3, false],
          [4, false],
          [5, false],
        ]);
        // No new ids: a backfilled message carries the cursor it came at, so resuming from it asks again.
        assert.deepEqual(got.messages.slice(0, 2).map((m) => m.id), [ids[0], ids[0]]);
        assert.deepEqual(got.messages.slice(2).map((m) => m.id), ids.slice(3));
        assert.deepEqual(got.gaps, []);
        const asked = app.calls.find((call) => call.body.channel === channel)!;
        assert.deepEqual(asked.body, { channel, reason: "trimmed", since: ids[0], resume: ids[2] });
      } finally {
        c.close();
      }
    });

    test("snapshot: it travels in the gap signal, then the retained history", async () => {
      const { channel, ids } = await trimmedChannel("snap");
      const c = client(rung);
      try {
        const got = collect(c, channel, ids[1]!);
        await eventually(() => got.messages.length === 3 && got.gaps.length === 1, 5000, "gap and three");
        assert.deepEqual(got.gaps[0], { channel, reason: "trimmed", since: ids[1], resume: ids[2], snapshot: { state: "current", of: channel } });
        assert.deepEqual(got.messages.map((m) => m.data), [3, 4, 5]);
      } finally {
        c.close();
      }
    });

    test("an app with nothing, or failing, leaves the plain gap", async () => {
      for (const prefix of ["none", "fail"]) {
        const { channel, ids } = await trimmedChannel(prefix);
        const c = client(rung);
        try {
          const got = collect(c, channel, ids[0]!);
          await eventually(() => got.messages.length === 3 && got.gaps.length === 1, 5000, `${prefix}: gap and three`);
          assert.deepEqual(got.gaps[0], { channel, reason: "trimmed", since: ids[0], resume: ids[2] });
          assert.ok(got.messages.every((m) => m.backfilled === undefined));
        } finally {
          c.close();
        }
      }
    });
  });
}

describe("backfill on the wire", () => {
  test("a held long-poll and a one-shot poll carry backfilled elements and the snapshot element", async () => {
    const filled = await trimmedChannel("msgs");
    const held = await fetch(`${hub.url}/api/messages?channel=${filled.channel}&since=${filled.ids[0]}&wait=2`);
    const body = (await held.json()) as Array<Record<string, unknown>>;
    assert.deepEqual(body.slice(0, 2), [
      { channel: filled.channel, data: { filled: 1 }, backfilled: true },
      { channel: filled.channel, data: { filled: 2 }, backfilled: true },
    ]);
    assert.equal(held.headers.get("ladder-gap"), null);
    const snap = await trimmedChannel("snap");
    const once = await fetch(`${hub.url}/api/messages?channel=${snap.channel}&since=${snap.ids[0]}`);
    const onceBody = (await once.json()) as Array<Record<string, unknown>>;
    assert.deepEqual(onceBody[0], { channel: snap.channel, snapshot: { state: "current", of: snap.channel } });
    assert.deepEqual(JSON.parse(once.headers.get("ladder-gap")!), { channel: snap.channel, reason: "trimmed", since: snap.ids[0], resume: snap.ids[2] });
    assert.deepEqual(onceBody.slice(1).map((m) => m.data), [3, 4, 5]);
  });

  test("SSE: a backfill event has no id, so the stream's Last-Event-ID does not move", async () => {
    const { channel, ids } = await trimmedChannel("msgs");
    const controller = new AbortController();
    const res = await fetch(`${hub.url}/api/stream?channel=${channel}&since=${ids[0]}`, { signal: controller.signal });
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes("event: ready")) text += new TextDecoder().decode((await reader.read()).value);
    controller.abort();
    assert.match(text, /event: backfill\ndata: \{"channel":"[^"]+","data":\{"filled":1\},"backfilled":true\}\n\n/);
    assert.doesNotMatch(text.slice(0, text.indexOf("event: backfill") + 80), /^id:/m);
  });
});
