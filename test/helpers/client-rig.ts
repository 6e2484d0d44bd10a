/**
 * The rig of the client browser tests (test/client-browser.test.ts, test/client-browser-recovery.test.ts):
 * Ladder's own client in a real browser, Debian's Chromium driven by playwright-core, importing the bundle
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
import { after, before, type TestContext } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Browser, Page } from "playwright-core";
import { serve, type RunningServer } from "../../src/index.js";
import { staticFiles } from "../../src/server/edge/static.js";
import { chromiumAvailable, launchChromium, requireBrowser as browserOrSkip } from "./browser.js";
import { startProxy, type Proxy, type ProxyRules } from "./proxy.js";
import { publish, sleep } from "./server.js";

/** The repository root: this file runs as dist/test/helpers/client-rig.js. */
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const TEST_TIMEOUT = 30_000;
const WAIT = 8_000;
/** The hub's SSE heartbeat comments and WebSocket pings. */
const HUB_HEARTBEAT_MS = 250;
/** The client's heartbeat timeout in these tests. */
export const HEARTBEAT_TIMEOUT_MS = 1500;

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

/** Registers the suite's hooks: one hub, one proxy and one browser for the test file that calls it. */
export function setupClientRig(): void {
  before(startRig);
  after(stopRig);
}

async function startRig(): Promise<void> {
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
}

async function stopRig(): Promise<void> {
  await browser?.close().catch(() => undefined);
  browser = null;
  await proxy?.close().catch(() => undefined);
  await hub?.close().catch(() => undefined);
  if (bundleDir) rmSync(bundleDir, { recursive: true, force: true });
}

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
export const channel = (): string => `b${process.pid}x${++seq}`;

/**
 * A fresh page on the proxy's origin, the proxy set to `rules` (all reset after the test), and a fresh
 * channel; null, after skipping or failing the test, when there is no browser to run in.
 */
export async function pageBehind(t: TestContext, rules: Partial<ProxyRules> = {}): Promise<{ env: { browser: Browser; hub: RunningServer; proxy: Proxy }; s: Session; ch: string } | null> {
  const env = requireBrowser(t);
  if (!env) return null;
  t.after(resetRules);
  Object.assign(env.proxy.rules, rules);
  const s = await openSession(t, env.browser, env.proxy.url);
  return { env, s, ch: channel() };
}

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

export const LIVE = `c.client.state === "connected" && c.client.cursor(c.channel) !== null`;

export function short(reason: string): string {
  return reason.split(":")[0]!;
}

/**
 * Cut, publish while cut, heal: the messages published while the connection was down arrive exactly once,
 * in order, and delivery goes on live afterwards. Returns the client's view after the heal.
 */
export async function cutPublishHeal(s: Session, p: Proxy, h: RunningServer, name: string, ch: string): Promise<View> {
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

export function timeline(view: View): string {
  return view.transports.map((e) => `${e.transport} (${e.reason}) @${e.at}`).join(" → ");
}
