/**
 * Each pattern end to end over real sockets: publish, receive, drop, publish more, resume — exactly the
 * missed messages, in order, no duplicates — and the gap signal when history no longer reaches back.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { EventSource } from "eventsource";
import { CURSOR_HEADER, GAP_HEADER, type Gap, type Message } from "../src/protocol/index.js";
import { MemoryEngine, type RunningServer } from "../src/index.js";
import { openSse, openWs, publish, sleep, startHub } from "./helpers/server.js";

let hub: RunningServer;
before(async () => {
  hub = await startHub({ historySize: 5, heartbeatMs: 200 });
});
after(async () => {
  await hub.close();
});

let seq = 0;
const channel = (): string => `t${++seq}`;

async function getJson(path: string): Promise<{ status: number; body: unknown; headers: Headers }> {
  const res = await fetch(hub.url + path);
  return { status: res.status, body: await res.json(), headers: res.headers };
}

describe("poll", () => {
  test("answers at once with messages after since, oldest first, and a cursor header", async () => {
    const ch = channel();
    const empty = await getJson(`/api/messages?channel=${ch}&since=0`);
    assert.deepEqual(empty.body, []);
    const a = await publish(hub.url, { n: 1 }, ch);
    const b = await publish(hub.url, { n: 2 }, ch);
    const all = await getJson(`/api/messages?channel=${ch}&since=0`);
    assert.equal(all.status, 200);
    const msgs = all.body as Message[];
    assert.deepEqual(msgs.map((m) => [m.id, m.channel, m.data]), [[a.id, ch, { n: 1 }], [b.id, ch, { n: 2 }]]);
    assert.equal(typeof msgs[0]!.time, "number");
    assert.equal(all.headers.get(CURSOR_HEADER), b.id);
    const drop = await getJson(`/api/messages?channel=${ch}&since=${a.id}`);
    assert.deepEqual((drop.body as Message[]).map((m) => m.id), [b.id]);
    const none = await getJson(`/api/messages?channel=${ch}&since=${b.id}`);
    assert.deepEqual(none.body, []);
    assert.equal(none.headers.get(CURSOR_HEADER), b.id);
  });

  test("limit pages through history without loss", async () => {
    const ch = channel();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await publish(hub.url, i, ch)).id);
    const seen: string[] = [];
    let since = "0";
    for (;;) {
      const page = (await getJson(`/api/messages?channel=${ch}&since=${since}&limit=2`)).body as Message[];
      if (page.length === 0) break;
      seen.push(...page.map((m) => m.id));
      since = page.at(-1)!.id;
    }
    assert.deepEqual(seen, ids);
  });

  test("the guide's default channel: no channel parameter means general", async () => {
    const m = await publish(hub.url, { text: "hi" });
    assert.equal(m.channel, "general");
    const r = (await getJson(`/api/messages?since=0`)).body as Message[];
    assert.ok(r.some((x) => x.id === m.id));
  });

  test("since=now answers [] with the current cursor; a long-poll from now waits for the next message", async () => {
    const ch = channel();
    const m = await publish(hub.url, "old", ch);
    const now = await getJson(`/api/messages?channel=${ch}&since=now`);
    assert.deepEqual(now.body, []);
    assert.equal(now.headers.get(CURSOR_HEADER), m.id);
    const held = getJson(`/api/messages?channel=${ch}&since=now&wait=5`);
    await sleep(100);
    const next = await publish(hub.url, "new", ch);
    assert.deepEqual(((await held).body as Message[]).map((x) => x.id), [next.id]);
  });

  test("gap: a cursor older than retained history gets the retained rest and a gap header", async () => {
    const ch = channel();
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push((await publish(hub.url, i, ch)).id);
    const r = await getJson(`/api/messages?channel=${ch}&since=${ids[0]}`);
    assert.deepEqual((r.body as Message[]).map((m) => m.data), [3, 4, 5, 6, 7]);
    const gap = JSON.parse(r.headers.get(GAP_HEADER)!) as Gap;
    assert.deepEqual(gap, { channel: ch, reason: "trimmed", since: ids[0], resume: ids[2] });
    const ok = await getJson(`/api/messages?channel=${ch}&since=${ids[2]}`);
    assert.equal(ok.headers.get(GAP_HEADER), null);
  });
});

describe("long-poll", () => {
  test("is held until a message exists, then answered at once", async () => {
    const ch = channel();
    const start = Date.now();
    const pending = getJson(`/api/messages?channel=${ch}&since=0&wait=10`);
    await sleep(150);
    const m = await publish(hub.url, { late: true }, ch);
    const r = await pending;
    assert.deepEqual((r.body as Message[]).map((x) => x.id), [m.id]);
    assert.ok(Date.now() - start < 3000);
  });

  test("answers [] with the cursor when the wait runs out", async () => {
    const ch = channel();
    const m = await publish(hub.url, 1, ch);
    const start = Date.now();
    const r = await getJson(`/api/messages?channel=${ch}&since=${m.id}&wait=0.3`);
    assert.deepEqual(r.body, []);
    assert.equal(r.headers.get(CURSOR_HEADER), m.id);
    assert.ok(Date.now() - start >= 250);
  });

  test("the guide's loop: drop, publish more, resume — exactly the missed messages", async () => {
    const ch = channel();
    let lastId = "0";
    const got: unknown[] = [];
    const first = getJson(`/api/messages?channel=${ch}&since=${lastId}&wait=5`);
    await sleep(50);
    await publish(hub.url, 1, ch);
    const r1 = (await first).body as Message[];
    got.push(...r1.map((m) => m.data));
    lastId = r1.at(-1)!.id;
    // The client is gone for a while; three messages are published meanwhile.
    for (const n of [2, 3, 4]) await publish(hub.url, n, ch);
    const r2 = (await getJson(`/api/messages?channel=${ch}&since=${lastId}&wait=5`)).body as Message[];
    got.push(...r2.map((m) => m.data));
    assert.deepEqual(got, [1, 2, 3, 4]);
  });

  test("a gap answers at once rather than waiting", async () => {
    const ch = channel();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await publish(hub.url, i, ch)).id);
    const start = Date.now();
    const r = await getJson(`/api/messages?channel=${ch}&since=${ids[0]}&wait=10`);
    assert.ok(Date.now() - start < 2000);
    assert.equal((JSON.parse(r.headers.get(GAP_HEADER)!) as Gap).reason, "trimmed");
    assert.deepEqual((r.body as Message[]).map((m) => m.data), [2, 3, 4, 5, 6]);
  });

  test("a held request whose client leaves is released at once", async () => {
    const ch = channel();
    const controller = new AbortController();
    const pending = fetch(`${hub.url}/api/messages?channel=${ch}&wait=20`, { signal: controller.signal }).catch(() => null);
    const deadline = Date.now() + 2000;
    while (hub.hub.stats().byKind["long-poll"] === 0 && Date.now() < deadline) await sleep(10);
    assert.equal(hub.hub.stats().byKind["long-poll"], 1);
    controller.abort();
    await pending;
    while (hub.hub.stats().byKind["long-poll"] > 0 && Date.now() < deadline + 2000) await sleep(10);
    assert.equal(hub.hub.stats().byKind["long-poll"], 0);
    assert.equal(hub.hub.stats().channels, 0);
  });
});

describe("long-poll: the channel's engine subscription between rounds", () => {
  /** The real memory engine, counting the subscriptions the hub opens and closes on it. */
  class CountingEngine extends MemoryEngine {
    subscribes = 0;
    unsubscribes = 0;
    override async subscribe(channel: string, listener: (message: Message) => void): Promise<() => void> {
      this.subscribes++;
      const unsubscribe = await super.subscribe(channel, listener);
      return () => {
        this.unsubscribes++;
        unsubscribe();
      };
    }
  }

  test("a client polling again right after its answer reuses the subscription; it goes half a second after the last round", async () => {
    const engine = new CountingEngine({ maxCount: 100, maxAgeMs: 60_000 });
    const running = await startHub({ engine });
    try {
      let since = "0";
      const got: unknown[] = [];
      for (let round = 0; round < 10; round++) {
        const pending = fetch(`${running.url}/api/messages?channel=linger&since=${since}&wait=5`).then(async (res) => (await res.json()) as Message[]);
        for (let i = 0; i < 200 && running.hub.stats().byKind["long-poll"] === 0; i++) await sleep(5);
        await publish(running.url, round, "linger");
        const answer = await pending;
        got.push(...answer.map((m) => m.data));
        since = answer.at(-1)!.id;
      }
      assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      assert.equal(engine.subscribes, 1, "one engine subscription served all ten rounds");
      assert.equal(running.hub.stats().channels, 0, "a lingering subscription has no subscribers to count");
      await sleep(900);
      assert.equal(engine.unsubscribes, 1, "released after the linger");
      // Other transports release at once: an SSE stream that leaves takes its subscription with it.
      const sse = await openSse(`${running.url}/api/stream?channel=linger`);
      assert.equal(engine.subscribes, 2);
      sse.close();
      for (let i = 0; i < 100 && engine.unsubscribes < 2; i++) await sleep(5);
      assert.equal(engine.unsubscribes, 2);
    } finally {
      await running.close();
      await engine.close();
    }
  });
});

