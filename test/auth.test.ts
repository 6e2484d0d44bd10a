/**
 * Access control end to end over real sockets: every rung refuses an unauthorized subscribe or publish
 * (401/403 over HTTP, an error frame over WebSocket) and lets an authorized one through; tokens that
 * expire end SSE streams and WebSockets with the reason, and a refreshed token keeps the WebSocket.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SignJWT } from "jose";
import { WebSocket } from "ws";
import type { RunningServer } from "../src/index.js";
import { openSse, sleep, startHub, upgradeStatusAt } from "./helpers/server.js";

const SECRET = "test-secret-test-secret-test-secret!";
const KEY = new TextEncoder().encode(SECRET);
const API_KEY = "backend-key-0123456789";

interface Grants {
  subscribe?: string[];
  publish?: string[];
}

async function token(sub: string, grants: Grants, expiresInSeconds = 3600): Promise<string> {
  return new SignJWT({ ladder: { subscribe: grants.subscribe ?? [], publish: grants.publish ?? [] } })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(sub)
    .setExpirationTime(Math.floor(Date.now() / 1000) + expiresInSeconds)
    .sign(KEY);
}

const ALICE: Grants = { subscribe: ["chat.*", "user.{sub}"], publish: ["chat.*"] };

let hub: RunningServer;
let alice: string;
before(async () => {
  hub = await startHub({
    heartbeatMs: 200,
    auth: {
      rules: [
        { match: "public.*", subscribe: "anyone", publish: "nobody" },
        { match: "chat.*", subscribe: "token", publish: "token" },
        { match: "user.{sub}", subscribe: "token", publish: "nobody" },
      ],
      jwt: { secret: SECRET, clockToleranceSeconds: 0 },
      apiKeys: [API_KEY],
    },
  });
  alice = await token("alice", ALICE);
});
after(async () => {
  await hub.close();
});

const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

async function get(path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown; headers: Headers }> {
  const res = await fetch(hub.url + path, { headers });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

async function post(channel: string, data: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown }> {
  const res = await fetch(hub.url + "/api/messages", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ channel, data }),
  });
  return { status: res.status, body: await res.json() };
}

const code = (body: unknown): string | undefined => (body as { error?: { code?: string } }).error?.code;

interface Ws {
  readonly ws: WebSocket;
  readonly frames: Array<Record<string, unknown>>;
  send(frame: unknown): void;
  next(predicate: (f: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  closed: Promise<{ code: number; reason: string }>;
}

async function openWs(headers: Record<string, string> = {}, query = ""): Promise<Ws> {
  const ws = new WebSocket(hub.url.replace(/^http/, "ws") + "/api/ws" + query, { headers });
  const frames: Array<Record<string, unknown>> = [];
  ws.on("message", (data) => frames.push(JSON.parse(String(data)) as Record<string, unknown>));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on("close", (c, r) => resolve({ code: c, reason: String(r) })));
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  const taken = new Set<number>();
  return {
    ws,
    frames,
    closed,
    send: (frame) => ws.send(JSON.stringify(frame)),
    async next(predicate, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const index = frames.findIndex((f, i) => !taken.has(i) && predicate(f));
        if (index >= 0) {
          taken.add(index);
          return frames[index]!;
        }
        if (Date.now() > deadline) throw new Error(`timed out waiting for a frame; have ${JSON.stringify(frames)}`);
        await sleep(20);
      }
    },
  };
}

/** Status of a refused upgrade. */
async function upgradeStatus(headers: Record<string, string> = {}, query = ""): Promise<number> {
  const ws = new WebSocket(hub.url.replace(/^http/, "ws") + "/api/ws" + query, { headers });
  return new Promise((resolve, reject) => {
    ws.once("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once("open", () => {
      ws.close();
      reject(new Error("upgrade was accepted"));
    });
    ws.once("error", () => undefined);
  });
}

