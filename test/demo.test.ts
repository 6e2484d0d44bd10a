/**
 * The demo page `ladder serve` hands out at `/`, in a real browser (Debian's Chromium driven by
 * playwright-core) against a real `ladder serve` child process: every example receives live data from the
 * built-in publisher, the chat carries messages between two pages, the wire views show the `101` and the
 * SSE `id:` lines, a cut is survived with nothing lost, and screenshots at laptop and phone sizes are saved
 * under artifacts/screenshots/. Also the publisher module and its endpoint on their own. Nothing here
 * downloads a browser.
 *
 * Without /usr/bin/chromium the browser test skips loudly; with CI=true a missing Chromium is a failure.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { compareIds } from "../src/protocol/index.js";
import { DEMO_CHANNELS, DemoPublisher } from "../src/cli/demo-publisher.js";
import { useChromium } from "./helpers/browser.js";

/** The repository root: this file runs as dist/test/demo.test.js. */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "bin", "ladder.js");
const SCREENSHOTS = join(ROOT, "artifacts", "screenshots");
const WAIT = 12_000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------------------
// `ladder serve` as a child process, stopped (SIGTERM, then SIGKILL) after each test.

interface HubProcess {
  readonly url: string;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

async function startHub(t: TestContext, extraArgs: string[] = []): Promise<HubProcess> {
  const args = [BIN, "serve", "--port", "0", "--host", "127.0.0.1", "--log-level", "warn", ...extraArgs];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  void exited.then(() => children.delete(child));
  const hub: HubProcess = {
    url: "",
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const killer = setTimeout(() => child.kill("SIGKILL"), 3000);
        await exited;
        clearTimeout(killer);
      }
    },
  };
  t.after(() => hub.stop());
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hub did not start within 10 s; stdout=${stdout} stderr=${stderr}`)), 10_000);
    child.stdout!.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = /ladder listening on (http:\/\/\S+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`hub exited before listening (code ${code}, signal ${signal}); stderr=${stderr}`));
    });
  });
  return { ...hub, url };
}

async function json(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------------------
// The publisher on its own.

test("demo publisher: feeds the three channels with sequence numbers, stops, resumes its count, and ends with its lease", async () => {
  const sent: Array<{ channel: string; data: { n: number; ts: number; price?: number; text?: string; name?: string } }> = [];
  const publisher = new DemoPublisher({ priceIntervalMs: 10, feedIntervalMs: [5, 15], chatIntervalMs: [5, 15], leaseMs: 400 });
  assert.throws(() => publisher.start(), /not attached/);
  publisher.attach(async (channel, data) => {
    sent.push({ channel, data: data as (typeof sent)[number]["data"] });
  });
  try {
    publisher.start();
    assert.equal(publisher.running, true);
    await sleep(150);
    publisher.stop();
    assert.equal(publisher.running, false);
    const count = sent.length;
    for (const channel of Object.values(DEMO_CHANNELS)) {
      const ns = sent.filter((m) => m.channel === channel).map((m) => m.data.n);
      assert.ok(ns.length >= 2, `${channel} got ${ns.length} messages`);
      assert.deepEqual(ns, ns.map((_, i) => i + 1), `${channel} numbers its messages 1, 2, 3…`);
    }
    for (const m of sent) assert.ok(Math.abs(Date.now() - m.data.ts) < 5000);
    assert.ok(sent.filter((m) => m.channel === DEMO_CHANNELS.prices).every((m) => typeof m.data.price === "number" && m.data.price > 0));
    assert.ok(sent.filter((m) => m.channel === DEMO_CHANNELS.feed).every((m) => typeof m.data.text === "string"));
    assert.ok(sent.filter((m) => m.channel === DEMO_CHANNELS.chat).every((m) => m.data.name === "ladder-bot"));
    await sleep(60);
    assert.equal(sent.length, count, "nothing is published once stopped");

    // Started again, the numbers go on (a page following them sees no false loss); the lease ends it.
    const before = sent.filter((m) => m.channel === DEMO_CHANNELS.prices).length;
    publisher.start();
    await sleep(50);
    const next = sent.filter((m) => m.channel === DEMO_CHANNELS.prices)[before];
    assert.equal(next?.data.n, before + 1);
    const status = publisher.status();
    assert.equal(status.running, true);
    assert.ok(status.stopsAt !== null && status.stopsAt > Date.now());
    await sleep(500);
    assert.equal(publisher.running, false, "the lease ran out");
    const settled = sent.length;
    await sleep(60);
    assert.equal(sent.length, settled);
    publisher.close();
    assert.throws(() => publisher.start(), /shut down/);
  } finally {
    publisher.close();
  }
});

test("demo publisher endpoint on ladder serve: status, start, stop, refusals; absent with --no-demo", { timeout: 30_000 }, async (t) => {
  const hub = await startHub(t);
  const endpoint = `${hub.url}/demo/publisher`;
  const initial = await json(await fetch(endpoint));
  assert.equal(initial.running, false, "off until a page asks");
  assert.deepEqual(initial.channels, DEMO_CHANNELS);
  assert.ok(Math.abs(Date.now() - (initial.now as number)) < 5000);

  const post = (body: string, type = "application/json"): Promise<Response> => fetch(endpoint, { method: "POST", headers: { "content-type": type }, body });
  const started = await post('{"running":true}');
  assert.equal(started.status, 200);
  assert.equal((await json(started)).running, true);
  await sleep(1500);
  const prices = (await (await fetch(`${hub.url}/api/messages?channel=demo.prices&since=0`)).json()) as Array<{ data: { price: number; n: number } }>;
  assert.ok(prices.length >= 1, "prices were published on the hub's real channel");
  assert.equal(typeof prices[0]!.data.price, "number");
  const stopped = await post('{"running":false}');
  assert.equal((await json(stopped)).running, false);

  const bad = await post('{"running":"yes"}');
  assert.equal(bad.status, 400);
  assert.equal(((await json(bad)).error as { code: string }).code, "bad_request");
  assert.equal((await post("{not json")).status, 400);
  assert.equal((await post('{"running":true}', "text/plain")).status, 415);
  const put = await fetch(endpoint, { method: "PUT" });
  assert.equal(put.status, 405);
  assert.equal(put.headers.get("allow"), "GET, HEAD, POST");
  await put.body?.cancel();

  const off = await startHub(t, ["--no-demo"]);
  for (const path of ["/demo/publisher", "/"]) {
    const res = await fetch(`${off.url}${path}`);
    assert.equal(res.status, 404, `${path} with --no-demo`);
    await res.body?.cancel();
  }
});

// ---------------------------------------------------------------------------------------------------------
// The page in a browser.

const chromiumFor = useChromium("demo page test");

interface DemoPage {
  readonly page: Page;
  readonly problems: string[];
  until(expression: string, what: string, timeout?: number): Promise<void>;
  read<T>(expression: string): Promise<T>;
}

async function openDemo(t: TestContext, b: Browser, url: string, viewport: { width: number; height: number }, mobile: boolean): Promise<DemoPage> {
  const context: BrowserContext = await b.newContext({ viewport, isMobile: mobile, hasTouch: mobile, deviceScaleFactor: 1, reducedMotion: "reduce" });
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const problems: string[] = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  const response = await page.goto(`${url}/`);
  assert.equal(response?.status(), 200);
  const read = async <T>(expression: string): Promise<T> => (await page.evaluate(expression)) as T;
  return {
    page,
    problems,
    read,
    async until(expression, what, timeout = WAIT) {
      try {
        await page.waitForFunction(expression, undefined, { timeout, polling: 50 });
      } catch (error) {
        const stats = await read<unknown>("JSON.stringify(window.demo && demo.stats())").catch(() => "(unreadable)");
        throw new Error(`timed out after ${timeout} ms waiting for ${what} (\`${expression}\`); demo.stats() = ${String(stats)}`, { cause: error });
      }
    },
  };
}

