/**
 * Cross-origin use of the hub from a real browser (Debian's Chromium driven by playwright-core; nothing
 * downloads a browser). The hub listens on http://127.0.0.1:<hub port>; the pages under test come from
 * small plain node:http servers on other ports — other origins of the same host, the way a malicious page
 * and a legitimate app page reach a hub. What the browser enforces is observed in the page (events,
 * errors, what the page can read) and beside it (Chromium's console, and the requests that actually
 * reached the hub):
 *
 * - a page on an origin the hub does not allow cannot open a WebSocket (the upgrade is refused with 403)
 *   and cannot read the HTTP rungs with the user's credentials (no CORS grant);
 * - a page on the allowed origin can do both;
 * - cross-site WebSocket hijacking: with a `ladder_token` cookie and no `allowedOrigins`, a page on another
 *   port — which gets the cookie, as cookies are per host, not per port, and another port is the same site
 *   even for SameSite=Strict — cannot open a cookie-authenticated WebSocket, while the hub's own page can.
 *
 * Without /usr/bin/chromium the tests skip loudly; with CI=true a missing Chromium is a failure.
 */
import assert from "node:assert/strict";
import { createServer, Server as HttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { test, type TestContext } from "node:test";
import { SignJWT } from "jose";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { serve, type RunningServer, type ServeOptions } from "../src/index.js";
import { useChromium } from "./helpers/browser.js";

const SECRET = "origins-test-secret-origins-test-secret";
const API_KEY = "origins-test-backend-key-0123456789";
/** How long the page waits for a socket or a fetch to settle, and the test for the page. */
const WAIT = 8_000;
const TEST = { timeout: 30_000 };

const RULES: ServeOptions["auth"] = {
  rules: [{ match: "private.*", subscribe: "token", publish: "nobody" }],
  jwt: { secret: SECRET },
  apiKeys: [API_KEY],
};

/** A user's token: may subscribe to private.* (the cookie, or an explicit Bearer/query token, carries it). */
async function userToken(): Promise<string> {
  return new SignJWT({ ladder: { subscribe: ["private.*"], publish: [] } })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("alice")
    .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
    .sign(new TextEncoder().encode(SECRET));
}

let seq = 0;
const channel = (): string => `private.o${process.pid}x${++seq}`;

const chromiumFor = useChromium("browser origin tests");

/** Per-test cleanup, last-in first-out (pages before the servers they talk to), every step even if one throws. */
function cleanups(t: TestContext): (step: () => unknown) => void {
  const steps: Array<() => unknown> = [];
  t.after(async () => {
    const errors: unknown[] = [];
    for (const step of steps.reverse()) await Promise.resolve().then(step).catch((error: unknown) => errors.push(error));
    if (errors.length > 0) throw errors[0];
  });
  return (step) => steps.push(step);
}

// ---------------------------------------------------------------------------------------------------------
// Servers: the pages' origins, and the hub with a record of what reached it.

const BLANK_PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>origin test</title></head><body></body></html>`;

function answerPage(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
  res.end(BLANK_PAGE);
}

/** A plain node:http server on its own port: another origin, serving the blank page at every path. */
async function startSite(defer: (step: () => unknown) => void): Promise<string> {
  const sockets = new Set<Socket>();
  const server = createServer((_req, res) => answerPage(res));
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  defer(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A request or upgrade that reached the hub, as the hub's HTTP server saw it. */
interface Arrival {
  readonly kind: "request" | "upgrade";
  readonly method: string;
  readonly path: string;
  readonly origin: string | undefined;
  readonly cookie: boolean;
  readonly authorization: boolean;
  /** Set when the response has gone out (requests only). */
  status?: number;
}

interface Hub {
  readonly running: RunningServer;
  readonly url: string;
  readonly ws: string;
  readonly arrivals: Arrival[];
}

async function startHub(defer: (step: () => unknown) => void, options: ServeOptions): Promise<Hub> {
  // What arrived is watched on node:http's request events, so every request goes through node:http here:
  // the fast lane's answers to the same requests, headers included, are checked against node's in
  // test/fast-lane.test.ts.
  const running = await serve({ port: 0, host: "127.0.0.1", fastLane: false, ...options });
  defer(() => running.close());
  assert.ok(running.server instanceof HttpServer, "a plain hub is held by a node:http server");
  // Only watches: the hub's own listeners answer every request and upgrade.
  const arrivals: Arrival[] = [];
  const note = (kind: Arrival["kind"], req: IncomingMessage): Arrival => {
    const arrival: Arrival = {
      kind,
      method: req.method ?? "",
      path: req.url ?? "",
      origin: req.headers.origin,
      cookie: /(?:^|;\s*)ladder_token=/.test(req.headers.cookie ?? ""),
      authorization: typeof req.headers.authorization === "string",
    };
    arrivals.push(arrival);
    return arrival;
  };
  running.server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const arrival = note("request", req);
    res.once("finish", () => (arrival.status = res.statusCode));
  });
  running.server.on("upgrade", (req: IncomingMessage) => note("upgrade", req));
  return { running, url: running.url, ws: running.url.replace(/^http/, "ws"), arrivals };
}

async function publish(hub: Hub, room: string, data: unknown): Promise<string> {
  const res = await fetch(`${hub.url}/api/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify({ channel: room, data }),
  });
  const text = await res.text();
  assert.equal(res.status, 201, `publish answered ${res.status} ${text}`);
  return (JSON.parse(text) as { id: string }).id;
}

