/**
 * Webhooks against a real app server: channel_occupied / channel_vacated from this node's first and last
 * subscriber, signed (HMAC-SHA256 over `<timestamp>.<body>`), retried with backoff until the app takes
 * them, in order per channel, and — when the app never takes them or the queue is full — given up with an
 * error log line and a metric, never silently.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { RunningServer } from "../src/index.js";
import { capturingLogger, eventually, json, metricValue, startApp, startLoggedHub, type AppCall, type TestApp } from "./helpers/app.js";
import { openSse, startHub } from "./helpers/server.js";

const SECRET = "webhook-secret-0123456789";

let app: TestApp;
/** Answers per channel: how many times to fail before taking an event. */
const failures = new Map<string, number>();
before(async () => {
  app = await startApp((call, res) => {
    const channel = String(call.body.channel);
    const left = failures.get(channel) ?? 0;
    if (left > 0) {
      failures.set(channel, left - 1);
      return json(res, 500, {});
    }
    res.writeHead(204).end();
  });
});
after(async () => {
  await app.close();
});

function verified(call: AppCall): boolean {
  const timestamp = String(call.headers["ladder-webhook-timestamp"]);
  const expected = "v1=" + createHmac("sha256", SECRET).update(`${timestamp}.${call.raw}`).digest("hex");
  return call.headers["ladder-webhook-signature"] === expected && Math.abs(Date.now() / 1000 - Number(timestamp)) < 300;
}

function failureCount(base: string, reason: string): Promise<number> {
  return metricValue(base, "ladder_hook_failures_total", `hook="webhook",reason="${reason}"`);
}

const taken = (channel: string): AppCall[] => app.calls.filter((c) => c.body.channel === channel);

describe("webhooks", () => {
  let hub: RunningServer;
  let lines: Array<Record<string, unknown>>;
  before(async () => {
    ({ hub, lines } = await startLoggedHub({ hooks: { webhooks: { url: `${app.url}/webhooks`, secret: SECRET, attempts: 4, backoffMs: 40 } } }));
  });
  after(async () => {
    await hub.close();
  });

  test("first subscriber: channel_occupied; last one gone: channel_vacated; signed", async () => {
    const a = await openSse(`${hub.url}/api/stream?channel=wh.one`);
    const b = await openSse(`${hub.url}/api/stream?channel=wh.one`);
    await a.waitForText("event: ready");
    await b.waitForText("event: ready");
    await eventually(() => taken("wh.one").length === 1, 3000, "channel_occupied");
    a.close();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(taken("wh.one").length, 1, "a second subscriber leaving does not vacate");
    b.close();
    await eventually(() => taken("wh.one").length === 2, 3000, "channel_vacated");
    const [occupied, vacated] = taken("wh.one");
    assert.equal(occupied!.body.event, "channel_occupied");
    assert.equal(vacated!.body.event, "channel_vacated");
    assert.ok(verified(occupied!) && verified(vacated!), "signatures verify");
    assert.notEqual(occupied!.body.id, vacated!.body.id);
    // A tampered body does not verify with the same headers.
    assert.equal(verified({ ...occupied!, raw: occupied!.raw.replace("occupied", "vacated") }), false);
  });

  test("an event the app refuses is retried with backoff and the channel's order is kept", async () => {
    failures.set("wh.retry", 2);
    const a = await openSse(`${hub.url}/api/stream?channel=wh.retry`);
    await a.waitForText("event: ready");
    a.close();
    await eventually(() => taken("wh.retry").filter((c) => c.body.event === "channel_vacated").length === 1, 5000, "vacated after retries");
    const events = taken("wh.retry").map((c) => c.body.event);
    // Three tries of occupied (two refused), then vacated: never vacated before occupied was taken.
    assert.deepEqual(events, ["channel_occupied", "channel_occupied", "channel_occupied", "channel_vacated"]);
    const ids = taken("wh.retry").slice(0, 3).map((c) => c.body.id);
    assert.equal(new Set(ids).size, 1, "a retry repeats the event's id");
  });

  test("retries end after the set attempts: the event is logged as lost and counted", async () => {
    failures.set("wh.lost", 1000);
    const statusBefore = await failureCount(hub.url, "status");
    const a = await openSse(`${hub.url}/api/stream?channel=wh.lost`);
    await a.waitForText("event: ready");
    await eventually(() => lines.some((l) => l.msg === "webhook event lost"), 5000, "the loss logged");
    assert.equal(taken("wh.lost").length, 4, "exactly `attempts` tries");
    const line = lines.find((l) => l.msg === "webhook event lost")!;
    assert.equal((line.webhook as { channel: string }).channel, "wh.lost");
    assert.equal(await failureCount(hub.url, "dropped"), 1);
    assert.equal((await failureCount(hub.url, "status")) - statusBefore, 4);
    a.close();
    failures.set("wh.lost", 0);
  });

  test("presence can report members through the hook point", async () => {
    hub.hub.hooks!.webhooks!.emit("member_added", "wh.presence", { user: "alice" });
    await eventually(() => taken("wh.presence").length === 1, 3000, "member_added");
    assert.deepEqual(taken("wh.presence")[0]!.body.member, { user: "alice" });
  });
});

test("a full webhook queue drops new events loudly", async () => {
  const { logger, lines } = capturingLogger();
  const hub = await startHub({ logger, hooks: { webhooks: { url: `${app.url}/webhooks`, secret: SECRET, maxQueue: 1, backoffMs: 1000 } } });
  failures.set("wh.q1", 1000);
  try {
    hub.hub.hooks!.webhooks!.emit("member_added", "wh.q1", { user: "a" });
    hub.hub.hooks!.webhooks!.emit("member_added", "wh.q2", { user: "b" });
    const lost = lines.filter((l) => l.msg === "webhook event lost");
    assert.equal(lost.length, 1);
    assert.equal(lost[0]!.reason, "webhook queue full");
  } finally {
    await hub.close();
    failures.set("wh.q1", 0);
  }
  // Closing with an event still queued logs it too.
  assert.ok(lines.some((l) => l.msg === "webhook event lost" && l.reason === "hub closed"));
});
