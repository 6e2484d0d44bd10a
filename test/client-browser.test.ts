/**
 * Ladder's own client in a real browser: Debian's Chromium, driven by playwright-core, imports the bundle
 * the hub serves (`import { createClient } from "/ladder-client.js"`) into a page on the proxy's origin, so
 * every request the client makes crosses test/helpers/proxy.ts, which refuses upgrades, refuses or buffers
 * SSE, freezes, goes down and cuts like real networks do. Messages are published from Node straight to the
 * hub over HTTP. Nothing here downloads a browser.
 *
 * Without /usr/bin/chromium the tests skip loudly; with CI=true a missing Chromium is a failure.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test, type TestContext } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Browser, Page } from "playwright-core";
import { serve, type RunningServer } from "../src/index.js";
import { staticFiles } from "../src/server/edge/static.js";
import { chromiumAvailable, launchChromium, requireBrowser as browserOrSkip } from "./helpers/browser.js";
import { startProxy, type Proxy } from "./helpers/proxy.js";
import { publish, sleep } from "./helpers/server.js";

/** The repository root: this file runs as dist/test/client-browser.test.js. */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TEST_TIMEOUT = 30_000;
const WAIT = 8_000;
/** The hub's SSE heartbeat comments and WebSocket pings. */
const HUB_HEARTBEAT_MS = 250;
/** The client's heartbeat timeout in these tests. */
const HEARTBEAT_TIMEOUT_MS = 1500;

/** Client options for the page (JSON; `fixedRandom` becomes `random: () => fixedRandom` in the page). */
interface PageClientOptions {
  readonly transport?: string | readonly string[];
  readonly backoff?: { minMs?: number; maxMs?: number; factor?: number };
  readonly probe?: { minMs?: number; maxMs?: number; factor?: number };
  readonly heartbeatTimeoutMs?: number;
  readonly openTimeoutMs?: number;
  readonly pollIntervalMs?: number;
  readonly longPollWaitSeconds?: number;
  readonly fixedRandom?: number;
}

const BASE_OPTIONS: PageClientOptions = {
  backoff: { minMs: 50, maxMs: 200 },
  // No climbing back unless a test asks for it.
  probe: { minMs: 60_000, maxMs: 60_000 },
  heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
  openTimeoutMs: 1500,
  pollIntervalMs: 200,
  longPollWaitSeconds: 2,
};