describe("poll and long-poll", () => {
  test("subscribe is refused 401 without a token, 403 outside the grants, allowed inside them", async () => {
    const anon = await get("/api/messages?channel=chat.a&since=0");
    assert.equal(anon.status, 401);
    assert.equal(code(anon.body), "unauthenticated");
    assert.equal(anon.headers.get("www-authenticate"), "Bearer");
    assert.equal((await get("/api/messages?channel=chat.a&since=0", bearer(alice))).status, 200);
    const bob = await get("/api/messages?channel=user.bob&since=0", bearer(alice));
    assert.equal(bob.status, 403);
    assert.equal(code(bob.body), "forbidden");
    assert.equal((await get("/api/messages?channel=public.news&since=0")).status, 200, "anyone reads public.*");
    assert.equal((await get("/api/messages?channel=other&since=0", bearer(alice))).status, 403, "deny by default");
  });

  test("the token may come from the ladder_token cookie or the access_token query parameter; {sub} is the subject", async () => {
    assert.equal((await get("/api/messages?channel=user.alice&since=0", { cookie: `theme=dark; ladder_token=${alice}` })).status, 200);
    assert.equal((await get(`/api/messages?channel=user.alice&since=0&access_token=${alice}`)).status, 200);
    const bad = await get("/api/messages?channel=user.alice&since=0", bearer(alice.slice(0, -3) + "abc"));
    assert.equal(bad.status, 401);
    assert.match((bad.body as { error: { message: string } }).error.message, /not valid/);
  });

  test("a long-poll is checked before it is held", async () => {
    assert.equal((await get("/api/messages?channel=chat.lp&wait=5")).status, 401);
    const held = get("/api/messages?channel=chat.lp&wait=5", bearer(alice));
    await sleep(100);
    assert.equal((await post("chat.lp", { n: 1 }, bearer(alice))).status, 201);
    const answer = await held;
    assert.equal(answer.status, 200);
    assert.deepEqual((answer.body as Array<{ data: unknown }>).map((m) => m.data), [{ n: 1 }]);
  });
});

describe("publish over HTTP", () => {
  test("401 without a token, 403 outside the grants or on nobody-channels, 201 with a grant or an API key", async () => {
    assert.equal((await post("chat.p", 1)).status, 401);
    assert.equal((await post("chat.p", 1, bearer(alice))).status, 201);
    const pub = await post("public.news", 1, bearer(alice));
    assert.equal(pub.status, 403);
    assert.equal(code(pub.body), "forbidden");
    assert.equal((await post("user.alice", 1, bearer(alice))).status, 403, "user.{sub} is publish: nobody");
    assert.equal((await post("public.news", 1, bearer(API_KEY))).status, 201, "backends publish anywhere with an API key");
    assert.equal((await post("public.news", 1, bearer("wrong-key"))).status, 401);
  });
});

describe("SSE", () => {
  test("each channel is checked; an authorized stream receives", async () => {
    const anon = await fetch(hub.url + "/api/stream?channel=chat.s");
    assert.equal(anon.status, 401);
    await anon.body?.cancel();
    const mixed = await fetch(hub.url + "/api/stream?channel=chat.s&channel=user.bob", { headers: bearer(alice) });
    assert.equal(mixed.status, 403);
    await mixed.body?.cancel();
    const stream = await openSse(hub.url + "/api/stream?channel=chat.s", bearer(alice));
    assert.equal(stream.response.status, 200);
    await stream.waitForText("event: ready");
    await post("chat.s", { hi: 1 }, bearer(alice));
    const [event] = await stream.waitFor(1);
    assert.deepEqual(JSON.parse(event!.data), { hi: 1 });
    stream.close();
  });

  test("a token that expires mid-stream ends it with event: error {code: token_expired}", async () => {
    const short = await token("alice", ALICE, 2);
    const stream = await openSse(hub.url + "/api/stream?channel=chat.exp", bearer(short));
    assert.equal(stream.response.status, 200);
    await stream.waitForText('"code":"token_expired"', 5000);
    assert.match(stream.raw(), /event: error\n/);
    const before = hub.hub.stats().byKind.sse;
    assert.equal(before, 0, "the stream is released when the token expires");
    stream.close();
  });
});