describe("sse", () => {
  test("headers, a retry line first, then id/data events carrying exactly the published data", async () => {
    const ch = channel();
    const stream = await openSse(`${hub.url}/api/stream?channel=${ch}`);
    assert.equal(stream.response.status, 200);
    assert.match(stream.response.headers.get("content-type")!, /^text\/event-stream/);
    assert.equal(stream.response.headers.get("cache-control"), "no-cache");
    await stream.waitForText("event: ready"); // the stream is live
    const a = await publish(hub.url, { price: 142.1 }, ch);
    const b = await publish(hub.url, { price: 142.35 }, ch);
    const events = await stream.waitFor(2);
    assert.deepEqual(events.map((e) => [e.id, JSON.parse(e.data)]), [[a.id, { price: 142.1 }], [b.id, { price: 142.35 }]]);
    assert.deepEqual(stream.retry, [2000]);
    stream.close();
  });

  test("drop, publish more, resume with Last-Event-ID: exactly the missed messages", async () => {
    const ch = channel();
    const s1 = await openSse(`${hub.url}/api/stream?channel=${ch}`);
    await sleep(50);
    const a = await publish(hub.url, "a", ch);
    await s1.waitFor(1);
    s1.close();
    const missed = [await publish(hub.url, "b", ch), await publish(hub.url, "c", ch)];
    const s2 = await openSse(`${hub.url}/api/stream?channel=${ch}`, { "last-event-id": a.id });
    const events = await s2.waitFor(2);
    assert.deepEqual(events.map((e) => e.id), missed.map((m) => m.id));
    const d = await publish(hub.url, "d", ch);
    const more = await s2.waitFor(3);
    assert.equal(more[2]!.id, d.id);
    await sleep(100);
    assert.equal(s2.events.length, 3, "no duplicates");
    s2.close();
  });

  test("since in the query resumes the first connection of a page that remembers where it was", async () => {
    const ch = channel();
    const a = await publish(hub.url, "a", ch);
    const b = await publish(hub.url, "b", ch);
    const s = await openSse(`${hub.url}/api/stream?channel=${ch}&since=${a.id}`);
    const [e] = await s.waitFor(1);
    assert.equal(e!.id, b.id);
    s.close();
  });

  test("a ready event carries the cursor, so a reconnect before any message misses nothing", async () => {
    const ch = channel();
    const m0 = await publish(hub.url, "before", ch);
    const s = await openSse(`${hub.url}/api/stream?channel=${ch}`);
    // A named event: EventSource's onmessage ignores it, but lastEventId is set from its id.
    await s.waitForText("event: ready");
    assert.equal(s.raw(), `retry: 2000\n\nevent: ready\nid: ${m0.id}\ndata: {"${ch}":"${m0.id}"}\n\n`);
    assert.equal(s.ready[0]!.id, m0.id);
    assert.equal(s.events.length, 0);
    s.close();
  });

  test("envelope=1 gives one channel the envelope and composite id that Ladder's client reads", async () => {
    const ch = channel();
    const s = await openSse(`${hub.url}/api/stream?channel=${ch}&envelope=1`);
    await s.waitForText("event: ready");
    const m = await publish(hub.url, { x: 1 }, ch);
    const [e] = await s.waitFor(1);
    assert.equal(e!.id, `${ch}=${m.id}`);
    const env = JSON.parse(e!.data) as Message;
    assert.deepEqual([env.channel, env.id, env.data], [ch, m.id, { x: 1 }]);
    s.close();
  });

  test("gap event on a resume from before retained history", async () => {
    const ch = channel();
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push((await publish(hub.url, i, ch)).id);
    const s = await openSse(`${hub.url}/api/stream?channel=${ch}`, { "last-event-id": ids[0]! });
    const events = await s.waitFor(6);
    assert.equal(events[0]!.event, "gap");
    assert.deepEqual(JSON.parse(events[0]!.data), { channel: ch, reason: "trimmed", since: ids[0], resume: ids[2] });
    assert.equal(events[0]!.id, ids[2]);
    assert.deepEqual(events.slice(1).map((e) => JSON.parse(e.data)), [3, 4, 5, 6, 7]);
    s.close();
  });

  test("several channels on one stream: envelopes say where each came from; the composite id resumes all", async () => {
    const x = channel();
    const y = channel();
    const s1 = await openSse(`${hub.url}/api/stream?channel=${x}&channel=${y}`);
    await s1.waitForText("id: ");
    const x1 = await publish(hub.url, "x1", x);
    const y1 = await publish(hub.url, "y1", y);
    const evs = await s1.waitFor(2);
    assert.deepEqual(evs.map((e) => JSON.parse(e.data)), [
      { channel: x, id: x1.id, data: "x1", time: (JSON.parse(evs[0]!.data) as Message).time },
      { channel: y, id: y1.id, data: "y1", time: (JSON.parse(evs[1]!.data) as Message).time },
    ]);
    const lastId = evs[1]!.id!;
    assert.equal(lastId, `${x}=${x1.id};${y}=${y1.id}`);
    s1.close();
    const x2 = await publish(hub.url, "x2", x);
    const y2 = await publish(hub.url, "y2", y);
    const s2 = await openSse(`${hub.url}/api/stream?channel=${x}&channel=${y}`, { "last-event-id": lastId });
    const resumed = (await s2.waitFor(2)).map((e) => (JSON.parse(e.data) as Message).id);
    assert.deepEqual(resumed.sort(), [x2.id, y2.id].sort());
    s2.close();
  });

  test("heartbeat comments keep an idle stream alive", async () => {
    const ch = channel();
    const res = await fetch(`${hub.url}/api/stream?channel=${ch}`);
    const reader = res.body!.getReader();
    let text = "";
    const deadline = Date.now() + 3000;
    while (!text.includes(":\n\n") && Date.now() < deadline) text += new TextDecoder().decode((await reader.read()).value);
    assert.match(text, /^retry: 2000\n\n/);
    assert.ok(text.includes(":\n\n"), "heartbeat comment seen");
    await reader.cancel();
  });

  test("a stream that carried messages since the last tick gets no heartbeat comment; idle again, it gets them", async () => {
    const ch = channel();
    const res = await fetch(`${hub.url}/api/stream?channel=${ch}`);
    const reader = res.body!.getReader();
    let text = "";
    let reading = true;
    const pump = (async () => {
      while (reading) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
    })();
    const comments = (from: number): number => text.slice(from).split(":\n\n").length - 1;
    // Messages every 50 ms for six ticks of 200 ms: each tick finds the stream written since the last one.
    const busyFrom = text.length;
    for (let n = 0; n < 24; n++) {
      await publish(hub.url, { n }, ch);
      await sleep(50);
    }
    const busy = comments(busyFrom);
    assert.ok(text.includes('"n":23'), "every message arrived");
    // A loaded machine may stall the publisher past a whole tick once; without the skip there are six.
    assert.ok(busy <= 1, `${busy} heartbeat comments while messages flowed`);
    const idleFrom = text.length;
    await sleep(700);
    assert.ok(comments(idleFrom) >= 2, `an idle stream gets its comments again: ${JSON.stringify(text.slice(idleFrom))}`);
    reading = false;
    await reader.cancel();
    await pump.catch(() => undefined);
  });

  test("the eventsource npm package (an independent client) receives and reconnects with Last-Event-ID", async () => {
    const ch = channel();
    const got: Array<{ id: string; data: unknown }> = [];
    const es = new EventSource(`${hub.url}/api/stream?channel=${ch}`);
    es.onmessage = (e) => got.push({ id: e.lastEventId, data: JSON.parse(e.data as string) });
    await new Promise<void>((resolve, reject) => {
      es.onopen = () => resolve();
      setTimeout(() => reject(new Error("no open")), 3000);
    });
    await sleep(50);
    const a = await publish(hub.url, { n: 1 }, ch);
    const deadline = Date.now() + 3000;
    while (got.length < 1 && Date.now() < deadline) await sleep(10);
    assert.deepEqual(got, [{ id: a.id, data: { n: 1 } }]);
    es.close();
  });
});

