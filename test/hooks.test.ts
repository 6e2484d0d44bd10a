/**
 * The connect, subscribe and publish hooks against a real app server: a session cookie becomes a user on
 * every rung, the app allows, denies or replaces, and its answers are cached so a poll loop asks it once.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import type { RunningServer } from "../src/index.js";
import { json, startApp, type TestApp } from "./helpers/app.js";
import { openSse, startHub } from "./helpers/server.js";

const USERS: Record<string, { user: string; subscribe: string[]; publish: string[] }> = {
  "alice-session": { user: "alice", subscribe: ["room.*", "hooked.*"], publish: ["room.*", "hooked.*"] },
  "bob-session": { user: "bob", subscribe: ["room.*"], publish: [] },
  "carol-session": { user: "carol", subscribe: ["room.*"], publish: [] },
};

let app: TestApp;
let hub: RunningServer;

before(async () => {
  app = await startApp((call, res) => {
    const body = call.body;
    switch (call.path) {
      case "/connect": {
        const id = (body.cookies as Record<string, string>).session;
        const user = id ? USERS[id] : undefined;
        if (!user) return json(res, 401, { error: { message: "log in first" } });
        return json(res, 200, { ...user, info: { name: user.user.toUpperCase() } });
      }
      case "/subscribe":
        return json(res, 200, body.channel === "hooked.closed" ? { allow: false, message: "closed room" } : { allow: true });
      case "/publish": {
        const data = body.data as { text?: string };
        if (data.text?.includes("badword")) return json(res, 200, { allow: false, message: "moderated" });
        if (body.channel === "hooked.enrich") return json(res, 200, { allow: true, data: { ...data, by: body.user, name: (body.info as { name: string }).name } });
        return json(res, 200, { allow: true });
      }
      default:
        res.writeHead(404).end();
    }
  });
  hub = await startHub({
    auth: {
      rules: [
        { match: "room.*", subscribe: "token", publish: "token" },
        { match: "hooked.*", subscribe: "hook", publish: "hook" },
      ],
    },
    hooks: {
      connect: { url: `${app.url}/connect`, cookies: ["session"] },
      subscribe: { url: `${app.url}/subscribe` },
      publish: { url: `${app.url}/publish` },
    },
  });
});
after(async () => {
  await hub.close();
  await app.close();
});

const cookie = (id: string): Record<string, string> => ({ cookie: `session=${id}; other=x` });

async function poll(channel: string, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${hub.url}/api/messages?channel=${channel}&since=0`, { headers });
  return { status: res.status, body: await res.json() };
}

async function post(channel: string, data: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${hub.url}/api/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ channel, data }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function ws(headers: Record<string, string>): Promise<{ socket: WebSocket; frames: Array<Record<string, unknown>>; next: (type: string) => Promise<Record<string, unknown>> }> {
  const socket = new WebSocket(hub.url.replace(/^http/, "ws") + "/api/ws", { headers });
  const frames: Array<Record<string, unknown>> = [];
  const taken = new Set<number>();
  socket.on("message", (raw) => frames.push(JSON.parse(String(raw)) as Record<string, unknown>));
  const next = async (type: string): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + 5000;
    for (;;) {
      const index = frames.findIndex((f, i) => !taken.has(i) && f.type === type);
      if (index >= 0) {
        taken.add(index);
        return frames[index]!;
      }
      if (Date.now() > deadline) throw new Error(`no ${type} frame; have ${JSON.stringify(frames)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return new Promise((resolve, reject) => {
    socket.once("open", () => resolve({ socket, frames, next }));
    socket.once("error", reject);
    socket.once("unexpected-response", (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
  });
}

describe("connect hook", () => {
  test("a session cookie is a user: poll, publish and SSE work with no token", async () => {
    assert.equal((await post("room.a", { n: 1 }, cookie("alice-session"))).status, 201);
    const answer = await poll("room.a", cookie("alice-session"));
    assert.equal(answer.status, 200);
    assert.deepEqual((answer.body as Array<{ data: unknown }>).map((m) => m.data), [{ n: 1 }]);
    const stream = await openSse(`${hub.url}/api/stream?channel=room.a&since=0`, cookie("alice-session"));
    try {
      assert.equal(stream.response.status, 200);
      await stream.waitFor(1);
      assert.deepEqual(JSON.parse(stream.events[0]!.data), { n: 1 });
    } finally {
      stream.close();
    }
  });

  test("the app's refusal is a 401 with its message; its grants bound what the user may do", async () => {
    const anonymous = await poll("room.a");
    assert.equal(anonymous.status, 401);
    assert.match(JSON.stringify(anonymous.body), /log in first/);
    assert.equal((await poll("room.a", cookie("stolen"))).status, 401);
    // Bob may read room.* but the app granted him no publish.
    assert.equal((await poll("room.a", cookie("bob-session"))).status, 200);
    assert.equal((await post("room.a", { n: 2 }, cookie("bob-session"))).status, 403);
  });

  test("the app is asked once per credentials within the TTL, not on every poll", async () => {
    const before = app.callsTo("/connect").length;
    for (let i = 0; i < 5; i++) assert.equal((await poll("room.cache", { cookie: "session=carol-session" })).status, 200);
    assert.equal(app.callsTo("/connect").length - before, 1);
    const call = app.callsTo("/connect").at(-1)!;
    // Only the listed cookie goes to the app; the transport, address and channels come along.
    assert.deepEqual(call.body.cookies, { session: "carol-session" });
    assert.equal(call.body.transport, "poll");
    assert.deepEqual(call.body.channels, ["room.cache"]);
    assert.equal((call.body.client as { ip: string }).ip, "127.0.0.1");
  });

  test("a WebSocket upgrade with the cookie joins and publishes; without it the upgrade is refused", async () => {
    const client = await ws(cookie("alice-session"));
    try {
      client.socket.send(JSON.stringify({ type: "join", room: "room.ws" }));
      await client.next("joined");
      client.socket.send(JSON.stringify({ type: "publish", room: "room.ws", data: "hi", ref: 1 }));
      await client.next("ack");
      assert.equal((await client.next("message")).data, "hi");
    } finally {
      client.socket.close();
    }
    await assert.rejects(ws({ cookie: "session=nobody" }), /401/);
  });
});

describe("subscribe and publish hooks", () => {
  test("subscribe: the app allows or denies per channel, on poll, SSE and WebSocket", async () => {
    assert.equal((await poll("hooked.open", cookie("alice-session"))).status, 200);
    const denied = await poll("hooked.closed", cookie("alice-session"));
    assert.equal(denied.status, 403);
    assert.match(JSON.stringify(denied.body), /closed room/);
    const stream = await fetch(`${hub.url}/api/stream?channel=hooked.open&channel=hooked.closed`, { headers: cookie("alice-session") });
    assert.equal(stream.status, 403);
    await stream.body?.cancel();
    const client = await ws(cookie("alice-session"));
    try {
      client.socket.send(JSON.stringify({ type: "join", room: "hooked.closed", ref: "j" }));
      const error = await client.next("error");
      assert.equal(error.code, "forbidden");
      assert.equal(error.ref, "j");
      client.socket.send(JSON.stringify({ type: "join", room: "hooked.open" }));
      assert.equal((await client.next("joined")).room, "hooked.open");
    } finally {
      client.socket.close();
    }
    const asked = app.callsTo("/subscribe").map((c) => c.body);
    assert.ok(asked.some((b) => b.channel === "hooked.closed" && b.user === "alice"));
  });

  test("joins waiting on the subscribe hook together still stop at maxChannelsPerConnection", async () => {
    const client = await ws(cookie("alice-session"));
    try {
      for (let i = 0; i < 40; i++) client.socket.send(JSON.stringify({ type: "join", room: `hooked.many${i}` }));
      const deadline = Date.now() + 5000;
      const settled = (): number => client.frames.filter((f) => f.type === "joined" || f.type === "error").length;
      while (settled() < 40 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(client.frames.filter((f) => f.type === "joined").length, 32);
      assert.equal(client.frames.filter((f) => f.code === "too_many_channels").length, 8);
    } finally {
      client.socket.close();
    }
  });

  test("publish: allowed as is, denied with the app's message, or replaced by the app's data", async () => {
    assert.equal((await post("hooked.chat", { text: "hello" }, cookie("alice-session"))).status, 201);
    const denied = await post("hooked.chat", { text: "a badword" }, cookie("alice-session"));
    assert.equal(denied.status, 403);
    assert.match(JSON.stringify(denied.body), /moderated/);
    assert.equal((await post("hooked.enrich", { text: "hey" }, cookie("alice-session"))).status, 201);
    const chat = (await poll("hooked.chat", cookie("alice-session"))).body as Array<{ data: unknown }>;
    assert.deepEqual(chat.map((m) => m.data), [{ text: "hello" }]);
    const enriched = (await poll("hooked.enrich", cookie("alice-session"))).body as Array<{ data: unknown }>;
    assert.deepEqual(enriched.map((m) => m.data), [{ text: "hey", by: "alice", name: "ALICE" }]);
    // The same over a WebSocket: the ack follows the app's answer.
    const client = await ws(cookie("alice-session"));
    try {
      client.socket.send(JSON.stringify({ type: "publish", room: "hooked.enrich", data: { text: "ws" }, ref: 7 }));
      assert.equal((await client.next("ack")).ref, 7);
      client.socket.send(JSON.stringify({ type: "publish", room: "hooked.chat", data: { text: "badword" }, ref: 8 }));
      const error = await client.next("error");
      assert.deepEqual([error.code, error.ref], ["forbidden", 8]);
    } finally {
      client.socket.close();
    }
    const after = (await poll("hooked.enrich", cookie("alice-session"))).body as Array<{ data: unknown }>;
    assert.deepEqual(after.at(-1)!.data, { text: "ws", by: "alice", name: "ALICE" });
  });
});