describe("WebSocket", () => {
  test("join and publish are checked per frame, the error frame carries the code and the ref", async () => {
    const c = await openWs();
    c.send({ type: "join", room: "chat.w", ref: "j1" });
    const refused = await c.next((f) => f.type === "error");
    assert.equal(refused.code, "unauthenticated");
    assert.equal(refused.ref, "j1");
    c.send({ type: "join", room: "public.w" });
    await c.next((f) => f.type === "joined" && f.room === "public.w");
    c.send({ type: "publish", room: "public.w", data: 1, ref: 2 });
    const pub = await c.next((f) => f.type === "error" && f.ref === 2);
    assert.equal(pub.code, "unauthenticated");
    c.ws.close();
  });

  test("first-frame auth, then joins and publishes within the grants; outside them forbidden", async () => {
    const c = await openWs();
    c.send({ type: "auth", token: alice, ref: "a" });
    const authed = await c.next((f) => f.type === "authed");
    assert.equal(authed.sub, "alice");
    assert.equal(authed.ref, "a");
    assert.equal(typeof authed.expiresAt, "number");
    c.send({ type: "join", room: "chat.w2" });
    await c.next((f) => f.type === "joined");
    c.send({ type: "join", room: "user.bob", ref: "b" });
    assert.equal((await c.next((f) => f.type === "error" && f.ref === "b")).code, "forbidden");
    c.send({ type: "publish", room: "chat.w2", data: { x: 1 }, ref: "p" });
    await c.next((f) => f.type === "ack" && f.ref === "p");
    await c.next((f) => f.type === "message" && f.room === "chat.w2");
    c.send({ type: "publish", room: "public.w", data: 1, ref: "q" });
    assert.equal((await c.next((f) => f.type === "error" && f.ref === "q")).code, "forbidden");
    c.send({ type: "auth", token: "garbage", ref: "g" });
    assert.equal((await c.next((f) => f.type === "error" && f.ref === "g")).code, "unauthenticated");
    c.ws.close();
  });

  test("the upgrade accepts a Bearer header, cookie or query token and refuses a bad one with 401", async () => {
    const c = await openWs(bearer(alice));
    c.send({ type: "join", room: "user.alice" });
    await c.next((f) => f.type === "joined");
    c.ws.close();
    const q = await openWs({}, `?access_token=${alice}`);
    q.send({ type: "join", room: "chat.q" });
    await q.next((f) => f.type === "joined");
    q.ws.close();
    assert.equal(await upgradeStatus(bearer("not-a-token")), 401);
    assert.equal(await upgradeStatus({ cookie: "ladder_token=nope" }), 401);
  });

  test("an expired token closes the socket with 4001 token expired", async () => {
    const short = await token("alice", ALICE, 2);
    const c = await openWs(bearer(short));
    c.send({ type: "join", room: "chat.e" });
    await c.next((f) => f.type === "joined");
    const closed = await c.closed;
    assert.equal(closed.code, 4001);
    assert.equal(closed.reason, "token expired");
  });

  test("a refreshed token keeps the socket; another sub is refused; narrower grants leave rooms", async () => {
    const short = await token("alice", ALICE, 2);
    const c = await openWs(bearer(short));
    c.send({ type: "join", room: "chat.r" });
    c.send({ type: "join", room: "user.alice" });
    await c.next((f) => f.type === "joined" && f.room === "chat.r");
    await c.next((f) => f.type === "joined" && f.room === "user.alice");
    c.send({ type: "auth", token: await token("mallory", ALICE), ref: "m" });
    assert.equal((await c.next((f) => f.type === "error" && f.ref === "m")).code, "forbidden");
    c.send({ type: "auth", token: await token("alice", { subscribe: ["chat.*"], publish: ["chat.*"] }), ref: "r" });
    const authed = await c.next((f) => f.type === "authed");
    assert.ok((authed.expiresAt as number) > Date.now() + 60_000);
    assert.equal((await c.next((f) => f.type === "error" && f.ref === "r")).code, "forbidden");
    await c.next((f) => f.type === "left" && f.room === "user.alice");
    await sleep(2500);
    assert.equal(c.ws.readyState, WebSocket.OPEN, "still open after the first token's expiry");
    await post("chat.r", { still: "here" }, bearer(API_KEY));
    await c.next((f) => f.type === "message" && f.room === "chat.r");
    c.ws.close();
  });
});

test("without auth the hub lets anyone do anything (unchanged behaviour)", async () => {
  const open = await startHub();
  try {
    const res = await fetch(open.url + "/api/messages", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ channel: "x", data: 1 }) });
    assert.equal(res.status, 201);
  } finally {
    await open.close();
  }
});