// ---------------------------------------------------------------------------------------------------------
// The pages.

/**
 * Installed in every page: `openSocket(url, room)` opens a WebSocket (joining `room` once open) and
 * records what the page sees of it in `sockets[i]`; `tryFetch(url, init)` reports what the page can read
 * of a fetch, or the error it gets. Both settle within WAIT.
 */
const PAGE_HELPERS = `
  window.sockets = [];
  window.openSocket = (url, room) => {
    const state = { events: [], frames: [], closed: false };
    const ws = new WebSocket(url);
    state.ws = ws;
    const timer = setTimeout(() => { state.events.push("timeout"); state.closed = true; ws.close(); }, ${WAIT});
    ws.onopen = () => {
      state.events.push("open");
      if (room) ws.send(JSON.stringify({ type: "join", room }));
    };
    ws.onerror = () => state.events.push("error");
    ws.onclose = (event) => {
      clearTimeout(timer);
      state.events.push("close " + event.code);
      state.closed = true;
    };
    ws.onmessage = (event) => state.frames.push(JSON.parse(event.data));
    window.sockets.push(state);
    return window.sockets.length - 1;
  };
  window.tryFetch = async (url, init) => {
    try {
      const res = await fetch(url, { ...init, signal: AbortSignal.timeout(${WAIT}) });
      return { ok: true, status: res.status, type: res.type, body: await res.text() };
    } catch (error) {
      return { ok: false, error: error.name + ": " + error.message };
    }
  };
`;

interface SocketState {
  events: string[];
  frames: Array<Record<string, unknown>>;
  closed: boolean;
}

type FetchResult = { ok: true; status: number; type: string; body: string } | { ok: false; error: string };

interface Session {
  readonly context: BrowserContext;
  open(url: string): Promise<Page>;
  /** Chromium's console errors, from every page of the context. */
  readonly consoleErrors: string[];
}

/** A fresh context; with `cookie`, the `ladder_token` cookie for host 127.0.0.1 — every port of it. */
async function newSession(b: Browser, defer: (step: () => unknown) => void, cookie: string | null): Promise<Session> {
  const context = await b.newContext();
  defer(() => context.close());
  await context.addInitScript({ content: PAGE_HELPERS });
  if (cookie !== null) {
    // The strictest settings an app would use; another port of the same host is the same site all the same.
    await context.addCookies([{ name: "ladder_token", value: cookie, domain: "127.0.0.1", path: "/", httpOnly: true, sameSite: "Strict" }]);
  }
  const consoleErrors: string[] = [];
  const pageErrors: Error[] = [];
  defer(() => assert.deepEqual(pageErrors, [], "no uncaught error in any page"));
  return {
    context,
    consoleErrors,
    async open(url) {
      const page = await context.newPage();
      page.setDefaultTimeout(WAIT);
      page.on("pageerror", (error) => pageErrors.push(error));
      page.on("console", (message) => {
        if (message.type() === "error") consoleErrors.push(message.text());
      });
      const response = await page.goto(url);
      assert.equal(response?.status(), 200, `page ${url}`);
      return page;
    },
  };
}

async function openSocket(page: Page, url: string, room: string | null): Promise<number> {
  return (await page.evaluate(`openSocket(${JSON.stringify(url)}, ${JSON.stringify(room)})`)) as number;
}

async function socketState(page: Page, index: number): Promise<SocketState> {
  return (await page.evaluate(`(({ events, frames, closed }) => ({ events, frames, closed }))(sockets[${index}])`)) as SocketState;
}

/** Waits until `done(state)` holds for page socket `index`; on timeout the error shows what the page saw. */
async function untilSocket(page: Page, index: number, what: string, done: (state: SocketState) => boolean): Promise<SocketState> {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const state = await socketState(page, index);
    if (done(state)) return state;
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT} ms waiting for ${what}; the page saw ${JSON.stringify(state)}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A WebSocket the page saw refused: an error and an abnormal close, never `open`. */
async function assertRefused(page: Page, index: number, what: string): Promise<void> {
  const state = await untilSocket(page, index, `${what} to settle`, (s) => s.closed || s.events.includes("open"));
  assert.deepEqual(state.events, ["error", "close 1006"], `${what}: the page sees error and close, never open`);
  assert.deepEqual(state.frames, []);
}

