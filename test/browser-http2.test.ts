/**
 * Why HTTP/2 matters to SSE, shown in a real browser (Debian's Chromium driven by playwright-core; nothing
 * downloads a browser). A page opens ten EventSource streams to ten channels, then makes a polling fetch.
 * Over HTTP/1.1 — plain http, or TLS with HTTP/2 turned off — Chromium allows six connections per origin:
 * six streams open, the other four and the fetch wait behind them. Over HTTP/2 every stream and the fetch
 * share one connection: all ten deliver and the fetch answers at once. The page's protocol is read from
 * the browser itself (the navigation entry's nextHopProtocol). On the HTTP/2 origin a wss:// WebSocket
 * still works: Chromium opens it over HTTP/1.1 on the same port.
 *
 * Without /usr/bin/chromium the tests skip loudly; with CI=true a missing Chromium is a failure.
 */
import assert from "node:assert/strict";
import { test, type TestContext } from "node:test";
import type { Browser, Page } from "playwright-core";
import { serve, type RunningServer, type ServeOptions } from "../src/index.js";
import { useChromium } from "./helpers/browser.js";

const STREAMS = 10;
/** Chromium's limit of HTTP/1.1 connections per origin (per proxy-less socket group). */
const HTTP1_CONNECTIONS = 6;
/** How long the test watches for a stream or the fetch that should stay blocked. */
const BLOCKED_FOR_MS = 1500;
const TEST = { timeout: 30_000 };

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const chromiumFor = useChromium("browser HTTP/2 tests");

interface PageState {
  opened: boolean[];
  received: unknown[];
  fetchMs: number | null;
  errors: number;
}

/** A hub, a fresh browser context (trusting the development certificate) and a page on the hub's origin. */
async function setUp(t: TestContext, b: Browser, options: ServeOptions): Promise<{ running: RunningServer; page: Page }> {
  const running = await serve({ port: 0, host: "127.0.0.1", ...options });
  t.after(() => running.close());
  const context = await b.newContext({ ignoreHTTPSErrors: true });
  // Closed before the hub (after hooks run last-in first-out), so the hub's drain has nothing left to wait for.
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const response = await page.goto(`${running.url}/healthz`);
  assert.equal(response?.status(), 200);
  return { running, page };
}

const protocolOf = (page: Page): Promise<string> =>
  page.evaluate(() => (performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming).nextHopProtocol);

/** Opens the ten streams in the page; each marks itself opened on the hub's `ready` event. */
async function openStreams(page: Page): Promise<void> {
  await page.evaluate((count) => {
    const state = { opened: new Array<boolean>(count).fill(false), received: new Array<unknown>(count).fill(null), fetchMs: null, errors: 0 };
    const sources: EventSource[] = [];
    for (let i = 0; i < count; i++) {
      const source = new EventSource(`/api/stream?channel=cap${i}`);
      source.addEventListener("ready", () => (state.opened[i] = true));
      source.onmessage = (event) => (state.received[i] = JSON.parse(event.data as string));
      source.onerror = () => state.errors++;
      sources.push(source);
    }
    Object.assign(window, { state, sources });
  }, STREAMS);
}

/** Starts the polling fetch; the page records how long it took once it answers. */
async function startFetch(page: Page): Promise<void> {
  await page.evaluate(() => {
    const state = (window as unknown as { state: PageState }).state;
    const started = performance.now();
    void fetch("/api/messages?channel=cap0")
      .then((res) => res.json())
      .then(() => (state.fetchMs = performance.now() - started));
  });
}

const readState = (page: Page): Promise<PageState> => page.evaluate(() => (window as unknown as { state: PageState }).state);

async function publishToAll(running: RunningServer): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < STREAMS; i++) ids.push((await running.hub.publish(`cap${i}`, { stream: i })).id);
  return ids;
}