describe("origins and CORS", () => {
  const APP = "https://app.example";
  let guarded: RunningServer;
  before(async () => {
    guarded = await startHub({
      allowedOrigins: [APP],
      cors: { origins: [APP], credentials: true },
      auth: { rules: [{ match: "*", subscribe: "anyone", publish: "token" }], jwt: { secret: SECRET } },
    });
  });
  after(async () => {
    await guarded.close();
  });

  function upgrade(base: string, headers: Record<string, string>): Promise<number> {
    return upgradeStatusAt(base.replace(/^http/, "ws") + "/api/ws", headers);
  }

  test("allowedOrigins: a WebSocket upgrade from another origin is refused 403; a listed one and no Origin are accepted", async () => {
    assert.equal(await upgrade(guarded.url, { origin: "https://evil.example" }), 403);
    assert.equal(await upgrade(guarded.url, { origin: APP }), 101);
    assert.equal(await upgrade(guarded.url, {}), 101, "non-browser clients send no Origin");
  });

  test("without allowedOrigins, a cookie-only WebSocket must come from the hub's own host", async () => {
    const cookie = { cookie: `ladder_token=${alice}` };
    assert.equal(await upgrade(hub.url, { ...cookie, origin: "https://evil.example" }), 403);
    assert.equal(await upgrade(hub.url, { ...cookie, origin: hub.url }), 101);
    assert.equal(await upgrade(hub.url, { ...bearer(alice), origin: "https://evil.example" }), 101, "an explicit token is not ambient authority");
  });

  test("CORS: preflight 204 with methods and headers for an allowed origin, 403 for another; responses echo the origin", async () => {
    const pre = await fetch(guarded.url + "/api/messages", {
      method: "OPTIONS",
      headers: { origin: APP, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get("access-control-allow-origin"), APP);
    assert.equal(pre.headers.get("access-control-allow-credentials"), "true");
    assert.match(pre.headers.get("access-control-allow-methods") ?? "", /POST/);
    for (const h of ["authorization", "content-type", "last-event-id"]) assert.match(pre.headers.get("access-control-allow-headers") ?? "", new RegExp(h));
    assert.match(pre.headers.get("vary") ?? "", /Origin/);
    const evil = await fetch(guarded.url + "/api/stream", { method: "OPTIONS", headers: { origin: "https://evil.example", "access-control-request-method": "GET" } });
    assert.equal(evil.status, 403);
    assert.equal(evil.headers.get("access-control-allow-origin"), null);
    await evil.body?.cancel();
    const got = await fetch(guarded.url + "/api/messages?channel=c&since=0", { headers: { origin: APP } });
    assert.equal(got.status, 200);
    assert.equal(got.headers.get("access-control-allow-origin"), APP);
    assert.match(got.headers.get("access-control-expose-headers") ?? "", /ladder-cursor/);
    await got.body?.cancel();
    const other = await fetch(guarded.url + "/api/messages?channel=c&since=0", { headers: { origin: "https://evil.example" } });
    assert.equal(other.headers.get("access-control-allow-origin"), null);
    await other.body?.cancel();
    const none = await fetch(hub.url + "/api/messages", { method: "OPTIONS", headers: { origin: APP } });
    assert.equal(none.status, 405, "without cors the hub answers OPTIONS as before");
    await none.body?.cancel();
  });
});

describe("limits", () => {
  let limited: RunningServer;
  before(async () => {
    limited = await startHub({
      auth: { rules: [{ match: "*", subscribe: "anyone", publish: "anyone" }], apiKeys: [API_KEY] },
      limits: { connectionsPerIp: 2, publishPerSecond: 1, publishBurst: 2, firstFrameTimeoutMs: 300 },
    });
  });
  after(async () => {
    await limited.close();
  });

  const pub = (headers: Record<string, string> = {}): Promise<Response> =>
    fetch(limited.url + "/api/messages", { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify({ channel: "r", data: 1 }) });

  test("connections per IP: past the limit SSE, long-poll and WebSocket are refused 429 until a slot frees", async () => {
    const a = await openSse(limited.url + "/api/stream?channel=x");
    const b = await openSse(limited.url + "/api/stream?channel=y");
    await a.waitForText("event: ready");
    await b.waitForText("event: ready");
    const c = await fetch(limited.url + "/api/stream?channel=z");
    assert.equal(c.status, 429);
    assert.equal(c.headers.get("retry-after"), "1");
    await c.body?.cancel();
    const lp = await fetch(limited.url + "/api/messages?channel=z&wait=1");
    assert.equal(lp.status, 429);
    await lp.body?.cancel();
    assert.equal((await fetch(limited.url + "/api/messages?channel=z")).status, 200, "a plain poll holds nothing and is not counted");
    const ws = new WebSocket(limited.url.replace(/^http/, "ws") + "/api/ws");
    const status = await new Promise<number>((resolve) => {
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.once("open", () => resolve(101));
      ws.once("error", () => undefined);
    });
    ws.terminate();
    assert.equal(status, 429);
    a.close();
    const deadline = Date.now() + 3000;
    for (;;) {
      const again = await fetch(limited.url + "/api/stream?channel=z");
      await again.body?.cancel();
      if (again.status === 200) break;
      if (Date.now() > deadline) throw new Error("the slot was never released");
      await sleep(50);
    }
    b.close();
  });

  test("a WebSocket handshake that ws refuses (bad key) frees its per-IP slot", async () => {
    const { connect } = await import("node:net");
    const u = new URL(limited.url);
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve) => {
        const socket = connect({ host: u.hostname, port: Number(u.port) }, () =>
          socket.write("GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"),
        );
        socket.on("data", () => socket.destroy());
        socket.on("close", () => resolve());
        socket.on("error", () => resolve());
      });
    }
    await sleep(50);
    const a = await openSse(limited.url + "/api/stream?channel=k1");
    const b = await openSse(limited.url + "/api/stream?channel=k2");
    assert.equal(a.response.status, 200);
    assert.equal(b.response.status, 200);
    a.close();
    b.close();
    await sleep(100);
  });

  test("publish rate: past the burst HTTP gets 429 with Retry-After, WebSocket an error frame; API keys are exempt", async () => {
    await sleep(2100); // earlier tests' publishes must not count
    assert.equal((await pub()).status, 201);
    assert.equal((await pub()).status, 201);
    const third = await pub();
    assert.equal(third.status, 429);
    assert.equal(code(await third.json()), "rate_limited");
    assert.ok(Number(third.headers.get("retry-after")) >= 1);
    assert.equal((await pub(bearer(API_KEY))).status, 201);
    const ws = new WebSocket(limited.url.replace(/^http/, "ws") + "/api/ws");
    const frames: Array<Record<string, unknown>> = [];
    ws.on("message", (d) => frames.push(JSON.parse(String(d)) as Record<string, unknown>));
    await new Promise((resolve) => ws.once("open", resolve));
    ws.send(JSON.stringify({ type: "publish", room: "r", data: 1, ref: 7 }));
    for (let i = 0; i < 100 && frames.length === 0; i++) await sleep(20);
    assert.equal(frames[0]?.type, "error");
    assert.equal(frames[0]?.code, "rate_limited");
    assert.equal(frames[0]?.ref, 7);
    ws.close();
  });

  test("a WebSocket that sends no frame is closed 1008 after the first-frame timeout", async () => {
    await sleep(100); // the previous test's socket frees its slot
    const ws = new WebSocket(limited.url.replace(/^http/, "ws") + "/api/ws");
    const closed = new Promise<number>((resolve) => ws.once("close", (c) => resolve(c)));
    await new Promise((resolve) => ws.once("open", resolve));
    const started = Date.now();
    assert.equal(await closed, 1008);
    assert.ok(Date.now() - started < 2000);
  });
});