/** Joined `room`, then gets the message the test publishes over HTTP — exactly that one, with the hub's id. */
async function assertDelivers(page: Page, index: number, hub: Hub, room: string, what: string): Promise<void> {
  await untilSocket(page, index, `${what}: joined`, (s) => s.frames.some((f) => f.type === "joined" && f.room === room) || s.closed);
  const data = { text: `hello ${room}`, n: 42 };
  const id = await publish(hub, room, data);
  const state = await untilSocket(page, index, `${what}: the message`, (s) => s.frames.some((f) => f.type === "message") || s.closed);
  assert.deepEqual(state.events, ["open"], `${what}: open and still open`);
  const [joined, message, ...rest] = state.frames;
  assert.equal(joined?.type, "joined", `${what}: ${JSON.stringify(state.frames)}`);
  assert.deepEqual({ ...message, time: undefined }, { type: "message", room, id, data, time: undefined });
  assert.equal(typeof message?.time, "number");
  assert.deepEqual(rest, []);
}

async function tryFetch(page: Page, url: string, init: Record<string, unknown>): Promise<FetchResult> {
  return (await page.evaluate(`tryFetch(${JSON.stringify(url)}, ${JSON.stringify(init)})`)) as FetchResult;
}

const consoleMentions = (session: Session, ...parts: string[]): boolean => session.consoleErrors.some((m) => parts.every((p) => m.includes(p)));

// ---------------------------------------------------------------------------------------------------------

test("a page on an origin the hub does not allow: its WebSocket is refused and it cannot read the HTTP rungs with the user's credentials", TEST, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const defer = cleanups(t);
  const app = await startSite(defer);
  const evil = await startSite(defer);
  const hub = await startHub(defer, { auth: RULES, allowedOrigins: [app], cors: { origins: [app], credentials: true } });
  const token = await userToken();
  const room = channel();
  const secret = { text: "for alice only" };
  await publish(hub, room, secret);

  const session = await newSession(b, defer, token);
  const page = await session.open(`${evil}/`);

  // The WebSocket: the browser sends the cookie and its Origin; the hub refuses the upgrade with 403.
  const ambient = await openSocket(page, `${hub.ws}/api/ws`, room);
  await assertRefused(page, ambient, "a WebSocket with the ambient cookie");
  // An explicit token does not help: allowedOrigins is about the page, not the credentials.
  const explicit = await openSocket(page, `${hub.ws}/api/ws?access_token=${token}`, room);
  await assertRefused(page, explicit, "a WebSocket with ?access_token=");
  assert.ok(consoleMentions(session, `${hub.ws}/api/ws`, "Unexpected response code: 403"), `Chromium saw 403: ${JSON.stringify(session.consoleErrors)}`);
  const upgrades = hub.arrivals.filter((a) => a.kind === "upgrade");
  assert.equal(upgrades.length, 2, "both upgrades reached the hub");
  assert.ok(upgrades.every((u) => u.origin === evil && u.cookie), `the upgrades carried the page's Origin and the cookie: ${JSON.stringify(upgrades)}`);

  // An authenticated fetch: the Authorization header needs a preflight, which the hub answers 403, so the
  // browser never sends the request itself.
  const pollUrl = `${hub.url}/api/messages?channel=${room}&since=0`;
  const authed = await tryFetch(page, pollUrl, { credentials: "include", headers: { authorization: `Bearer ${token}` } });
  assert.equal(authed.ok, false, `the page read ${JSON.stringify(authed)}`);
  assert.match((authed as { error: string }).error, /^TypeError: /);
  const preflights = hub.arrivals.filter((a) => a.method === "OPTIONS");
  assert.deepEqual(
    preflights.map((a) => ({ origin: a.origin, status: a.status })),
    [{ origin: evil, status: 403 }],
    "one preflight from the page's origin, refused",
  );
  assert.deepEqual(
    hub.arrivals.filter((a) => a.method === "GET" && a.authorization),
    [],
    "the authenticated GET itself was never sent",
  );

  // A credentialed GET without custom headers needs no preflight: the browser sends it with the cookie and
  // the hub answers it, but without a CORS grant the page cannot read the answer.
  const mark = hub.arrivals.length;
  const plain = await tryFetch(page, pollUrl, { credentials: "include" });
  assert.equal(plain.ok, false, `the page read ${JSON.stringify(plain)}`);
  assert.match((plain as { error: string }).error, /^TypeError: /);
  // no-cors mode does not fail, but what it gets is opaque: no status, no body.
  const opaque = await tryFetch(page, pollUrl, { credentials: "include", mode: "no-cors" });
  assert.deepEqual(opaque, { ok: true, status: 0, type: "opaque", body: "" });
  const gets = hub.arrivals.slice(mark).map((a) => ({ method: a.method, origin: a.origin, cookie: a.cookie, status: a.status }));
  assert.deepEqual(gets, [
    { method: "GET", origin: evil, cookie: true, status: 200 },
    // A no-cors GET from a page carries no Origin header in Chromium.
    { method: "GET", origin: undefined, cookie: true, status: 200 },
  ]);
});

