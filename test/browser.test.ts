/**
 * The guide's client snippets, run as written in a real browser (Debian's Chromium driven by
 * playwright-core) against a real `ladder serve` child process. Each snippet is injected into a page on
 * the hub's own origin (loaded from `/healthz`), so its relative URLs ("/api/messages", "/api/stream")
 * resolve exactly as they would for a user. Nothing here downloads a browser.
 *
 * Without /usr/bin/chromium the tests skip loudly; with CI=true a missing Chromium is a failure.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { useChromium } from "./helpers/browser.js";

/** The repository root: this file runs as dist/test/browser.test.js. */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = fileURLToPath(new URL("../../bin/ladder.js", import.meta.url));
const TEST_TIMEOUT = 20_000;
const WAIT = 8_000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Per-test cleanup, run last-in first-out (the page closes before its hub stops), every step even if one throws. */
const cleanups = new WeakMap<TestContext, Array<() => unknown>>();
function defer(t: TestContext, step: () => unknown): void {
  let steps = cleanups.get(t);
  if (!steps) {
    const list: Array<() => unknown> = [];
    steps = list;
    cleanups.set(t, list);
    t.after(async () => {
      const errors: unknown[] = [];
      for (const cleanup of list.reverse()) await Promise.resolve().then(cleanup).catch((error: unknown) => errors.push(error));
      if (errors.length > 0) throw errors[0];
    });
  }
  steps.push(step);
}

// ---------------------------------------------------------------------------------------------------------
// The hub as a real child process.

interface HubProcess {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
// Last resort if the runner dies between a spawn and its after hook: never leave a hub behind.
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

async function startHub(extraArgs: string[] = []): Promise<HubProcess> {
  const args = [BIN, "serve", "--port", "0", "--host", "127.0.0.1", "--log-level", "warn", ...extraArgs];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  exited.then(() => children.delete(child), () => undefined);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`hub did not start within 10 s; stdout=${stdout} stderr=${stderr}`));
    }, 10_000);
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
  return {
    url,
    port: Number(new URL(url).port),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(killer);
    },
  };
}

async function publish(base: string, data: unknown): Promise<string> {
  const res = await fetch(`${base}/api/messages`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ data }),
  });
  const text = await res.text();
  assert.equal(res.status, 201, `publish answered ${res.status} ${text}`);
  const body = JSON.parse(text) as { id: string; channel: string };
  assert.equal(body.channel, "general");
  assert.match(body.id, /^\d+-\d+$/);
  return body.id;
}

// ---------------------------------------------------------------------------------------------------------
// A TCP proxy between the browser and the hub that logs request heads, can cut every connection, and
// can hold new connections (accepted but not forwarded) until released.

interface RequestHead {
  readonly requestLine: string;
  readonly headers: Readonly<Record<string, string>>;
}

class CuttableProxy {
  readonly heads: RequestHead[] = [];
  readonly #target: number;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #held: Socket[] = [];
  #holding = false;