/** The ids the hub holds on `channel` from `first` to `last`, both included. */
async function hubIds(base: string, channel: string, first: string, last: string): Promise<string[]> {
  const res = await fetch(`${base}/api/messages?channel=${channel}&since=0&limit=1000`);
  const all = (await res.json()) as Array<{ id: string }>;
  return all.map((m) => m.id).filter((id) => compareIds(id, first) >= 0 && compareIds(id, last) <= 0);
}

/** Everything the page got on a channel, from its first message on, is exactly what the hub holds. */
async function assertNothingLost(demo: DemoPage, base: string, channel: string, received: string): Promise<void> {
  const ids = (await demo.read<string[]>(`${received}.map((r) => r.id)`)).filter((id) => /^\d+-\d+$/.test(id));
  assert.ok(ids.length >= 2, `${channel}: the page got ${ids.length} messages`);
  assert.deepEqual(ids, await hubIds(base, channel, ids[0]!, ids.at(-1)!), `${channel}: every message once, in order`);
}

async function screenshot(page: Page, name: string): Promise<string[]> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.evaluate("window.scrollTo(0, 0)");
  const view = join(SCREENSHOTS, `demo-${name}.png`);
  const full = join(SCREENSHOTS, `demo-${name}-full.png`);
  await page.screenshot({ path: view });
  await page.screenshot({ path: full, fullPage: true });
  for (const path of [view, full]) assert.ok(statSync(path).size > 10_000, `${path} is a real screenshot`);
  return [view, full];
}

