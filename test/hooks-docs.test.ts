/**
 * The Express backend of docs/hooks.md, run as it is printed: the code block is written to a file and started
 * as its own process, and a hub uses it for connect, subscribe, publish, backfill and webhooks. Its webhook
 * check (the docs' verification code) accepts the hub's signatures and refuses forged or stale ones.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { RunningServer } from "../src/index.js";
import { eventually } from "./helpers/app.js";
import { openSse, startHub } from "./helpers/server.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const HOOK_KEY = "hook-key-0123456789";
const SECRET = "webhook-secret-0123456789";

/** The docs' Express example: the js code block that starts with `// app.mjs`. */
function exampleFromDocs(): string {
  const markdown = readFileSync(join(ROOT, "docs", "hooks.md"), "utf8");
  const block = [...markdown.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!).find((code) => code.startsWith("// app.mjs"));
  assert.ok(block, "docs/hooks.md has the app.mjs example");
  return block;
}

let child: ChildProcess;
let appUrl: string;
let stdout = "";
let hub: RunningServer;

before(async () => {
  // Inside the repository, so `import "express"` resolves from its node_modules.
  const dir = join(ROOT, "dist", "docs-example");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "app.mjs"), exampleFromDocs());
  child = spawn(process.execPath, [join(dir, "app.mjs")], {
    env: { ...process.env, PORT: "0", LADDER_HOOK_KEY: HOOK_KEY, LADDER_WEBHOOK_SECRET: SECRET },
    stdio: ["ignore", "pipe", "inherit"],
  });
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
  await eventually(() => /app listening on \d+/.test(stdout), 10_000, "the example app to listen");
  appUrl = `http://127.0.0.1:${/app listening on (\d+)/.exec(stdout)![1]}`;
  hub = await startHub({
    historySize: 2,
    auth: {
      rules: [
        { match: "chat.admins", subscribe: "hook", publish: "hook" },
        { match: "chat.*", subscribe: "token", publish: "hook" },
      ],
    },
    hooks: {
      headers: { "x-hook-key": HOOK_KEY },
      connect: { url: `${appUrl}/ladder/connect`, cookies: ["session"] },
      subscribe: { url: `${appUrl}/ladder/subscribe` },
      publish: { url: `${appUrl}/ladder/publish` },
      backfill: { url: `${appUrl}/ladder/backfill` },
      webhooks: { url: `${appUrl}/ladder/webhooks`, secret: SECRET },
    },
  });
});
after(async () => {
  await hub?.close();
  child?.kill();
});

const alice = { cookie: "session=alice-session" };

async function publish(channel: string, data: unknown, headers: Record<string, string> = alice): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${hub.url}/api/messages`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify({ channel, data }) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

test("connect: the session cookie is Alice; no cookie is refused with the app's message", async () => {
  assert.equal((await fetch(`${hub.url}/api/messages?channel=chat.lobby`, { headers: alice })).status, 200);
  const refused = await fetch(`${hub.url}/api/messages?channel=chat.lobby`);
  assert.equal(refused.status, 401);
  assert.match(await refused.text(), /log in first/);
  // The app's own guard: a caller without the hub's key is turned away.
  assert.equal((await fetch(`${appUrl}/ladder/connect`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })).status, 403);
});

test("publish: the app validates and enriches; subscribe: the app decides for chat.admins", async () => {
  const first = await publish("chat.lobby", { text: "hello" });
  assert.equal(first.status, 201);
  assert.equal((await publish("chat.lobby", { text: 42 })).status, 403);
  const read = (await (await fetch(`${hub.url}/api/messages?channel=chat.lobby&since=0`, { headers: alice })).json()) as Array<{ data: unknown }>;
  assert.deepEqual(read.map((m) => m.data), [{ text: "hello", by: "Alice" }]);
  assert.equal((await fetch(`${hub.url}/api/messages?channel=chat.admins`, { headers: alice })).status, 200);
});

test("backfill: a cursor older than history gets the app's snapshot in the gap", async () => {
  const ids: string[] = [];
  for (const text of ["a", "b", "c", "d"]) ids.push(String((await publish("chat.backfill", { text })).body.id));
  const res = await fetch(`${hub.url}/api/messages?channel=chat.backfill&since=${ids[0]}`, { headers: alice });
  const body = (await res.json()) as Array<Record<string, unknown>>;
  assert.deepEqual(body[0], { channel: "chat.backfill", snapshot: { lines: ["a", "b", "c", "d"].map((text) => ({ text, by: "Alice" })) } });
  assert.equal(JSON.parse(res.headers.get("ladder-gap")!).reason, "trimmed");
});

test("webhooks: the app verifies the hub's signatures; forged and stale ones are refused", async () => {
  const stream = await openSse(`${hub.url}/api/stream?channel=chat.webhooks`, alice);
  await stream.waitForText("event: ready");
  await eventually(() => stdout.includes("webhook channel_occupied chat.webhooks"), 5000, "the app to log channel_occupied");
  stream.close();
  await eventually(() => stdout.includes("webhook channel_vacated chat.webhooks"), 5000, "the app to log channel_vacated");
  const send = (timestamp: number, body: string, secret = SECRET): Promise<Response> =>
    fetch(`${appUrl}/ladder/webhooks`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-hook-key": HOOK_KEY,
        "ladder-webhook-timestamp": String(timestamp),
        "ladder-webhook-signature": "v1=" + createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex"),
      },
      body,
    });
  const now = Math.floor(Date.now() / 1000);
  const body = JSON.stringify({ id: "x", event: "channel_occupied", channel: "chat.forged", time: Date.now() });
  assert.equal((await send(now, body)).status, 204);
  assert.equal((await send(now, body, "another-secret-0123456789")).status, 401);
  assert.equal((await send(now - 3600, body)).status, 401);
});
