/**
 * An app that answers slowly, with garbage, with a 500, with a huge body, or not at all: each gives the
 * hook's stated failure policy (deny: 503 `unavailable`; allow: through), a log line and a metric, and
 * other clients are served meanwhile. Calls past the concurrency bound and its queue fail at once.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { RunningServer } from "../src/index.js";
import { json, metricValue, startApp, startLoggedHub, type TestApp } from "./helpers/app.js";
import { startHub } from "./helpers/server.js";

const HUGE = 256 * 1024;

let app: TestApp;
const held: Array<() => void> = [];

before(async () => {
  app = await startApp((call, res) => {
    const mode = (call.body.cookies as Record<string, string> | undefined)?.mode ?? (call.body.data as { mode?: string } | undefined)?.mode ?? "ok";
    switch (mode) {
      case "ok":
        if (call.path === "/connect") return json(res, 200, { user: "u-" + String((call.body.cookies as Record<string, string>).id ?? "x"), subscribe: ["*"], publish: ["*"] });
        return json(res, 200, { allow: true });
      case "slow": {
        const timer = setTimeout(() => json(res, 200, { user: "late", subscribe: ["*"] }), 1500);
        res.on("close", () => clearTimeout(timer));
        return;
      }
      case "garbage":
        res.writeHead(200, { "content-type": "application/json" }).end("<html>not json");
        return;
      case "wrong-shape":
        return json(res, 200, { user: 42 });
      case "500":
        return json(res, 500, { error: "boom" });
      case "huge":
        res.writeHead(200, { "content-type": "application/json", "content-length": HUGE + 20 });
        res.end(`{"user":"x","pad":"${"x".repeat(HUGE)}"}`);
        return;
      case "huge-chunked":
        res.writeHead(200, { "content-type": "application/json" });
        res.write(`{"user":"x","pad":"`);
        for (let i = 0; i < 32; i++) res.write("x".repeat(16 * 1024));
        res.end(`"}`);
        return;
      case "hang":
        held.push(() => res.destroy());
        return;
      case "reset":
        res.socket?.destroy();
        return;
    }
  });
});
after(async () => {
  for (const release of held.splice(0)) release();
  await app.close();
});

async function poll(base: string, channel: string, cookie: string): Promise<{ status: number; body: string; ms: number }> {
  const started = Date.now();
  const res = await fetch(`${base}/api/messages?channel=${channel}&since=0`, { headers: { cookie } });
  return { status: res.status, body: await res.text(), ms: Date.now() - started };
}

const metric = metricValue;

describe("deny policy (the default)", () => {
  let hub: RunningServer;
  let lines: Array<Record<string, unknown>>;
  before(async () => {
    ({ hub, lines } = await startLoggedHub({
      auth: { rules: [{ match: "hooked.*", subscribe: "hook", publish: "hook" }], defaults: { subscribe: "token", publish: "token" } },
      hooks: {
        timeoutMs: 300,
        maxResponseBytes: 64 * 1024,
        connect: { url: `${app.url}/connect` },
        subscribe: { url: `${app.url}/subscribe` },
        publish: { url: `${app.url}/publish` },
      },
    }));
  });
  after(async () => {
    await hub.close();
  });

  const cases: Array<[mode: string, reason: string]> = [
    ["slow", "timeout"],
    ["hang", "timeout"],
    ["garbage", "invalid"],
    ["wrong-shape", "invalid"],
    ["500", "status"],
    ["huge", "too_large"],
    ["huge-chunked", "too_large"],
    ["reset", "network"],
  ];
  for (const [mode, reason] of cases) {
    test(`connect hook ${mode}: 503, a log line and ladder_hook_failures_total{reason="${reason}"}`, async () => {
      const labels = `hook="connect",reason="${reason}"`;
      const before = await metric(hub.url, "ladder_hook_failures_total", labels);
      const logged = lines.length;
      const answer = await poll(hub.url, "any", `mode=${mode}; id=${mode}`);
      assert.equal(answer.status, 503, answer.body);
      assert.match(answer.body, /"code":"unavailable"/);
      assert.match(answer.body, new RegExp(`connect hook failed \\(${reason}\\)`));
      assert.ok(answer.ms < 1200, `bounded by the timeout, took ${answer.ms} ms`);
      assert.equal(await metric(hub.url, "ladder_hook_failures_total", labels), before + 1);
      const line = lines.slice(logged).find((l) => l.msg === "hook call failed");
      assert.ok(line, "a log line");
      assert.deepEqual([line.hook, line.reason], ["connect", reason]);
      // A failure is not cached: the app is asked again on the next request.
      const calls = app.callsTo("/connect").length;
      await poll(hub.url, "any", `mode=${mode}; id=${mode}`);
      assert.equal(app.callsTo("/connect").length, calls + 1);
    });
  }

  test("while one client's app call hangs, other clients are served at once", async () => {
    const hanging = poll(hub.url, "any", "mode=hang; id=h2");
    await new Promise((r) => setTimeout(r, 50));
    const other = await poll(hub.url, "any", "mode=ok; id=other");
    assert.equal(other.status, 200);
    assert.ok(other.ms < 250, `served in ${other.ms} ms`);
    assert.equal((await hanging).status, 503);
  });

  test("subscribe and publish hooks failing deny with 503 and count under their own name", async () => {
    const before = await metric(hub.url, "ladder_hook_failures_total", 'hook="publish",reason="status"');
    const res = await fetch(`${hub.url}/api/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", cookie: "mode=ok; id=p" },
      body: JSON.stringify({ channel: "hooked.x", data: { mode: "500" } }),
    });
    assert.equal(res.status, 503);
    assert.match(await res.text(), /publish hook failed \(status\)/);
    assert.equal(await metric(hub.url, "ladder_hook_failures_total", 'hook="publish",reason="status"'), before + 1);
    const text = await (await fetch(`${hub.url}/metrics`)).text();
    assert.match(text, /ladder_hook_duration_seconds_count\{hook="connect"\} [1-9]/);
    assert.match(text, /ladder_hook_duration_seconds_count\{hook="publish"\} [1-9]/);
  });
});

describe("allow policy", () => {
  let hub: RunningServer;
  before(async () => {
    hub = await startHub({
      metrics: true,
      auth: {
        rules: [
          { match: "public.*", subscribe: "anyone", publish: "nobody" },
          { match: "hooked.*", subscribe: "hook", publish: "hook" },
        ],
      },
      hooks: {
        timeoutMs: 300,
        connect: { url: `${app.url}/connect`, onFailure: "allow" },
        subscribe: { url: `${app.url}/subscribe`, onFailure: "allow" },
        publish: { url: `${app.url}/publish`, onFailure: "allow" },
      },
    });
  });
  after(async () => {
    await hub.close();
  });

  test("a failed connect hook lets the request through as anonymous: public channels yes, token channels no", async () => {
    assert.equal((await poll(hub.url, "public.news", "mode=500")).status, 200);
    assert.equal((await poll(hub.url, "private.x", "mode=garbage")).status, 401);
    assert.equal(await metric(hub.url, "ladder_hook_failures_total", 'hook="connect",reason="status"'), 1);
  });

  test("a failed publish hook lets the data through unchanged", async () => {
    const res = await fetch(`${hub.url}/api/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", cookie: "mode=ok; id=a" },
      body: JSON.stringify({ channel: "hooked.y", data: { mode: "slow", text: "kept" } }),
    });
    assert.equal(res.status, 201);
    const read = (await (await fetch(`${hub.url}/api/messages?channel=hooked.y&since=0`, { headers: { cookie: "mode=ok; id=a" } })).json()) as Array<{ data: unknown }>;
    assert.deepEqual(read.map((m) => m.data), [{ mode: "slow", text: "kept" }]);
  });
});

describe("bounded concurrency", () => {
  test("past the calls in flight and the queue, a call fails at once as overloaded", async () => {
    const hub = await startHub({
      metrics: true,
      hooks: { timeoutMs: 1000, concurrency: 1, queue: 1, connect: { url: `${app.url}/connect` } },
    });
    try {
      const first = poll(hub.url, "c", "mode=hang; id=1");
      const second = poll(hub.url, "c", "mode=hang; id=2");
      await new Promise((r) => setTimeout(r, 100));
      const third = await poll(hub.url, "c", "mode=ok; id=3");
      assert.equal(third.status, 503);
      assert.match(third.body, /overloaded/);
      assert.ok(third.ms < 500, `refused at once, took ${third.ms} ms`);
      assert.equal((await first).status, 503);
      assert.equal((await second).status, 503);
      assert.equal(await metric(hub.url, "ladder_hook_failures_total", 'hook="connect",reason="overloaded"'), 1);
    } finally {
      await hub.close();
    }
  });
});