test("demo page: live data in every example, the wire view, chat between two pages, a cut survived, screenshots", { timeout: 90_000 }, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const hub = await startHub(t);
  const desk = await openDemo(t, b, hub.url, { width: 1280, height: 800 }, false);
  const { page } = desk;

  // A page a newcomer can find their way around: landmarks, named controls, live regions.
  await page.getByRole("banner").waitFor();
  await page.getByRole("main").waitFor();
  await page.getByRole("navigation", { name: "Examples" }).waitFor();
  assert.equal(await page.getByRole("heading", { level: 1 }).count(), 1);
  const unnamed = await desk.read<string[]>(`[...document.querySelectorAll("button, input, select")]
    .filter((el) => el.type !== "hidden" && !(el.labels?.length || el.getAttribute("aria-label") || el.textContent.trim()))
    .map((el) => el.outerHTML)`);
  assert.deepEqual(unnamed, [], "every control has a name");
  assert.equal(await page.locator("#chat-log").getAttribute("role"), "log");
  assert.equal(await page.locator("#feed-list").getAttribute("aria-live"), "polite");
  await page.keyboard.press("Tab");
  assert.equal(await desk.read("document.activeElement.textContent"), "Skip to the examples");

  // The page starts the publisher; every example receives live data on the hub's channels.
  await page.getByRole("button", { name: "Stop publisher" }).waitFor();
  await desk.until(`document.querySelectorAll("#feed-list li").length >= 1`, "a feed message by interval polling");
  await desk.until(`/^\\d+\\.\\d\\d$/.test(document.getElementById("price").textContent)`, "a price over SSE");
  await desk.until(`demo.stats().sse.messages >= 3`, "three prices over SSE");
  await desk.until(`document.querySelectorAll("#chat-log li").length >= 1`, "the chat bot's line over the WebSocket", 20_000);

  // The wire views: each poll and its empty answer, the SSE id:/data: lines, the WebSocket upgrade.
  const pollWire = (await page.locator("#poll-wire").textContent()) ?? "";
  assert.match(pollWire, /GET \/api\/messages\?channel=demo\.feed&since=now HTTP\/1\.1/);
  assert.match(pollWire, /EMPTY — a wasted round-trip/, "the first poll from since=now comes back empty");
  assert.match(pollWire, /HTTP\/1\.1 200 OK/);
  const sseWire = (await page.locator("#sse-wire").textContent()) ?? "";
  assert.match(sseWire, /GET \/api\/stream\?channel=demo\.prices HTTP\/1\.1/);
  assert.match(sseWire, /content-type: text\/event-stream/);
  assert.match(sseWire, /retry: 2000/);
  assert.match(sseWire, /id: \d+-\d+/, "an SSE id: line");
  assert.match(sseWire, /data: \{"price":\d+(\.\d+)?,"n":\d+,"ts":\d+\}/);
  const wsWire = (await page.locator("#ws-wire").textContent()) ?? "";
  assert.match(wsWire, /GET \/api\/ws HTTP\/1\.1/);
  assert.match(wsWire, /Upgrade: websocket/);
  assert.match(wsWire, /HTTP\/1\.1 101 Switching Protocols/);
  // The chat also asks for who is in the room and names its tab (presence): fields after the guide's two.
  assert.match(wsWire, /\{"type":"join","room":"demo\.chat"[,}]/);

  // Long-polling, chosen from the keyboard: its requests carry wait= and news arrives on them.
  await page.getByRole("radio", { name: "Interval polling" }).focus();
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.getByRole("radio", { name: "Long-polling" }).isChecked(), true);
  await desk.until(`demo.stats()["long-poll"].messages >= 1`, "a feed message by long-polling");
  assert.match((await page.locator("#poll-wire").textContent()) ?? "", /&wait=25 HTTP\/1\.1/);

  // A second page — a phone — and the chat carries messages both ways.
  const phone = await openDemo(t, b, hub.url, { width: 390, height: 844 }, true);
  await desk.until(`demo.chat.client?.state === "connected"`, "the desktop chat connected");
  await phone.until(`demo.chat.client?.state === "connected"`, "the phone chat connected");
  const hello = `hello from the laptop ${process.pid}`;
  await page.getByLabel("Message", { exact: true }).fill(hello);
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await phone.until(`document.getElementById("chat-log").textContent.includes(${JSON.stringify(hello)})`, "the laptop's message on the phone");
  const reply = `hello back from the phone ${process.pid}`;
  await phone.page.getByLabel("Message", { exact: true }).fill(reply);
  await phone.page.getByRole("button", { name: "Send" }).click();
  await desk.until(`document.getElementById("chat-log").textContent.includes(${JSON.stringify(reply)})`, "the phone's reply on the laptop");

  // Cut every connection of the laptop page while the phone talks: SSE comes back by itself with
  // Last-Event-ID, the client's backoff brings the WebSocket back, the held long-poll is asked again.
  const before = await desk.read<Record<string, { messages: number; reconnects: number }>>("demo.stats()");
  await page.getByRole("button", { name: "Cut connections" }).click();
  const during = `said while the laptop was cut off ${process.pid}`;
  await phone.page.getByLabel("Message", { exact: true }).fill(during);
  await phone.page.getByLabel("Message", { exact: true }).press("Enter");
  await desk.until(`demo.stats().sse.reconnects > ${before.sse!.reconnects} && demo.stats().ws.reconnects > ${before.ws!.reconnects}`, "SSE and WebSocket reconnects");
  await desk.until(`demo.chat.client?.state === "connected"`, "the WebSocket back");
  await desk.until(`demo.stats().sse.messages >= ${before.sse!.messages + 3}`, "prices again after the cut");
  await desk.until(`document.getElementById("chat-log").textContent.includes(${JSON.stringify(during)})`, "the message sent during the cut");
  await desk.until(`demo.stats()["long-poll"].reconnects >= 1 && demo.stats()["long-poll"].messages >= ${before["long-poll"]!.messages + 1}`, "the long-poll asked again and delivering");
  const chatText = (await page.locator("#chat-log").textContent()) ?? "";
  assert.equal(chatText.split(during).length - 1, 1, "the message sent during the cut arrives exactly once");
  const sseAfter = (await page.locator("#sse-wire").textContent()) ?? "";
  assert.match(sseAfter, /Last-Event-ID: \d+-\d+/, "the SSE reconnect resumes with Last-Event-ID");
  assert.match((await page.locator("#ws-wire").textContent()) ?? "", /"type":"join","room":"demo\.chat","since":"\d+-\d+"/, "the WebSocket re-joins from its last id");

  const stats = await desk.read<Record<string, { lost: number; duplicates: number }>>("demo.stats()");
  for (const key of ["poll", "long-poll", "sse", "ws"]) {
    assert.equal(stats[key]!.lost, 0, `${key}: nothing lost`);
    assert.equal(stats[key]!.duplicates, 0, `${key}: nothing repeated`);
  }
  await assertNothingLost(desk, hub.url, "demo.prices", "demo.ticker.received");
  await assertNothingLost(desk, hub.url, "demo.feed", "demo.feed.received");
  await assertNothingLost(desk, hub.url, "demo.chat", "demo.chat.received");

  // The comparison table has its measured rows filled for what ran.
  const measured = (await page.locator("#measured").textContent()) ?? "";
  assert.match(measured, /Latency, median/);
  assert.match(measured, /\d+ req → \d+ msg/);

  // Screenshots for people to look at: artifacts/screenshots/demo-{desktop,phone}[-full].png.
  await sleep(600); // one render tick of the counters
  const shots = [...(await screenshot(page, "desktop")), ...(await screenshot(phone.page, "phone"))];
  t.diagnostic(`screenshots: ${shots.join(", ")}`);

  // The publisher stops from the page.
  await page.getByRole("button", { name: "Stop publisher" }).click();
  await page.getByRole("button", { name: "Start publisher" }).waitFor();
  assert.equal((await json(await fetch(`${hub.url}/demo/publisher`))).running, false);

  assert.deepEqual(desk.problems, [], "no errors on the laptop page");
  assert.deepEqual(phone.problems, [], "no errors on the phone page");
});
