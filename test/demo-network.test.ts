/**
 * The demo's network conditions, against a real `ladder serve` child process. First the endpoint and the
 * proxy path on their own (refusals with their codes, one lane never touching another or the hub's own
 * endpoints, nothing at all with --no-demo); then the panel in Chromium: each condition turned on moves the
 * page's client down the ladder, turned off brings it back up, and every price the hub published while
 * it watched arrives once, in order — checked against the hub's own log. Screenshots go to
 * artifacts/screenshots/demo-network-*.png.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { compareIds } from "../src/protocol/index.js";
import { useChromium } from "./helpers/browser.js";
import { startNode, type LadderNode } from "./helpers/nodes.js";
import { sleep, upgradeStatusAt } from "./helpers/server.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SCREENSHOTS = join(ROOT, "artifacts", "screenshots");

async function demoNode(t: TestContext, demo = true): Promise<LadderNode> {
  const node = await startNode("memory", [demo ? "--demo" : "--no-demo"]);
  t.after(() => node.kill("SIGTERM"));
  return node;
}

interface LaneStatus {
  prefix: string;
  conditions: { refuseWebSocket: boolean; bufferSse: boolean; dropAll: boolean };
  open: { request: number; stream: number; websocket: number };
  counts: { relayed: number; refused: number; dropped: number; cut: number; heldBytes: number };
}

function setter(base: string): (body: unknown, type?: string) => Promise<Response> {
  return (body, type = "application/json") =>
    fetch(`${base}/demo/network`, { method: "POST", headers: { "content-type": type }, body: typeof body === "string" ? body : JSON.stringify(body) });
}

async function errorCode(res: Response): Promise<string> {
  return ((await res.json()) as { error: { code: string } }).error.code;
}

/** Reads an SSE response until `text` shows up or `ms` pass; true when it showed. */
async function streamShows(res: Response, text: string, ms: number): Promise<boolean> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  const deadline = Date.now() + ms;
  try {
    while (Date.now() < deadline) {
      const next = await Promise.race([reader.read(), sleep(deadline - Date.now()).then(() => null)]);
      if (next === null || next.done) break;
      seen += decoder.decode(next.value, { stream: true });
      if (seen.includes(text)) return true;
    }
    return false;
  } finally {
    void reader.cancel().catch(() => undefined);
  }
}