test("CLI: --auth-config reads rules, jwt, apiKeys, origins, cors and limits from a JSON file; unknown keys are refused", async () => {
  const { mkdtempSync, writeFileSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { resolveSettings, SettingsError } = await import("../src/cli/settings.js");
  const dir = mkdtempSync(join(tmpdir(), "ladder-auth-"));
  const file = join(dir, "auth.json");
  writeFileSync(
    file,
    JSON.stringify({
      rules: [{ match: "public.*", subscribe: "anyone", publish: "nobody" }],
      jwt: { secret: SECRET },
      apiKeys: [API_KEY],
      allowedOrigins: ["https://app.example"],
      cors: { origins: ["https://app.example"] },
      limits: { publishPerSecond: 5 },
    }),
  );
  const s = resolveSettings({ "auth-config": file }, {});
  assert.equal(s.auth?.jwt?.secret, SECRET);
  assert.deepEqual(s.auth?.apiKeys, [API_KEY]);
  assert.deepEqual(s.allowedOrigins, ["https://app.example"]);
  assert.equal(s.limits?.publishPerSecond, 5);
  assert.equal(resolveSettings({}, { LADDER_AUTH_CONFIG: file }).auth?.rules?.length, 1);
  const running = await startHub(s);
  try {
    assert.equal((await fetch(running.url + "/api/messages?channel=public.x")).status, 200);
    assert.equal((await fetch(running.url + "/api/messages?channel=private")).status, 401);
  } finally {
    await running.close();
  }
  writeFileSync(file, JSON.stringify({ rulez: [] }));
  assert.throws(() => resolveSettings({ "auth-config": file }, {}), SettingsError);
  const { Hub } = await import("../src/index.js");
  assert.throws(() => new Hub({ auth: { rules: [{ match: "x", subscribe: "everyone" as "anyone" }] } }), TypeError);
});