/** The page the tests run in: nothing but the origin. */
const BLANK_PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ladder client test</title></head><body></body></html>`;

// ---------------------------------------------------------------------------------------------------------
// One hub (in-process, serving the freshly built bundle at /ladder-client.js), one proxy, one browser.

let hub: RunningServer | null = null;
let proxy: Proxy | null = null;
let browser: Browser | null = null;
let bundleDir: string | null = null;

before(async () => {
  if (!chromiumAvailable("client browser tests")) return;
  // The bundle of the current source, exactly as `npm run build` makes it.
  assert.equal(resolve(process.cwd()), resolve(ROOT), "run the tests from the repository root (node scripts/test.mjs)");
  const { bundleClient } = (await import(pathToFileURL(join(ROOT, "scripts", "build-client.mjs")).href)) as {
    bundleClient(): Promise<{ code: Uint8Array }>;
  };
  const { code } = await bundleClient();
  bundleDir = mkdtempSync(join(tmpdir(), "ladder-client-browser-"));
  const clientBundle = join(bundleDir, "ladder-client.js");
  writeFileSync(clientBundle, code);
  // The hub's static handler serves the page at / as it serves demo/, but from a page of our own: the real
  // demo runs clients of its own, whose connections, timers and requests would mix with the ones under test.
  writeFileSync(join(bundleDir, "index.html"), BLANK_PAGE);
  hub = await serve({
    port: 0,
    host: "127.0.0.1",
    heartbeatMs: HUB_HEARTBEAT_MS,
    fallback: staticFiles({ clientBundle, demoDir: bundleDir }),
  });
  proxy = await startProxy(hub.url);
  browser = await launchChromium("client browser tests");
});

after(async () => {
  await browser?.close().catch(() => undefined);
  browser = null;
  await proxy?.close().catch(() => undefined);
  await hub?.close().catch(() => undefined);
  if (bundleDir) rmSync(bundleDir, { recursive: true, force: true });
});

function resetRules(): void {
  if (!proxy) return;
  proxy.rules.refuseUpgrades = false;
  proxy.rules.sse = "pass";
  proxy.rules.frozen = false;
  proxy.rules.down = false;
}

/** Null (after skipping or failing the test) when there is no browser to run in. */
function requireBrowser(t: TestContext): { browser: Browser; hub: RunningServer; proxy: Proxy } | null {
  return browserOrSkip(t, browser && hub && proxy ? { browser, hub, proxy } : null);
}

let seq = 0;
const channel = (): string => `b${process.pid}x${++seq}`;

// ---------------------------------------------------------------------------------------------------------
// The page: instrumentation first (what the client schedules and requests), then the client as a module.

/**
 * Runs before any page script. Records the timers, fetches and WebSockets that code in /ladder-client.js
 * starts (told apart by the call stack), so a test can see what work the client still has pending.
 */
const INSTRUMENT = `(() => {
  const fromClient = () => (new Error().stack || "").includes("/ladder-client.js");
  const probe = { timers: new Map(), calls: [], sockets: [] };
  window.__ladderProbe = probe;
  const setT = window.setTimeout.bind(window);
  const clearT = window.clearTimeout.bind(window);
  const setI = window.setInterval.bind(window);
  const clearI = window.clearInterval.bind(window);
  window.setTimeout = function (fn, ms, ...args) {
    if (!fromClient() || typeof fn !== "function") return setT(fn, ms, ...args);
    const id = setT(() => { probe.timers.delete(id); fn(...args); }, ms);
    probe.timers.set(id, { kind: "timeout", ms, at: performance.now(), stack: (new Error().stack || "").split("\\n").slice(2, 6).join(" | ") });
    return id;
  };
  window.clearTimeout = function (id) { probe.timers.delete(id); return clearT(id); };
  window.setInterval = function (fn, ms, ...args) {
    const id = setI(fn, ms, ...args);
    if (fromClient()) probe.timers.set(id, { kind: "interval", ms, at: performance.now() });
    return id;
  };
  window.clearInterval = function (id) { probe.timers.delete(id); return clearI(id); };
  const realFetch = window.fetch;
  window.fetch = function (input, init) {
    if (fromClient()) probe.calls.push({ kind: "fetch", url: String(input), at: performance.now() });
    return realFetch.call(this, input, init);
  };
  const RealWebSocket = window.WebSocket;
  window.WebSocket = class extends RealWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      if (fromClient()) {
        probe.calls.push({ kind: "websocket", url: String(url), at: performance.now(), stack: (new Error().stack || "").split("\\n").slice(1, 8).join(" | ") });
        probe.sockets.push(this);
      }
    }
  };
})();`;

/** The harness: starts named clients with the page's own origin as the hub and records what they report. */
const HARNESS = `
import { createClient } from "/ladder-client.js";
const clients = {};
const now = () => Math.round(performance.now());
window.ladder = {
  clients,
  start(name, channel, options) {
    const { fixedRandom, ...rest } = options;
    const client = createClient(fixedRandom === undefined ? rest : { ...rest, random: () => fixedRandom });
    const rec = { client, channel, messages: [], gaps: [], transports: [], states: [], errors: [] };
    client.on("transport", (e) => rec.transports.push({ transport: e.transport, reason: e.reason, at: now() }));
    client.on("state", (e) => rec.states.push({ state: e.newState, at: now() }));
    client.on("error", (e) => rec.errors.push({ transport: e.transport, reason: e.reason, at: now() }));
    const subscription = client.subscribe(channel);
    subscription.on("message", (m) => rec.messages.push(m));
    subscription.on("gap", (g) => rec.gaps.push(g));
    clients[name] = rec;
  },
  view(name) {
    const rec = clients[name];
    return {
      state: rec.client.state,
      transport: rec.client.transport,
      failed: rec.client.failedTransports,
      cursor: rec.client.cursor(rec.channel),
      messages: rec.messages.map((m) => ({ id: m.id, data: m.data })),
      gaps: rec.gaps,
      transports: rec.transports,
      states: rec.states.map((s) => s.state + "@" + s.at),
      errors: rec.errors,
      now: now(),
    };
  },
};
window.ladderReady = true;
`;

interface View {
  state: string;
  transport: string | null;
  failed: string[];
  cursor: string | null;
  messages: Array<{ id: string; data: unknown }>;
  gaps: unknown[];
  transports: Array<{ transport: string; reason: string; at: number }>;
  states: string[];
  errors: Array<{ transport: string; reason: string; at: number }>;
  now: number;
}

interface Session {
  readonly page: Page;
  readonly pageErrors: Error[];
  start(name: string, channel: string, options?: PageClientOptions): Promise<void>;
  view(name: string): Promise<View>;
  /** Waits for a page expression; `c` in it is the named client's record ({client, messages, …}). */
  until(name: string, expression: string, what: string, timeout?: number): Promise<void>;
}

async function openSession(t: TestContext, b: Browser, origin: string): Promise<Session> {
  const context = await b.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const pageErrors: Error[] = [];
  page.on("pageerror", (error) => pageErrors.push(error));
  await page.addInitScript({ content: INSTRUMENT });
  // The hub serves the page at /, here through the proxy: the page's origin is the proxy's.
  const response = await page.goto(`${origin}/`);
  assert.equal(response?.status(), 200);
  await page.addScriptTag({ type: "module", content: HARNESS });
  await page.waitForFunction("window.ladderReady === true", undefined, { timeout: WAIT });
  const view = async (name: string): Promise<View> => (await page.evaluate(`ladder.view(${JSON.stringify(name)})`)) as View;
  return {
    page,
    pageErrors,
    async start(name, ch, options = {}) {
      await page.evaluate(`ladder.start(${JSON.stringify(name)}, ${JSON.stringify(ch)}, ${JSON.stringify({ ...BASE_OPTIONS, ...options })})`);
    },
    view,
    async until(name, expression, what, timeout = WAIT) {
      const predicate = `(() => { const c = ladder.clients[${JSON.stringify(name)}]; return ${expression}; })()`;
      try {
        await page.waitForFunction(predicate, undefined, { timeout, polling: 25 });
      } catch (error) {
        const state = await view(name).then(
          (v) => JSON.stringify(v),
          () => "(unreadable)",
        );
        throw new Error(`timed out after ${timeout} ms waiting for ${what} (\`${expression}\`); client ${name} = ${state}`, { cause: error });
      }
    },
  };
}