test("demo network endpoint: bounded, documented refusals; a lane's conditions act on that lane alone; none of it with --no-demo", { timeout: 60_000 }, async (t) => {
  const node = await demoNode(t);
  const base = node.url;
  const post = setter(base);
  const A = "lane-a-0001";
  const B = "lane-b-0002";
  const ws = (lane: string) => `${base.replace("http", "ws")}/demo/net/${lane}/api/ws`;

  const initial = (await (await fetch(`${base}/demo/network?lane=${A}`)).json()) as LaneStatus;
  assert.deepEqual(initial.conditions, { refuseWebSocket: false, bufferSse: false, dropAll: false });
  assert.equal(initial.prefix, `/demo/net/${A}`);

  // Bounded input, each refusal with its code.
  for (const [body, code] of [
    [{ lane: "short", dropAll: true }, "bad_request"],
    [{ lane: A, dropAll: "yes" }, "bad_request"],
    [{ lane: A, slow: true }, "bad_request"],
    [[1, 2], "bad_request"],
    ["{not json", "bad_json"],
  ] as const) {
    const res = await post(body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(await errorCode(res), code);
  }
  assert.equal((await post({ lane: A }, "text/plain")).status, 415);
  assert.equal((await post({ lane: A, pad: "x".repeat(600) })).status, 413);
  const put = await fetch(`${base}/demo/network`, { method: "PUT" });
  assert.equal(put.status, 405);
  assert.equal(put.headers.get("allow"), "GET, HEAD, POST");
  await put.body?.cancel();
  assert.equal((await fetch(`${base}/demo/network`)).status, 400, "GET without a lane");
  assert.equal((await fetch(`${base}/demo/net/bad%20lane/api/messages?channel=x`)).status, 400);
  assert.equal((await fetch(`${base}/demo/net/${A}/demo/publisher`)).status, 404, "the path relays the hub's API only");

  // The path relays the hub's API: a publish through one lane is read back through another and directly.
  const published = await fetch(`${base}/demo/net/${A}/api/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"channel":"net.test","data":{"hello":1}}' });
  assert.equal(published.status, 201);
  const { id } = (await published.json()) as { id: string };
  const readBack = async (prefix: string) => ((await (await fetch(`${base}${prefix}/api/messages?channel=net.test&since=0`)).json()) as Array<{ id: string }>).map((m) => m.id);
  assert.deepEqual(await readBack(`/demo/net/${B}`), [id]);
  assert.deepEqual(await readBack(""), [id]);
  assert.equal(await upgradeStatusAt(ws(A), { origin: base }), 101);

  // Refuse upgrades on A: the open socket is cut, new upgrades get 403; lane B and the hub's own path are untouched.
  const open = new WebSocket(ws(A), { origin: base });
  await new Promise((resolve, reject) => open.once("open", resolve).once("error", reject));
  const cut = Promise.race([new Promise<number>((resolve) => open.once("close", (code) => resolve(code))), sleep(5000).then(() => "still open after 5 s")]);
  assert.equal((await post({ lane: A, refuseWebSocket: true })).status, 200);
  assert.equal(await cut, 1006, "the open socket through lane A is cut");
  assert.equal(await upgradeStatusAt(ws(A), { origin: base }), 403);
  assert.equal(await upgradeStatusAt(ws(B), { origin: base }), 101);
  assert.equal(await upgradeStatusAt(`${base.replace("http", "ws")}/api/ws`, { origin: base }), 101);

  // Buffer SSE on A: the head comes, the ready event does not; off, the held bytes come at once.
  await post({ lane: A, bufferSse: true });
  const held = await fetch(`${base}/demo/net/${A}/api/stream?channel=net.test`);
  assert.equal(held.status, 200);
  assert.equal(held.headers.get("content-type")?.startsWith("text/event-stream"), true);
  const clear = await fetch(`${base}/demo/net/${B}/api/stream?channel=net.test`);
  assert.equal(await streamShows(clear, "event: ready", 3000), true, "lane B's stream flows");
  const heldReader = streamShows(held, "event: ready", 4000);
  await sleep(1500);
  const buffering = (await (await fetch(`${base}/demo/network?lane=${A}`)).json()) as LaneStatus;
  assert.ok(buffering.counts.heldBytes > 0, "the ready event is held");
  assert.equal(buffering.open.stream, 1);
  await post({ lane: A, bufferSse: false });
  assert.equal(await heldReader, true, "turned off, the held stream lets its events go");

  // Drop every connection on A: fetches through it fail, also /readyz (the network is down, not a rung blocked).
  const dropped = await post({ lane: A, dropAll: true });
  assert.equal(((await dropped.json()) as LaneStatus).conditions.dropAll, true);
  await assert.rejects(fetch(`${base}/demo/net/${A}/readyz`), TypeError);
  await assert.rejects(fetch(`${base}/demo/net/${A}/api/messages?channel=net.test&since=0`), TypeError);
  assert.equal(await upgradeStatusAt(ws(A), { origin: base }), 0, "no answer at all to an upgrade");
  assert.deepEqual(await readBack(`/demo/net/${B}`), [id], "lane B still works");
  assert.equal((await fetch(`${base}/readyz`)).status, 200, "the hub itself is untouched");
  await post({ lane: A, dropAll: false, refuseWebSocket: false });
  assert.deepEqual(await readBack(`/demo/net/${A}`), [id], "lane A works again");
  const counts = ((await (await fetch(`${base}/demo/network?lane=${A}`)).json()) as LaneStatus).counts;
  assert.ok(counts.refused >= 1 && counts.dropped >= 3 && counts.cut >= 1, JSON.stringify(counts));

  // One address holds at most 32 relayed connections (open streams here); the 33rd is refused with 429.
  const streams = await Promise.all(Array.from({ length: 32 }, () => fetch(`${base}/demo/net/${B}/api/stream?channel=net.test`)));
  assert.ok(streams.every((res) => res.status === 200));
  const over = await fetch(`${base}/demo/net/${A}/api/stream?channel=net.test`);
  assert.equal(over.status, 429);
  assert.equal(await errorCode(over), "too_many_connections");
  await streams.pop()!.body!.cancel();
  await sleep(200);
  const again = await fetch(`${base}/demo/net/${A}/api/stream?channel=net.test`);
  assert.equal(again.status, 200, "a slot freed is a slot again");
  for (const res of [...streams, again]) await res.body!.cancel();

  // --no-demo: no endpoint, no path, no upgrade.
  const off = await demoNode(t, false);
  for (const path of ["/demo/network?lane=lane-a-0001", `/demo/net/${A}/api/messages?channel=net.test`, `/demo/net/${A}/readyz`]) {
    const res = await fetch(`${off.url}${path}`);
    assert.equal(res.status, 404, `${path} with --no-demo`);
    await res.body?.cancel();
  }
  assert.equal((await setter(off.url)({ lane: A, dropAll: true })).status, 404);
  assert.equal(await upgradeStatusAt(`${off.url.replace("http", "ws")}/demo/net/${A}/api/ws`, { origin: off.url }), 404);
});

// ---------------------------------------------------------------------------------------------------------
// The panel in a browser.

const chromiumFor = useChromium("demo network conditions");

interface Panel {
  lane: string;
  available: boolean;
  state: string | null;
  transport: string | null;
  failed: string[];
  published: number | null;
  received: number;
  missing: number;
  repeated: number;
  carried: Record<string, number>;
  visited: string[];
  ids: string[];
}

test("network conditions panel: each toggle moves the client down the ladder and back up; every price arrives once", { timeout: 150_000 }, async (t) => {
  const browser = chromiumFor(t);
  if (!browser) return;
  const node = await demoNode(t);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1, reducedMotion: "reduce" });
  t.after(() => context.close());
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("pageerror", (error) => problems.push(error.message));
  await page.goto(`${node.url}/#ladder`);
  const panel = (): Promise<Panel> => page.evaluate("window.demo.ladder.toJSON()") as Promise<Panel>;
  const until = async (test: (p: Panel) => boolean, what: string, timeout = 25_000): Promise<Panel> => {
    const deadline = Date.now() + timeout;
    for (;;) {
      const p = await panel().catch(() => null);
      if (p && test(p)) return p;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; panel: ${JSON.stringify({ ...p, ids: p?.ids.length })}`);
      await sleep(100);
    }
  };
  const on = (rung: string) => (p: Panel) => p.state === "connected" && p.transport === rung;
  // What the page shows (rendered every 500 ms): the status line's rung.
  const shown = async (rung: string): Promise<void> => {
    await page.waitForFunction(`document.getElementById("ladder-rung").dataset.rung === ${JSON.stringify(rung)}`, undefined, { timeout: 5000 });
  };
  const toggle = async (name: string, label: RegExp, checked: boolean): Promise<void> => {
    const box = page.getByRole("checkbox", { name: label });
    await box.setChecked(checked);
    await page.waitForFunction(`window.demo.ladder.conditions.${name} === ${checked}`, undefined, { timeout: 5000 });
  };
  const shot = async (name: string): Promise<void> => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    await sleep(600); // a render tick of the panel
    await page.locator("#ladder").screenshot({ path: join(SCREENSHOTS, `demo-network-${name}.png`) });
  };

  // The page starts the publisher; the panel's client climbs to the top rung and prices arrive.
  let p = await until((x) => on("websocket")(x) && x.received >= 2, "prices over the WebSocket");
  assert.equal(p.available, true);
  await shown("websocket");
  assert.match((await page.locator("#ladder-path").textContent()) ?? "", new RegExp(`/demo/net/${p.lane}/`));

  // Refuse upgrades: the socket is cut, the upgrade refused twice, the client steps down to SSE.
  await toggle("refuseWebSocket", /Refuse WebSocket upgrades/, true);
  const ws = p.carried.websocket!;
  p = await until((x) => on("sse")(x) && x.carried.sse! >= 1, "prices over SSE after upgrades are refused");
  assert.ok(p.failed.includes("websocket"), "websocket marked blocked");
  await shown("sse");
  assert.match((await page.locator("#ladder-rungs [data-rung=websocket]").textContent()) ?? "", /blocked/);

  // And buffer SSE: no ready event comes in time, twice; the client steps down to long-polling.
  await toggle("bufferSse", /Buffer SSE/, true);
  p = await until((x) => on("long-poll")(x) && x.carried["long-poll"]! >= 1, "prices over long-polling once SSE is buffered");
  await shown("long-poll");
  assert.match((await page.locator("#ladder-wire").textContent()) ?? "", /long-poll: held until there is news/);
  await shot("down");

  // Buffering off: a probe climbs back to SSE; upgrades allowed again: back to the WebSocket.
  await toggle("bufferSse", /Buffer SSE/, false);
  const sse = p.carried.sse!;
  await until((x) => on("sse")(x) && x.carried.sse! > sse, "back up on SSE once buffering is off");
  await toggle("refuseWebSocket", /Refuse WebSocket upgrades/, false);
  p = await until((x) => on("websocket")(x) && x.carried.websocket! > ws, "back up on the WebSocket once upgrades pass");
  await shown("websocket");

  // Drop every connection: the client stays on its rung (the hub is unreachable, not the rung blocked),
  // the hub publishes meanwhile; turned off, it resumes after its last id and gets what it missed.
  await toggle("dropAll", /Drop every connection/, true);
  await until((x) => x.state !== "connected", "the connection dropped");
  const duringDrop = await until((x) => x.published !== null && x.published - x.received - x.missing >= 2, "prices piling up on the hub while the path is down", 10_000);
  assert.equal(duringDrop.failed.length, 0, "no rung was called blocked for a network that is down");
  await shot("dropped");
  await toggle("dropAll", /Drop every connection/, false);
  p = await until((x) => on("websocket")(x) && x.received >= duringDrop.published!, "back, with what was published meanwhile");

  // The rungs visited, in order, and which of them carried prices.
  const moves = p.visited.filter((rung, i) => rung !== p.visited[i - 1]);
  assert.deepEqual(moves, ["websocket", "sse", "long-poll", "sse", "websocket"]);
  for (const rung of ["websocket", "sse", "long-poll"]) assert.ok(p.carried[rung]! >= 1, `${rung} carried prices`);
  const events = (await page.locator("#ladder-events").textContent()) ?? "";
  assert.match(events, /↓ SSE — fallback: websocket/);
  assert.match(events, /↓ long-poll — fallback: sse no ready event/);
  assert.match(events, /↑ SSE — upgrade from long-poll/);
  assert.match(events, /↑ WebSocket — upgrade from sse/);

  // Exact counts, read from the page, and checked against the hub's own log.
  assert.deepEqual(problems, [], "no page errors");
  // The counters render every 500 ms: wait for the one that shows the client's latest count.
  await page.waitForFunction(`document.getElementById("ladder-received").textContent === String(window.demo.ladder.received)`, undefined, { timeout: 5000 });
  const dom = await page.evaluate(`({ received: document.getElementById("ladder-received").textContent, missing: document.getElementById("ladder-missing").textContent,
    repeated: document.getElementById("ladder-repeated").textContent, panel: window.demo.ladder.toJSON() })`) as { received: string; missing: string; repeated: string; panel: Panel };
  p = dom.panel;
  assert.equal(dom.missing, "0");
  assert.equal(dom.repeated, "0");
  assert.equal(Number(dom.received), p.received);
  assert.equal(p.missing, 0);
  assert.equal(p.repeated, 0);
  assert.equal(p.ids.length, p.received);
  const all = (await (await fetch(`${node.url}/api/messages?channel=demo.prices&since=0&limit=1000`)).json()) as Array<{ id: string }>;
  const first = p.ids[0]!;
  const last = p.ids.at(-1)!;
  const hub = all.map((m) => m.id).filter((id) => compareIds(id, first) >= 0 && compareIds(id, last) <= 0);
  assert.deepEqual(p.ids, hub, "every price the hub holds between the first and the last the panel got: once each, in order");
  assert.ok(p.received >= 15, `a real run: ${p.received} prices`);
  await shot("back");
  assert.deepEqual(problems, [], "no page errors");
});