test("a page on the allowed origin: its WebSocket opens, joins and receives; its authenticated fetch reads the messages", TEST, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const defer = cleanups(t);
  const app = await startSite(defer);
  const hub = await startHub(defer, { auth: RULES, allowedOrigins: [app], cors: { origins: [app], credentials: true } });
  const token = await userToken();
  const session = await newSession(b, defer, token);
  const page = await session.open(`${app}/`);

  // The WebSocket, authenticated by the cookie the browser attaches.
  const room = channel();
  const socket = await openSocket(page, `${hub.ws}/api/ws`, room);
  await assertDelivers(page, socket, hub, room, "the allowed origin's WebSocket");
  const upgrade = hub.arrivals.find((a) => a.kind === "upgrade");
  assert.deepEqual({ origin: upgrade?.origin, cookie: upgrade?.cookie }, { origin: app, cookie: true });

  // The authenticated fetch: preflight granted, then the GET, readable by the page.
  const polled = channel();
  const data = { text: "readable by the app", list: [1, 2, 3] };
  const id = await publish(hub, polled, data);
  const result = await tryFetch(page, `${hub.url}/api/messages?channel=${polled}&since=0`, {
    credentials: "include",
    headers: { authorization: `Bearer ${token}` },
  });
  assert.ok(result.ok, `the fetch failed: ${JSON.stringify(result)}; console: ${JSON.stringify(session.consoleErrors)}`);
  assert.equal(result.status, 200);
  assert.equal(result.type, "cors");
  const messages = JSON.parse(result.body) as Array<{ id: string; channel: string; data: unknown; time: number }>;
  assert.deepEqual(
    messages.map((m) => ({ id: m.id, channel: m.channel, data: m.data })),
    [{ id, channel: polled, data }],
  );
  assert.equal(typeof messages[0]?.time, "number");
  const http = hub.arrivals.filter((a) => a.kind === "request" && a.path.includes(polled));
  assert.deepEqual(
    http.map((a) => ({ method: a.method, origin: a.origin, status: a.status })),
    [
      { method: "OPTIONS", origin: app, status: 204 },
      { method: "GET", origin: app, status: 200 },
    ],
  );
  assert.deepEqual(session.consoleErrors, []);
});

test("cross-site WebSocket hijacking: without allowedOrigins, a cookie-only WebSocket from another port is refused; from the hub's own page it works", TEST, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const defer = cleanups(t);
  const evil = await startSite(defer);
  // No allowedOrigins, no cors: the hub's own page is served by the hub itself (its fallback).
  const hub = await startHub(defer, {
    auth: RULES,
    fallback: (req, res) => {
      if (req.method === "GET" && req.url === "/") answerPage(res as ServerResponse);
      else res.writeHead(404).end();
    },
  });
  const token = await userToken();
  const session = await newSession(b, defer, token);

  // The malicious page on another port: the browser attaches the victim's cookie to its upgrade.
  const evilPage = await session.open(`${evil}/`);
  const hijack = await openSocket(evilPage, `${hub.ws}/api/ws`, channel());
  await assertRefused(evilPage, hijack, "a cookie-only WebSocket from another origin");
  assert.ok(consoleMentions(session, `${hub.ws}/api/ws`, "Unexpected response code: 403"), `Chromium saw 403: ${JSON.stringify(session.consoleErrors)}`);
  const refused = hub.arrivals.filter((a) => a.kind === "upgrade");
  assert.deepEqual(
    refused.map((a) => ({ origin: a.origin, cookie: a.cookie, authorization: a.authorization })),
    [{ origin: evil, cookie: true, authorization: false }],
    "the upgrade carried the victim's cookie and the page's Origin",
  );

  // The hub's own page, same cookie: the WebSocket opens, the cookie authenticates the join.
  const ownPage = await session.open(`${hub.url}/`);
  const room = channel();
  const own = await openSocket(ownPage, `${hub.ws}/api/ws`, room);
  await assertDelivers(ownPage, own, hub, room, "the hub's own page");
  const accepted = hub.arrivals.filter((a) => a.kind === "upgrade").slice(1);
  assert.deepEqual(
    accepted.map((a) => ({ origin: a.origin, cookie: a.cookie })),
    [{ origin: hub.url, cookie: true }],
  );
});