const LIVE = `c.client.state === "connected" && c.client.cursor(c.channel) !== null`;

function short(reason: string): string {
  return reason.split(":")[0]!;
}

/**
 * Cut, publish while cut, heal: the messages published while the connection was down arrive exactly once,
 * in order, and delivery goes on live afterwards. Returns the client's view after the heal.
 */
async function cutPublishHeal(s: Session, p: Proxy, h: RunningServer, name: string, ch: string): Promise<View> {
  const first = await publish(h.url, { n: 0, note: "before the cut" }, ch);
  await s.until(name, `c.messages.length >= 1`, "the first message");
  p.rules.down = true;
  p.cutAll();
  await s.until(name, `c.client.state !== "connected"`, "the cut noticed", 5000);
  const missed: string[] = [];
  for (let i = 1; i <= 3; i++) missed.push((await publish(h.url, { n: i, note: "published while cut" }, ch)).id);
  await sleep(300);
  p.rules.down = false;
  await s.until(name, `c.messages.length >= 4`, "the missed messages after the heal", 12_000);
  await s.until(name, `c.client.state === "connected"`, "connected again", 12_000);
  const live = await publish(h.url, { n: 4, note: "live after the heal" }, ch);
  await s.until(name, `c.messages.length >= 5`, "a live message after the heal");
  await sleep(300); // room for a duplicate to show up
  const view = await s.view(name);
  assert.deepEqual(
    view.messages.map((m) => m.id),
    [first.id, ...missed, live.id],
    "every message exactly once, in order, across the cut",
  );
  assert.deepEqual(
    view.messages.map((m) => (m.data as { n: number }).n),
    [0, 1, 2, 3, 4],
  );
  assert.deepEqual(view.gaps, []);
  return view;
}

function timeline(view: View): string {
  return view.transports.map((e) => `${e.transport} (${e.reason}) @${e.at}`).join(" → ");
}

// ---------------------------------------------------------------------------------------------------------
// a. auto picks WebSocket.