  constructor(targetPort: number) {
    this.#target = targetPort;
    this.#server = createServer((client) => {
      this.#track(client);
      client.on("error", () => client.destroy());
      if (this.#holding) this.#held.push(client);
      else this.#forward(client);
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(0, "127.0.0.1", () => resolve());
    });
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Destroys every proxied socket, both sides, and holds new connections until {@link release}. */
  cut(): number {
    this.#holding = true;
    const count = this.#sockets.size;
    for (const socket of this.#sockets) socket.destroy();
    return count;
  }

  get heldCount(): number {
    return this.#held.filter((s) => !s.destroyed).length;
  }

  release(): void {
    this.#holding = false;
    for (const client of this.#held.splice(0)) if (!client.destroyed) this.#forward(client);
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #track(socket: Socket): void {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
  }

  #forward(client: Socket): void {
    const upstream = connect(this.#target, "127.0.0.1");
    this.#track(upstream);
    upstream.on("error", () => client.destroy());
    upstream.on("close", () => client.destroy());
    client.on("close", () => upstream.destroy());
    let pending = "";
    // The browser sends only bodiless GETs through the proxy, so every "\r\n\r\n" ends a request head.
    client.on("data", (chunk: Buffer) => {
      pending += chunk.toString("latin1");
      for (let end = pending.indexOf("\r\n\r\n"); end >= 0; end = pending.indexOf("\r\n\r\n")) {
        const [requestLine = "", ...lines] = pending.slice(0, end).split("\r\n");
        const headers: Record<string, string> = {};
        for (const line of lines) {
          const colon = line.indexOf(":");
          if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        this.heads.push({ requestLine, headers });
        pending = pending.slice(end + 4);
      }
      upstream.write(chunk);
    });
    upstream.pipe(client);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The browser.

const chromiumFor = useChromium("browser tests");

interface Session {
  readonly page: Page;
  readonly pageErrors: Error[];
}

/** A fresh browser context with one page on `origin` (its /healthz), closed after the test. */
async function openPage(t: TestContext, b: Browser, origin: string): Promise<Session> {
  const context = await b.newContext();
  defer(t, () => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const pageErrors: Error[] = [];
  page.on("pageerror", (error) => pageErrors.push(error));
  const response = await page.goto(`${origin}/healthz`);
  assert.equal(response?.status(), 200);
  return { page, pageErrors };
}

/** Runs a classic script in the page, as a <script> on it would: its top-level `let`s are page globals. */
async function inject(page: Page, source: string): Promise<void> {
  await page.addScriptTag({ content: source });
}

async function read<T>(page: Page, expression: string): Promise<T> {
  return (await page.evaluate(expression)) as T;
}

/** Waits for a page expression to be truthy; on timeout the error shows `show` as the page has it. */
async function waitInPage(page: Page, expression: string, show = "received", timeout = WAIT): Promise<void> {
  try {
    await page.waitForFunction(expression, undefined, { timeout, polling: 25 });
  } catch (error) {
    const state = await page.evaluate(`JSON.stringify(${show})`).catch(() => "(unreadable)");
    throw new Error(`timed out after ${timeout} ms waiting for \`${expression}\`; page has ${show} = ${String(state)}`, { cause: error });
  }
}

interface WireMessage {
  id: string;
  channel: string;
  data: unknown;
  time: number;
}

function assertMessages(actual: WireMessage[], ids: string[], data: unknown[]): void {
  assert.deepEqual(
    actual.map((m) => ({ id: m.id, channel: m.channel, data: m.data })),
    ids.map((id, i) => ({ id, channel: "general", data: data[i] })),
  );
  for (const m of actual) {
    assert.equal(typeof m.time, "number");
    assert.ok(Math.abs(Date.now() - m.time) < 60_000, `time ${m.time} is not a recent epoch in ms`);
  }
}

/**
 * A stream that starts live (no Last-Event-ID) gets only what is published after the hub subscribed it,
 * which the browser cannot observe. Publish numbered probes until one arrives; returns the probes sent.
 */
async function warmUp(page: Page, hubUrl: string): Promise<Array<{ probe: number }>> {
  const probes: Array<{ probe: number }> = [];
  const deadline = Date.now() + WAIT;
  while ((await read<number>(page, "received.length")) === 0) {
    if (Date.now() > deadline) throw new Error(`no probe reached the page in ${WAIT} ms (sent ${probes.length})`);
    const probe = { probe: probes.length };
    await publish(hubUrl, probe);
    probes.push(probe);
    await sleep(100);
  }
  return probes;
}

/** The probes the page got, then everything after: the received list must be exactly this. */
function afterFirstProbe(received: unknown[], probes: Array<{ probe: number }>, rest: unknown[]): unknown[] {
  const first = received[0] as { probe?: unknown } | undefined;
  const start = probes.findIndex((p) => p.probe === first?.probe);
  assert.ok(start >= 0, `the first event ${JSON.stringify(first)} is not a probe`);
  return [...probes.slice(start), ...rest];
}

// ---------------------------------------------------------------------------------------------------------

test("interval polling snippet: render() gets the published messages in order with their exact data", { timeout: TEST_TIMEOUT }, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const hub = await startHub();
  defer(t, () => hub.stop());
  const { page, pageErrors } = await openPage(t, b, hub.url);
  const polls: string[] = [];
  page.on("request", (request) => {
    if (request.url().includes("/api/messages")) polls.push(new URL(request.url()).search);
  });

  // The guide's snippet; the interval is 200 ms instead of 5 s. The guide leaves lastId to the app, so
  // render() advances it the way the long-poll snippet does.
  await inject(
    page,
    `
    let lastId = 0;
    const received = [];
    const batches = [];
    const seen = new Set();
    function render(msgs) {
      // setInterval does not wait for the previous fetch: on a loaded machine two polls with the same
      // lastId can be in flight and both answer the same news. An app keyed by id renders it once.
      msgs = msgs.filter((m) => !seen.has(m.id));
      if (msgs.length === 0) return;
      for (const m of msgs) seen.add(m.id);
      batches.push(msgs.length);
      received.push(...msgs);
      lastId = msgs.at(-1).id;
    }

    // Client: ask every 5 seconds, forever.
    setInterval(async () => {
      const res = await fetch("/api/messages?since=" + lastId);
      const msgs = await res.json();
      if (msgs.length) render(msgs);
    }, 200);
    `,
  );
  await page.waitForRequest((request) => request.url().includes("/api/messages"));
  const data = [{ price: 142.1 }, 'plain text with "quotes", ünïcödé ✓ and a\nnewline', [1, { nested: [true, null, -0.5] }]];
  const ids: string[] = [];
  ids.push(await publish(hub.url, data[0]));
  await waitInPage(page, "received.length >= 1");
  ids.push(await publish(hub.url, data[1]));
  ids.push(await publish(hub.url, data[2]));
  await waitInPage(page, "received.length >= 3");
  // Let a few more polls run: they must ask after the last id and bring nothing again.
  const pollsSoFar = polls.length;
  await sleep(700);
  assert.ok(polls.length >= pollsSoFar + 2, `the page kept polling (${polls.length - pollsSoFar} polls in 700 ms)`);

  assertMessages(await read<WireMessage[]>(page, "received"), ids, data);
  assert.equal(polls[0], "?since=0", "the first poll asks from the start");
  assert.equal(polls.at(-1), `?since=${ids[2]}`, "later polls ask after the last id");
  assert.deepEqual(pageErrors, []);
});

test("long-poll loop snippet: messages published while the request is parked arrive in order, exactly once", { timeout: TEST_TIMEOUT }, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const hub = await startHub();
  defer(t, () => hub.stop());
  const { page, pageErrors } = await openPage(t, b, hub.url);
  const polls: string[] = [];
  page.on("request", (request) => {
    if (request.url().includes("/api/messages")) polls.push(new URL(request.url()).search);
  });
  /** Resolves once the loop has asked after `since` and the request has had time to park on the hub. */
  const parkedAfter = async (since: string): Promise<void> => {
    const deadline = Date.now() + WAIT;
    while (!polls.includes(`?since=${since}&wait=25`)) {
      if (Date.now() > deadline) throw new Error(`the loop never asked after ${since}; polls: ${JSON.stringify(polls)}`);
      await sleep(20);
    }
    await sleep(250);
  };

  // The guide's snippet with "&wait=25" so the hub holds the request.
  await inject(
    page,
    `
    let lastId = 0;
    const received = [];
    const batches = [];
    function render(msgs) {
      batches.push(msgs.map((m) => m.id));
      received.push(...msgs);
    }

    // Client: reconnect the instant the server answers.
    async function longPoll() {
      while (true) {
        const res = await fetch("/api/messages?since=" + lastId + "&wait=25");
        const msgs = await res.json();   // resolves only when there's news (or a timeout)
        if (msgs.length) { render(msgs); lastId = msgs.at(-1).id; }
      }
    }
    longPoll();
    `,
  );
  await parkedAfter("0");
  // Parked means parked: a held request does not come back, so the loop does not spin.
  await sleep(1000);
  assert.equal(polls.length, 1, `the loop spun while nothing was published: ${JSON.stringify(polls)}`);
  assert.equal(await read<number>(page, "received.length"), 0);

  const data = [{ n: 1, text: "first" }, { n: 2, text: "second" }, { n: 3, text: "third, same burst as second" }];
  const ids: string[] = [];
  const started = Date.now();
  ids.push(await publish(hub.url, data[0]));
  await waitInPage(page, "received.length >= 1");
  assert.ok(Date.now() - started < 5000, "the parked request answered as soon as there was news, not at the 25 s timeout");

  await parkedAfter(ids[0]!);
  ids.push(await publish(hub.url, data[1]));
  ids.push(await publish(hub.url, data[2]));
  await waitInPage(page, "received.length >= 3");
  await parkedAfter(ids[2]!);
  await sleep(300);

  assertMessages(await read<WireMessage[]>(page, "received"), ids, data);
  const batches = await read<string[][]>(page, "batches");
  assert.deepEqual(batches.flat(), ids, "each id rendered once");
  assert.ok(polls.length <= 1 + batches.length + 1, `one request per answer, no more: ${JSON.stringify(polls)}`);
  assert.deepEqual(pageErrors, []);
});

test("EventSource snippet: onmessage gets the published data exactly, with the ids the hub assigned", { timeout: TEST_TIMEOUT }, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const hub = await startHub();
  defer(t, () => hub.stop());
  const { page, pageErrors } = await openPage(t, b, hub.url);

  await inject(
    page,
    `
    const received = [];
    let dropped = 0;
    function render(data) { received.push(data); }

    const stream = new EventSource("/api/stream");

    stream.onmessage = (event) => {
      const data = JSON.parse(event.data);
      render(data);
    };

    stream.onerror = () => {
      // EventSource is ALREADY retrying. You don't reconnect by hand.
      dropped++;
      console.log("connection dropped — browser is reconnecting...");
    };

    // Test instrumentation beside the snippet: the id of every event.
    const eventIds = [];
    stream.addEventListener("message", (event) => eventIds.push(event.lastEventId));
    `,
  );
  await waitInPage(page, "stream.readyState === EventSource.OPEN", "stream.readyState");
  const probes = await warmUp(page, hub.url);
  const probeCount = await read<number>(page, "received.length");

  const data: unknown[] = [
    { price: 142.1 },
    { price: 142.35 },
    { price: 142.8 },
    { text: "ünïcödé ✓ 🎉, a line\nbreak, a CR\r, a NUL \u0000 and U+2028 \u2028 inside" },
    "a bare string",
    [1, 2.5, -3e-7, null, false, { deep: { er: [[]] } }],
    null,
    0,
  ];
  const ids: string[] = [];
  for (const d of data) ids.push(await publish(hub.url, d));
  await waitInPage(page, `received.length >= ${probeCount + data.length}`);
  await sleep(200);

  const received = await read<unknown[]>(page, "received");
  assert.deepEqual(received, afterFirstProbe(received, probes, data));
  const eventIds = await read<string[]>(page, "eventIds");
  assert.deepEqual(eventIds.slice(-data.length), ids, "each event's id is the id POST answered");
  assert.equal(await read<number>(page, "dropped"), 0, "the stream never dropped");
  assert.deepEqual(pageErrors, []);
});

test("EventSource reconnects by itself after a cut and resumes through Last-Event-ID: nothing lost, nothing twice", { timeout: TEST_TIMEOUT }, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const hub = await startHub(["--sse-retry", "1"]);
  defer(t, () => hub.stop());
  const proxy = new CuttableProxy(hub.port);
  const proxyUrl = await proxy.listen();
  defer(t, () => proxy.close());
  // The page's origin is the proxy, so "/api/stream" goes through it.
  const { page, pageErrors } = await openPage(t, b, proxyUrl);

  await inject(
    page,
    `
    const received = [];
    let dropped = 0;
    function render(data) { received.push(data); }

    const stream = new EventSource("/api/stream");

    stream.onmessage = (event) => {
      const data = JSON.parse(event.data);
      render(data);
    };

    stream.onerror = () => {
      // EventSource is ALREADY retrying. You don't reconnect by hand.
      dropped++;
      console.log("connection dropped — browser is reconnecting...");
    };
    `,
  );
  await waitInPage(page, "stream.readyState === EventSource.OPEN", "stream.readyState");
  const probes = await warmUp(page, hub.url);

  const before = [{ seq: 1 }, { seq: 2 }, { seq: 3 }];
  const beforeIds: string[] = [];
  for (const d of before) beforeIds.push(await publish(hub.url, d));
  await waitInPage(page, `received.some((d) => d && d.seq === 3)`);

  const streamRequests = (): RequestHead[] => proxy.heads.filter((h) => h.requestLine.startsWith("GET /api/stream "));
  assert.equal(streamRequests().length, 1);
  assert.equal(streamRequests()[0]!.headers["last-event-id"], undefined, "the first request has no Last-Event-ID");

  // Cut: every proxied socket dies, and the proxy holds reconnects until the messages below are published.
  assert.ok(proxy.cut() > 0, "there were proxied connections to cut");
  await waitInPage(page, "dropped >= 1 && stream.readyState === EventSource.CONNECTING", "[dropped, stream.readyState]");
  const during = [{ seq: 4 }, { seq: 5, note: "published while the stream was down" }, { seq: 6 }];
  for (const d of during) await publish(hub.url, d);
  assert.equal(await read<number>(page, "received.filter((d) => d && d.seq > 3).length"), 0, "nothing can arrive while cut");
  proxy.release();

  await waitInPage(page, `received.some((d) => d && d.seq === 6)`);
  await waitInPage(page, "stream.readyState === EventSource.OPEN", "stream.readyState");
  // One more after the resume, live on the new connection.
  const afterData = { seq: 7 };
  await publish(hub.url, afterData);
  await waitInPage(page, `received.some((d) => d && d.seq === 7)`);
  await sleep(300);

  const received = await read<unknown[]>(page, "received");
  assert.deepEqual(received, afterFirstProbe(received, probes, [...before, ...during, afterData]), "every message exactly once, in order");
  const requests = streamRequests();
  assert.equal(requests.length, 2, `one reconnect: ${JSON.stringify(requests)}`);
  assert.equal(requests[1]!.headers["last-event-id"], beforeIds[2], "the reconnect resumed from the last event id the browser saw");
  assert.equal(await read<number>(page, "dropped"), 1);
  assert.deepEqual(pageErrors, []);
});

test("WebSocket snippet: joined, HTTP publishes arrive as message frames, a page publish is acked and delivered", { timeout: TEST_TIMEOUT }, async (t) => {
  const b = chromiumFor(t);
  if (!b) return;
  const hub = await startHub();
  defer(t, () => hub.stop());
  const { page, pageErrors } = await openPage(t, b, hub.url);
  // Published before the page joins: a join without `since` is live, so this must not be delivered.
  const earlierId = await publish(hub.url, { before: "join" });

  await inject(
    page,
    `
    const received = [];
    let opens = 0;
    function render(frame) { received.push(frame); }

    let ws;
    function connect() {
      ws = new WebSocket("ws://" + location.host + "/api/ws");

      ws.onopen  = () => { opens++; ws.send(JSON.stringify({ type: "join", room: "general" })); };
      ws.onmessage = (event) => render(JSON.parse(event.data));

      ws.onclose = () => {
        // Unlike SSE, NOTHING reconnects for you. You must do it yourself.
        setTimeout(connect, 1000);
      };
    }
    connect();
    `,
  );
  await waitInPage(page, `received.some((f) => f.type === "joined")`);
  const [joined] = await read<Array<Record<string, unknown>>>(page, "received");
  assert.deepEqual(joined, { type: "joined", room: "general", cursor: earlierId });

  const data = [{ price: 142.1 }, { chat: "hello from HTTP ✓" }, ["array", 3]];
  const ids: string[] = [];
  for (const d of data) ids.push(await publish(hub.url, d));
  await waitInPage(page, `received.filter((f) => f.type === "message").length >= 3`);
  const messages = (await read<Array<Record<string, unknown>>>(page, "received")).filter((f) => f.type === "message");
  assert.deepEqual(
    messages.map((m) => ({ ...m, time: typeof m.time })),
    ids.map((id, i) => ({ type: "message", room: "general", id, data: data[i], time: "number" })),
  );

  // Upstream: the page publishes over its socket with a ref.
  const fromPage = { text: "from the page", n: 7, nested: { ok: true } };
  await page.evaluate(`ws.send(JSON.stringify({ type: "publish", room: "general", data: ${JSON.stringify(fromPage)}, ref: "r-1" }))`);
  await waitInPage(page, `received.some((f) => f.type === "ack") && received.filter((f) => f.type === "message").length >= 4`);
  await sleep(200);
  const frames = await read<Array<Record<string, unknown>>>(page, "received");
  const ack = frames.find((f) => f.type === "ack")!;
  assert.equal(ack.ref, "r-1");
  assert.equal(ack.room, "general");
  assert.match(String(ack.id), /^\d+-\d+$/);
  assert.deepEqual(ack, { type: "ack", ref: "r-1", id: ack.id, room: "general" });
  const echoed = frames.filter((f) => f.type === "message").at(-1)!;
  assert.deepEqual({ ...echoed, time: typeof echoed.time }, { type: "message", room: "general", id: ack.id, data: fromPage, time: "number" });

  // Exactly: joined, three HTTP messages, then the page's message and its ack; no errors, no repeats.
  assert.equal(frames.length, 6, JSON.stringify(frames));
  assert.ok(!frames.some((f) => f.type === "message" && f.id === earlierId), "a live join does not replay history");
  assert.equal(await read<number>(page, "opens"), 1);

  // The page's publish is the channel's next message for HTTP readers too.
  const res = await fetch(`${hub.url}/api/messages?since=${ids[2]}`);
  const polled = (await res.json()) as WireMessage[];
  assert.deepEqual(
    polled.map((m) => ({ id: m.id, channel: m.channel, data: m.data })),
    [{ id: ack.id, channel: "general", data: fromPage }],
  );
  assert.deepEqual(pageErrors, []);
});