describe("websocket", () => {
  test("join, receive, publish with ack, own message echoed in the room's order", async () => {
    const ch = channel();
    const c = await openWs(hub.url);
    c.send({ type: "join", room: ch });
    const joined = await c.next((f) => f.type === "joined");
    assert.equal(joined.room, ch);
    assert.equal(typeof joined.cursor, "string");
    const a = await publish(hub.url, { from: "http" }, ch);
    const m1 = await c.next((f) => f.type === "message");
    assert.deepEqual([m1.room, m1.id, m1.data], [ch, a.id, { from: "http" }]);
    c.send({ type: "publish", room: ch, data: { from: "ws" }, ref: 7 });
    const ack = await c.next((f) => f.type === "ack");
    const m2 = await c.next((f) => f.type === "message");
    assert.equal(ack.ref, 7);
    assert.equal(ack.id, m2.id);
    assert.deepEqual(m2.data, { from: "ws" });
    c.send({ type: "ping", ref: "p" });
    assert.equal((await c.next((f) => f.type === "pong")).ref, "p");
    c.send({ type: "leave", channel: ch });
    await c.next((f) => f.type === "left");
    await publish(hub.url, "after leave", ch);
    await sleep(100);
    assert.equal(c.frames.filter((f) => f.type === "message").length, 2);
    await c.close();
  });

  test("drop, publish more, rejoin with since: exactly the missed messages", async () => {
    const ch = channel();
    const c1 = await openWs(hub.url);
    c1.send({ type: "join", room: ch });
    await c1.next((f) => f.type === "joined");
    await publish(hub.url, 1, ch);
    const last = await c1.next((f) => f.type === "message");
    c1.ws.terminate();
    const missed = [await publish(hub.url, 2, ch), await publish(hub.url, 3, ch)];
    const c2 = await openWs(hub.url);
    c2.send({ type: "join", room: ch, since: last.id });
    const joined = await c2.next((f) => f.type === "joined");
    const msgs = c2.frames.filter((f) => f.type === "message");
    assert.deepEqual(msgs.map((m) => m.id), missed.map((m) => m.id));
    assert.equal(joined.cursor, missed[1]!.id);
    const live = await publish(hub.url, 4, ch);
    assert.equal((await c2.next((f) => f.type === "message" && f.id === live.id)).data, 4);
    await c2.close();
  });

  test("gap frame on a resume from before retained history", async () => {
    const ch = channel();
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push((await publish(hub.url, i, ch)).id);
    const c = await openWs(hub.url);
    c.send({ type: "join", room: ch, since: ids[1] });
    const gap = await c.next((f) => f.type === "gap");
    assert.deepEqual(gap, { type: "gap", room: ch, reason: "trimmed", since: ids[1], resume: ids[2] });
    await c.next((f) => f.type === "joined");
    assert.deepEqual(c.frames.filter((f) => f.type === "message").map((m) => m.data), [3, 4, 5, 6, 7]);
    await c.close();
  });

  test("several rooms on one socket", async () => {
    const x = channel();
    const y = channel();
    const c = await openWs(hub.url);
    c.send({ type: "join", room: x });
    c.send({ type: "join", channel: y });
    await c.next((f) => f.type === "joined" && f.room === x);
    await c.next((f) => f.type === "joined" && f.room === y);
    await publish(hub.url, "to y", y);
    await publish(hub.url, "to x", x);
    assert.deepEqual((await c.next((f) => f.type === "message")).room, y);
    assert.deepEqual((await c.next((f) => f.type === "message")).room, x);
    await c.close();
  });
});
