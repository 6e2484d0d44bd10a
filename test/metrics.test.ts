/** Prometheus metrics at /metrics: off by default, and when on, numbers that match what the hub did. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { joinedWs, openSse, publish, startHub } from "./helpers/server.js";

/** `name{labels} value` lines of the exposition text, by series. */
function parseMetrics(text: string): Map<string, number> {
  const series = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    series.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return series;
}

async function scrape(url: string): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parseMetrics(await res.text());
}

test("without the metrics option /metrics is not served", async () => {
  const running = await startHub();
  try {
    const res = await fetch(`${running.url}/metrics`);
    assert.equal(res.status, 404);
    await res.arrayBuffer();
  } finally {
    await running.close();
  }
});

test("connections, channels, publishes, live deliveries, refusals and the engine, as they happened", async () => {
  const running = await startHub({ metrics: true });
  const sse = await openSse(`${running.url}/api/stream?channel=m`);
  const { ws, ids: wsIds } = await joinedWs(running.url, "m");
  try {
    const before = await scrape(running.url);
    assert.equal(before.get('ladder_connections{transport="sse"}'), 1);
    assert.equal(before.get('ladder_connections{transport="websocket"}'), 1);
    assert.equal(before.get('ladder_connections{transport="long-poll"}'), 0);
    assert.equal(before.get("ladder_channels"), 1);
    assert.equal(before.get("ladder_messages_published_total"), 0);
    assert.equal(before.get('ladder_engine_ready{engine="memory"}'), 1);
    assert.equal(before.get("ladder_draining"), 0);
    assert.ok((before.get("process_cpu_user_seconds_total") ?? -1) >= 0, "process metrics are there");

    for (let i = 0; i < 3; i++) await publish(running.url, { i }, "m");
    await publish(running.url, "nobody listens", "elsewhere");
    await sse.waitFor(3);
    for (let i = 0; i < 100 && wsIds.length < 3; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(wsIds.length, 3);
    // Refusals of three kinds.
    await (await fetch(`${running.url}/nowhere`)).arrayBuffer();
    await (await fetch(`${running.url}/api/messages?since=bogus`)).arrayBuffer();
    await (await fetch(`${running.url}/api/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" })).arrayBuffer();

    const after = await scrape(running.url);
    assert.equal(after.get("ladder_messages_published_total"), 4);
    assert.equal(after.get("ladder_live_deliveries_total"), 6, "three messages to two subscribers; none for a channel nobody follows");
    assert.equal(after.get('ladder_refusals_total{code="not_found"}'), 1);
    assert.equal(after.get('ladder_refusals_total{code="bad_since"}'), 1);
    assert.equal(after.get('ladder_refusals_total{code="bad_json"}'), 1);

    ws.close();
    sse.close();
    for (let i = 0; i < 100 && running.hub.stats().connections > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    const closed = await scrape(running.url);
    assert.equal(closed.get('ladder_connections{transport="sse"}'), 0);
    assert.equal(closed.get('ladder_connections{transport="websocket"}'), 0);

    const post = await fetch(`${running.url}/metrics`, { method: "POST" });
    assert.equal(post.status, 405);
    await post.arrayBuffer();
  } finally {
    ws.terminate();
    sse.close();
    await running.close();
  }
});