test("auto picks WebSocket first, with reason \"initial\", and delivers and publishes over it", { timeout: TEST_TIMEOUT }, async (t) => {
  const env = requireBrowser(t);
  if (!env) return;
  const s = await openSession(t, env.browser, env.proxy.url);
  const ch = channel();
  await s.start("a", ch, { transport: "auto" });
  await s.until("a", LIVE, "connected and live");
  let view = await s.view("a");
  assert.equal(view.transport, "websocket");
  assert.deepEqual(
    view.transports.map((e) => [e.transport, e.reason]),
    [["websocket", "initial"]],
  );
  assert.deepEqual(view.failed, []);
  const fromNode = await publish(env.hub.url, { from: "node" }, ch);
  const fromPage = (await s.page.evaluate(`ladder.clients.a.client.publish(${JSON.stringify(ch)}, { from: "page" })`)) as { id: string; channel: string };
  assert.equal(fromPage.channel, ch);
  await s.until("a", `c.messages.length >= 2`, "both messages");
  await sleep(200);
  view = await s.view("a");
  assert.deepEqual(view.messages, [
    { id: fromNode.id, data: { from: "node" } },
    { id: fromPage.id, data: { from: "page" } },
  ]);
  // The publish went over the socket: the only things the client opened were one WebSocket.
  const calls = (await s.page.evaluate("__ladderProbe.calls.map((c) => c.kind + ' ' + new URL(c.url).pathname)")) as string[];
  assert.deepEqual(calls, ["websocket /api/ws"], `only one WebSocket; client: ${JSON.stringify(view)}; calls: ${JSON.stringify(await s.page.evaluate("__ladderProbe.calls"))}`);
  await s.page.evaluate("ladder.clients.a.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

// ---------------------------------------------------------------------------------------------------------
// b. Down the ladder, and nothing lost or repeated across a cut on the rung it landed on.

test("upgrades refused → SSE; a cut heals with the missed messages exactly once, in order", { timeout: TEST_TIMEOUT }, async (t) => {
  const env = requireBrowser(t);
  if (!env) return;
  t.after(resetRules);
  env.proxy.rules.refuseUpgrades = true;
  const s = await openSession(t, env.browser, env.proxy.url);
  const ch = channel();
  await s.start("b", ch);
  await s.until("b", `${LIVE} && c.client.transport === "sse"`, "live on SSE");
  let view = await s.view("b");
  assert.deepEqual(
    view.transports.map((e) => `${e.transport}:${short(e.reason)}`),
    ["websocket:initial", "sse:fallback"],
  );
  assert.match(view.transports[1]!.reason, /^fallback: websocket /);
  assert.deepEqual(view.failed, ["websocket"]);
  view = await cutPublishHeal(s, env.proxy, env.hub, "b", ch);
  t.diagnostic(`rungs: ${timeline(view)}`);
  // Where it lands depends on when the heal falls in its walk down the ladder (see the climbing test below).
  assert.ok(["sse", "long-poll", "poll"].includes(view.transport!), `on a rung the proxy lets through: ${view.transport}`);
  await s.page.evaluate("ladder.clients.b.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

test("upgrades and SSE refused → long-poll; a cut heals with the missed messages exactly once, in order", { timeout: TEST_TIMEOUT }, async (t) => {
  const env = requireBrowser(t);
  if (!env) return;
  t.after(resetRules);
  env.proxy.rules.refuseUpgrades = true;
  env.proxy.rules.sse = "refuse";
  const s = await openSession(t, env.browser, env.proxy.url);
  const ch = channel();
  await s.start("b", ch);
  await s.until("b", `${LIVE} && c.client.transport === "long-poll"`, "live on long-poll");
  let view = await s.view("b");
  assert.deepEqual(
    view.transports.map((e) => `${e.transport}:${short(e.reason)}`),
    ["websocket:initial", "sse:fallback", "long-poll:fallback"],
  );
  assert.match(view.transports[2]!.reason, /^fallback: sse stream answered 502/);
  assert.deepEqual([...view.failed].sort(), ["sse", "websocket"]);
  view = await cutPublishHeal(s, env.proxy, env.hub, "b", ch);
  t.diagnostic(`rungs: ${timeline(view)}`);
  assert.ok(["long-poll", "poll"].includes(view.transport!), `on a rung the proxy lets through: ${view.transport}`);
  await s.page.evaluate("ladder.clients.b.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

test("upgrades refused and SSE buffered → the open timeout steps over SSE to long-poll; a cut heals exactly once, in order", { timeout: TEST_TIMEOUT }, async (t) => {
  const env = requireBrowser(t);
  if (!env) return;
  t.after(resetRules);
  env.proxy.rules.refuseUpgrades = true;
  env.proxy.rules.sse = "buffer";
  const s = await openSession(t, env.browser, env.proxy.url);
  const ch = channel();
  const openTimeoutMs = 1000;
  await s.start("b", ch, { openTimeoutMs });
  await s.until("b", `${LIVE} && c.client.transport === "long-poll"`, "live on long-poll");
  let view = await s.view("b");
  assert.deepEqual(
    view.transports.map((e) => `${e.transport}:${short(e.reason)}`),
    ["websocket:initial", "sse:fallback", "long-poll:fallback"],
  );
  assert.match(view.transports[2]!.reason, /^fallback: sse no ready event within the open timeout/);
  // The buffered stream was given up after two open timeouts (a rung is blocked after two strikes while the
  // hub answers), not before and not much later.
  const buffered = view.transports[2]!.at - view.transports[1]!.at;
  assert.ok(buffered >= 2 * openTimeoutMs - 50 && buffered < 2 * openTimeoutMs + 1500, `SSE given up after ${buffered} ms (open timeout ${openTimeoutMs} ms)`);
  view = await cutPublishHeal(s, env.proxy, env.hub, "b", ch);
  t.diagnostic(`rungs: ${timeline(view)}`);
  assert.ok(["long-poll", "poll"].includes(view.transport!), `on a rung the proxy lets through: ${view.transport}`);
  await s.page.evaluate("ladder.clients.b.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

// ---------------------------------------------------------------------------------------------------------
// c. Frozen peers.

for (const rung of ["websocket", "sse"] as const) {
  test(`a frozen ${rung} peer is detected by heartbeats within the bound and replaced; the message from the freeze arrives once`, { timeout: TEST_TIMEOUT }, async (t) => {
    const env = requireBrowser(t);
    if (!env) return;
    t.after(resetRules);
    if (rung === "sse") env.proxy.rules.refuseUpgrades = true;
    const s = await openSession(t, env.browser, env.proxy.url);
    const ch = channel();
    await s.start("c", ch);
    await s.until("c", `${LIVE} && c.client.transport === ${JSON.stringify(rung)}`, `live on ${rung}`);
    if (rung === "sse") env.proxy.rules.refuseUpgrades = false; // the probe is a minute away; only the freeze matters
    const endedBefore = (await s.view("c")).errors.length; // the refused upgrade, on the way to SSE
    // A quiet channel is not a dead connection: heartbeats keep it up for twice the timeout.
    await sleep(2 * HEARTBEAT_TIMEOUT_MS);
    let view = await s.view("c");
    assert.equal(view.state, "connected", `a quiet ${rung} stayed up: ${JSON.stringify(view)}`);
    assert.deepEqual(view.errors.slice(endedBefore), [], "no rung ended while the channel was merely quiet");
    const before = await publish(env.hub.url, "before the freeze", ch);
    await s.until("c", `c.messages.length >= 1`, "the message before the freeze");

    env.proxy.rules.frozen = true;
    const frozenAt = Date.now();
    const during = await publish(env.hub.url, "during the freeze", ch);
    await s.until("c", `c.client.state !== "connected"`, "the freeze noticed", 5000);
    const noticed = Date.now() - frozenAt;
    // WebSocket: an application ping every third of the timeout, so at most timeout + timeout/3; SSE: the
    // timeout after the last heartbeat comment. Plus slack for polling and a loaded machine.
    const bound = Math.ceil((HEARTBEAT_TIMEOUT_MS * 4) / 3) + 600;
    t.diagnostic(`${rung} freeze noticed after ${noticed} ms (bound ${bound} ms)`);
    assert.ok(noticed <= bound, `freeze noticed after ${noticed} ms, bound ${bound} ms`);
    view = await s.view("c");
    const ended = view.errors[endedBefore];
    assert.equal(ended?.transport, rung);
    assert.match(ended!.reason, /heartbeat/, `ended for its heartbeat: ${JSON.stringify(view.errors)}`);
    assert.equal(view.messages.length, 1, "nothing crossed the frozen proxy");

    // Thaw; the frozen connections (whose bytes the proxy dropped) are gone for good.
    env.proxy.rules.frozen = false;
    env.proxy.cutAll();
    await s.until("c", `c.messages.length >= 2 && c.client.state === "connected"`, "the message from the freeze, after the replacement", 12_000);
    const afterwards = await publish(env.hub.url, "after the freeze", ch);
    await s.until("c", `c.messages.length >= 3`, "a live message after the replacement");
    await sleep(300);
    view = await s.view("c");
    t.diagnostic(`rungs: ${timeline(view)}`);
    assert.deepEqual(
      view.messages.map((m) => m.id),
      [before.id, during.id, afterwards.id],
      "each message once, in order",
    );
    assert.ok(view.states.filter((x) => x.startsWith("connecting@")).length >= 2, "a new connection replaced the frozen one");
    await s.page.evaluate("ladder.clients.c.client.close()");
    assert.deepEqual(s.pageErrors, []);
  });
}

test("a network that black-holes for a while: once it works again the client gets back to SSE, not stuck below it", { timeout: TEST_TIMEOUT }, async (t) => {
  // Behind a proxy that refuses upgrades, the best rung is SSE. While the network swallows everything, each
  // attempt fails before delivering; the hub does not answer a plain request either, so the client must take
  // it for an outage (back off and retry SSE), not for SSE being blocked — and be on SSE when it heals.
  const env = requireBrowser(t);
  if (!env) return;
  t.after(resetRules);
  env.proxy.rules.refuseUpgrades = true;
  const s = await openSession(t, env.browser, env.proxy.url);
  const ch = channel();
  await s.start("bh", ch, { openTimeoutMs: 1000, probe: { minMs: 300, maxMs: 600 } });
  await s.until("bh", `${LIVE} && c.client.transport === "sse"`, "live on SSE");
  const first = await publish(env.hub.url, "before", ch);
  await s.until("bh", `c.messages.length >= 1`, "the first message");
  env.proxy.rules.frozen = true;
  const during = await publish(env.hub.url, "while black-holed", ch);
  await s.until("bh", `c.client.state !== "connected"`, "the silence noticed", 8000);
  await sleep(3000);
  const walked = (await s.view("bh")).transports.map((x: { transport: string }) => x.transport);
  assert.ok(!walked.includes("long-poll") && !walked.includes("poll"), `an outage is not a blocked rung: ${walked.join(" → ")}`);
  env.proxy.rules.frozen = false;
  env.proxy.cutAll(); // what was swallowed is gone
  await s.until("bh", `c.messages.length >= 2 && c.client.state === "connected"`, "the message from the outage", 8000);
  const healedAt = (await s.view("bh")).now;
  try {
    await s.until("bh", `c.client.transport === "sse"`, "back on SSE within 4 s of the network working again", 4000);
  } finally {
    const view = await s.view("bh");
    t.diagnostic(`rungs: ${timeline(view)}`);
    const calls = (await s.page.evaluate(
      `__ladderProbe.calls.filter((c) => c.at > ${healedAt} && !c.url.includes("/api/messages")).map((c) => c.kind + " " + new URL(c.url).pathname)`,
    )) as string[];
    t.diagnostic(`non-poll requests after the heal: ${JSON.stringify(calls)}`);
  }
  const last = await publish(env.hub.url, "after", ch);
  await s.until("bh", `c.messages.length >= 3`, "a live message on SSE");
  await sleep(300);
  assert.deepEqual(
    (await s.view("bh")).messages.map((m) => m.id),
    [first.id, during.id, last.id],
  );
  await s.page.evaluate("ladder.clients.bh.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

// ---------------------------------------------------------------------------------------------------------
// d. Climbing back.

test("after falling back to SSE, a probe climbs back to WebSocket once upgrades work, losing and repeating nothing", { timeout: TEST_TIMEOUT }, async (t) => {
  const env = requireBrowser(t);
  if (!env) return;
  t.after(resetRules);
  env.proxy.rules.refuseUpgrades = true;
  const s = await openSession(t, env.browser, env.proxy.url);
  const ch = channel();
  await s.start("d", ch, { probe: { minMs: 200, maxMs: 400 } });
  await s.until("d", `${LIVE} && c.client.transport === "sse"`, "live on SSE");
  // Publish steadily across the handover.
  const published: string[] = [];
  let publishing = true;
  let upgradedAfter = -1;
  const publisher = (async () => {
    for (let i = 0; publishing && i < 400; i++) {
      published.push((await publish(env.hub.url, i, ch)).id);
      await sleep(10);
    }
  })();
  try {
    await sleep(400);
    env.proxy.rules.refuseUpgrades = false;
    const allowedAt = Date.now();
    await s.until("d", `c.client.transport === "websocket"`, "climbed back to WebSocket", 10_000);
    upgradedAfter = Date.now() - allowedAt;
    await sleep(400);
  } finally {
    publishing = false;
    await publisher;
  }
  t.diagnostic(`climbed back ${upgradedAfter} ms after upgrades were allowed; ${published.length} messages published across the handover`);
  await s.until("d", `c.messages.length >= ${published.length}`, `all ${published.length} messages`);
  await sleep(300);
  const view = await s.view("d");
  const ids = view.messages.map((m) => m.id);
  const repeated = ids.filter((id, i) => ids.indexOf(id) !== i);
  assert.deepEqual(repeated, [], "no message twice");
  assert.deepEqual(ids, published, "every message once, in order, across the handover");
  assert.deepEqual(
    view.transports.map((e) => `${e.transport}:${short(e.reason)}`),
    ["websocket:initial", "sse:fallback", "websocket:upgrade from sse"],
  );
  assert.equal(view.state, "connected");
  assert.deepEqual(view.failed, [], "a successful probe clears the failure");
  // The SSE rung was closed, not left running beside the socket: no stream is reopened after the upgrade.
  const upgradeAt = view.transports[2]!.at;
  const late = (await s.page.evaluate(`__ladderProbe.calls.filter((c) => c.at > ${upgradeAt} && c.url.includes("/api/stream")).length`)) as number;
  assert.equal(late, 0, "no SSE request after the upgrade");
  await s.page.evaluate("ladder.clients.d.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

test("after stepping down to long-poll, the probe climbs to SSE when SSE works again and upgrades stay refused", { timeout: TEST_TIMEOUT }, async (t) => {
  // The same situation arises whenever an outage heals while the client is partway down the ladder: every
  // rung it tried while the hub was unreachable counts as blocked, so it can land on long-poll or poll
  // behind a proxy that only refuses upgrades. The probe must be able to bring it back to SSE.
  const env = requireBrowser(t);
  if (!env) return;
  t.after(resetRules);
  env.proxy.rules.refuseUpgrades = true;
  env.proxy.rules.sse = "refuse";
  const s = await openSession(t, env.browser, env.proxy.url);
  const ch = channel();
  await s.start("d2", ch, { probe: { minMs: 200, maxMs: 400 } });
  await s.until("d2", `${LIVE} && c.client.transport === "long-poll"`, "live on long-poll");
  const first = await publish(env.hub.url, "on long-poll", ch);
  await s.until("d2", `c.messages.length >= 1`, "a message over long-poll");
  env.proxy.rules.sse = "pass";
  const passAt = (await s.view("d2")).now;
  try {
    await s.until("d2", `c.client.transport === "sse"`, "climbed to SSE (upgrades are still refused)", 4000);
  } finally {
    const probes = (await s.page.evaluate(
      `__ladderProbe.calls.filter((c) => c.at > ${passAt}).map((c) => c.kind + " " + new URL(c.url).pathname)`,
    )) as string[];
    t.diagnostic(`requests the client started after SSE was let through: ${JSON.stringify(probes.filter((p) => !p.includes("/api/messages")))}`);
  }
  const second = await publish(env.hub.url, "on SSE", ch);
  await s.until("d2", `c.messages.length >= 2`, "a message over SSE");
  await sleep(300);
  const view = await s.view("d2");
  assert.deepEqual(
    view.messages.map((m) => m.id),
    [first.id, second.id],
  );
  await s.page.evaluate("ladder.clients.d2.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

// ---------------------------------------------------------------------------------------------------------
// e. online / visibilitychange cut a pending backoff short.

test("`online` and `visibilitychange` to visible cut a pending 20 s backoff short", { timeout: TEST_TIMEOUT }, async (t) => {
  const env = requireBrowser(t);
  if (!env) return;
  const s = await openSession(t, env.browser, env.proxy.url);
  const ch = channel();
  // Full jitter with random() = 0.99: every backoff is 19.8 s.
  await s.start("e", ch, { backoff: { minMs: 20_000, maxMs: 20_000 }, fixedRandom: 0.99 });
  await s.until("e", `${LIVE} && c.client.transport === "websocket"`, "live on WebSocket");
  const ids: string[] = [];

  const cutAndWait = async (what: string): Promise<void> => {
    env.proxy.cutAll();
    await s.until("e", `c.client.state === "disconnected"`, `disconnected after the cut (${what})`, 5000);
    ids.push((await publish(env.hub.url, `published while waiting out the backoff (${what})`, ch)).id);
    // The backoff really is pending: nothing reconnects by itself in the next 800 ms.
    await sleep(800);
    const view = await s.view("e");
    assert.equal(view.state, "disconnected", `still waiting out the backoff before ${what}: ${JSON.stringify(view.states)}`);
  };

  // online
  await cutAndWait("online");
  let at = Date.now();
  await s.page.evaluate(`window.dispatchEvent(new Event("online"))`);
  await s.until("e", `c.client.state === "connected" && c.messages.length >= 1`, "reconnected after online", 1000);
  t.diagnostic(`online → connected in ${Date.now() - at} ms`);

  // visibilitychange while hidden does not hurry; to visible does.
  await cutAndWait("visibilitychange");
  await s.page.evaluate(`Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" }); document.dispatchEvent(new Event("visibilitychange"))`);
  await sleep(300);
  assert.equal((await s.view("e")).state, "disconnected", "a page going hidden does not reconnect early");
  await s.page.evaluate(`delete document.visibilityState; document.visibilityState`);
  assert.equal(await s.page.evaluate("document.visibilityState"), "visible");
  at = Date.now();
  await s.page.evaluate(`document.dispatchEvent(new Event("visibilitychange"))`);
  await s.until("e", `c.client.state === "connected" && c.messages.length >= 2`, "reconnected after visibilitychange", 1000);
  t.diagnostic(`visibilitychange → connected in ${Date.now() - at} ms`);

  await sleep(200);
  const view = await s.view("e");
  assert.deepEqual(
    view.messages.map((m) => m.id),
    ids,
    "what was published while waiting arrived once, in order",
  );
  assert.equal(view.transport, "websocket", "a cut after delivering does not step down");
  await s.page.evaluate("ladder.clients.e.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

// ---------------------------------------------------------------------------------------------------------
// f. close() leaves nothing behind.

test("close() leaves no pending client work: no requests for 2 s, no timers, sockets closed, state closed", { timeout: TEST_TIMEOUT }, async (t) => {
  const env = requireBrowser(t);
  if (!env) return;
  t.after(resetRules);
  // Upgrades refused, so the clients below are caught in every kind of pending work at once.
  env.proxy.rules.refuseUpgrades = true;
  const s = await openSession(t, env.browser, env.proxy.url);
  const requests: Array<{ url: string; at: number }> = [];
  s.page.on("request", (r) => requests.push({ url: r.url(), at: Date.now() }));
  s.page.on("websocket", (w) => requests.push({ url: w.url(), at: Date.now() }));
  // On SSE with a probe (back to WebSocket) due 1.5 s after connecting.
  await s.start("sse", channel(), { probe: { minMs: 1500, maxMs: 1500 }, fixedRandom: 0 });
  // A long-poll held by the hub.
  await s.start("longpoll", channel(), { transport: "long-poll" });
  // Polling every 200 ms.
  await s.start("poll", channel(), { transport: "poll" });
  // WebSocket only, refused: waiting out a ~1 s backoff before the next try.
  await s.start("retry", channel(), { transport: "websocket", backoff: { minMs: 1000, maxMs: 1000 }, fixedRandom: 0.99 });
  await s.until("sse", `${LIVE} && c.client.transport === "sse"`, "sse live");
  await s.until("longpoll", LIVE, "long-poll live");
  await s.until("poll", LIVE, "poll live");
  await s.until("retry", `c.client.state === "disconnected" && c.errors.length >= 1`, "websocket refused, backoff pending");
  await sleep(300); // the long-poll is parked, the poll timer armed
  const pending = (await s.page.evaluate("__ladderProbe.timers.size")) as number;
  assert.ok(pending >= 4, `the clients had work pending before close (${pending} timers)`);

  const closedAt = (await s.page.evaluate(`(() => {
    for (const rec of Object.values(ladder.clients)) rec.client.close();
    return performance.now();
  })()`)) as number;
  const closedAtNode = Date.now();
  const states = (await s.page.evaluate("Object.values(ladder.clients).map((rec) => rec.client.state)")) as string[];
  assert.deepEqual(states, ["closed", "closed", "closed", "closed"]);
  const left = (await s.page.evaluate(`[...__ladderProbe.timers.values()]`)) as unknown[];
  assert.deepEqual(left, [], "close() cleared every timer the clients had set");

  await sleep(2000);
  const calls = (await s.page.evaluate(`__ladderProbe.calls.filter((c) => c.at > ${closedAt}).map((c) => c.kind + " " + c.url)`)) as string[];
  assert.deepEqual(calls, [], "the clients made no fetch and opened no WebSocket after close()");
  // Seen from outside the page too (allowing for the CDP event of a request started just before close).
  const late = requests.filter((r) => r.at > closedAtNode + 250).map((r) => r.url);
  assert.deepEqual(late, [], "the browser saw no request after close()");
  const timers = (await s.page.evaluate(`[...__ladderProbe.timers.values()]`)) as unknown[];
  assert.deepEqual(timers, [], "no client timer was set after close()");
  const open = (await s.page.evaluate("__ladderProbe.sockets.filter((w) => w.readyState !== WebSocket.CLOSED).length")) as number;
  assert.equal(open, 0, "every WebSocket the clients opened is closed");
  // Listeners are gone too: `online` no longer wakes a closed client.
  await s.page.evaluate(`window.dispatchEvent(new Event("online")); document.dispatchEvent(new Event("visibilitychange"))`);
  await sleep(200);
  assert.equal(await s.page.evaluate(`__ladderProbe.calls.filter((c) => c.at > ${closedAt}).length`), 0);
  assert.deepEqual(s.pageErrors, []);
});