async function assertHttp1Cap(t: TestContext, options: ServeOptions, scheme: "http:" | "https:"): Promise<void> {
  const b = chromiumFor(t);
  if (!b) return;
  const { running, page } = await setUp(t, b, options);
  assert.equal(new URL(running.url).protocol, scheme);
  assert.equal(await protocolOf(page), "http/1.1");
  await openStreams(page);
  await page.waitForFunction((n) => (window as unknown as { state: PageState }).state.opened.filter(Boolean).length >= n, HTTP1_CONNECTIONS);
  await startFetch(page);
  await sleep(BLOCKED_FOR_MS);
  await publishToAll(running);
  await sleep(300);
  const state = await readState(page);
  // Which six open first depends on which connection is ready first (with TLS, handshakes finish in any order).
  assert.equal(state.opened.filter(Boolean).length, HTTP1_CONNECTIONS, `six streams open, four wait: ${JSON.stringify(state.opened)}`);
  assert.equal(running.hub.stats().byKind.sse, HTTP1_CONNECTIONS, "the hub sees six streams");
  assert.deepEqual(
    state.received.map((r) => r !== null),
    state.opened,
    "exactly the open streams deliver",
  );
  assert.equal(state.fetchMs, null, `the polling fetch is stuck behind the streams for ${BLOCKED_FOR_MS} ms`);
  // Closing the streams frees the connections: the waiting fetch then goes through.
  await page.evaluate(() => {
    for (const source of (window as unknown as { sources: EventSource[] }).sources) source.close();
  });
  await page.waitForFunction(() => (window as unknown as { state: PageState }).state.fetchMs !== null);
}

test("HTTP/1.1 (plain http): six EventSource streams open, the rest and a polling fetch wait", TEST, async (t) => {
  await assertHttp1Cap(t, {}, "http:");
});

test("HTTP/1.1 over TLS (http2 off): the same six-connection cap", TEST, async (t) => {
  await assertHttp1Cap(t, { tls: "self-signed", http2: false }, "https:");
});

test("HTTP/2: all ten EventSource streams deliver on one connection, the polling fetch answers at once, wss works", TEST, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const { running, page } = await setUp(t, b, { tls: "self-signed" });
  assert.equal(await protocolOf(page), "h2");
  await openStreams(page);
  await page.waitForFunction(() => (window as unknown as { state: PageState }).state.opened.every(Boolean));
  await startFetch(page);
  await page.waitForFunction(() => (window as unknown as { state: PageState }).state.fetchMs !== null, undefined, { timeout: 2000 });
  const ids = await publishToAll(running);
  await page.waitForFunction(() => (window as unknown as { state: PageState }).state.received.every((r) => r !== null));
  const state = await readState(page);
  assert.ok(state.fetchMs! < 1000, `the fetch answered in ${Math.round(state.fetchMs!)} ms`);
  assert.deepEqual(state.received, ids.map((_, i) => ({ stream: i })));
  assert.equal(running.hub.stats().byKind.sse, STREAMS);
  const protocols = await page.evaluate(() =>
    performance.getEntriesByType("resource").map((e) => [(e as PerformanceResourceTiming).name, (e as PerformanceResourceTiming).nextHopProtocol]),
  );
  assert.ok(protocols.length > 0 && protocols.every(([, p]) => p === "h2"), `every request went over h2: ${JSON.stringify(protocols)}`);
  assert.equal(state.errors, 0);

  // A WebSocket from the HTTP/2 page: Chromium opens wss:// over HTTP/1.1 on the same port.
  const frame = page.evaluate(
    () =>
      new Promise<unknown>((resolve, reject) => {
        const ws = new WebSocket(`wss://${location.host}/api/ws`);
        ws.onopen = () => ws.send(JSON.stringify({ type: "join", room: "cap0" }));
        ws.onmessage = (event) => {
          const f = JSON.parse(event.data as string) as { type: string };
          if (f.type === "joined") ws.send(JSON.stringify({ type: "publish", room: "cap0", data: "from wss", ref: 1 }));
          if (f.type === "message") {
            ws.close();
            resolve(f);
          }
        };
        ws.onerror = () => reject(new Error("WebSocket failed"));
      }),
  );
  const message = (await frame) as { data: unknown; room: string };
  assert.deepEqual([message.room, message.data], ["cap0", "from wss"]);
  await page.waitForFunction(() => JSON.stringify((window as unknown as { state: PageState }).state.received[0]) === '"from wss"');
});
