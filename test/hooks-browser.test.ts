/**
 * The point of the connect hook, in a real browser: a page whose only credential is the app's own session
 * cookie (no Ladder token anywhere) subscribes and publishes on every rung; the hub asks the app who the
 * cookie belongs to. The same page without the cookie is refused. Chromium from Debian, via playwright-core.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser } from "playwright-core";
import { serve, type RunningServer } from "../src/index.js";
import { staticFiles } from "../src/server/edge/static.js";
import { json, startApp, type TestApp } from "./helpers/app.js";
import { launchChromium, requireBrowser } from "./helpers/browser.js";

const PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>hooks</title></head><body></body></html>`;

let app: TestApp;
let hub: RunningServer;
let browser: Browser | null = null;
let dir: string;

before(async () => {
  app = await startApp((call, res) => {
    if (call.path !== "/connect") return json(res, 404, {});
    const cookies = call.body.cookies as Record<string, string>;
    if (cookies.session !== "alice-session") return json(res, 401, { error: { message: "no session" } });
    return json(res, 200, { user: "alice", subscribe: ["chat.*"], publish: ["chat.*"] });
  });
  const { bundleClient } = (await import(new URL("../../scripts/build-client.mjs", import.meta.url).href)) as { bundleClient(): Promise<{ code: Uint8Array }> };
  dir = mkdtempSync(join(tmpdir(), "ladder-hooks-browser-"));
  writeFileSync(join(dir, "ladder-client.js"), (await bundleClient()).code);
  writeFileSync(join(dir, "index.html"), PAGE);
  hub = await serve({
    port: 0,
    host: "127.0.0.1",
    heartbeatMs: 250,
    auth: { rules: [{ match: "chat.*", subscribe: "token", publish: "token" }] },
    // No cache: each rung's requests reach the app, which the test checks.
    hooks: { connect: { url: `${app.url}/connect`, cookies: ["session"], cacheTtlMs: 0 } },
    fallback: staticFiles({ clientBundle: join(dir, "ladder-client.js"), demoDir: dir }),
  });
  browser = await launchChromium("connect hook browser test");
});
after(async () => {
  await browser?.close().catch(() => undefined);
  await hub?.close();
  await app?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** In the page: subscribe on one rung, publish through the client, and report what came back. */
async function roundTrip(withCookie: boolean, transport: string): Promise<{ received: unknown[]; published: string; state: string }> {
  const context = await browser!.newContext();
  try {
    if (withCookie) await context.addCookies([{ name: "session", value: "alice-session", url: hub.url, httpOnly: true }]);
    const page = await context.newPage();
    await page.goto(hub.url + "/");
    return await page.evaluate(async (rung) => {
      const bundle = "/ladder-client.js";
      const { createClient } = (await import(bundle)) as {
        createClient(o: object): {
          subscribe(c: string): { on(e: string, f: (m: { data: unknown }) => void): void };
          publish(c: string, d: unknown): Promise<{ id: string }>;
          cursor(c: string): string | null;
          state: string;
          close(): void;
        };
      };
      const client = createClient({ transport: rung, openTimeoutMs: 1500, pollIntervalMs: 200, longPollWaitSeconds: 2, backoff: { minMs: 50, maxMs: 200 } });
      const received: unknown[] = [];
      client.subscribe("chat.room").on("message", (m) => received.push(m.data));
      const deadline = Date.now() + 4000;
      while (!(client.state === "connected" && client.cursor("chat.room") !== null) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      let published = "";
      try {
        published = (await client.publish("chat.room", { from: rung })).id;
      } catch (error) {
        published = "refused: " + String((error as { code?: string }).code);
      }
      while (received.length === 0 && Date.now() < deadline + 2000 && !published.startsWith("refused")) await new Promise((r) => setTimeout(r, 20));
      const state = client.state;
      client.close();
      return { received, published, state };
    }, transport);
  } finally {
    await context.close();
  }
}

for (const rung of ["websocket", "sse", "long-poll", "poll"]) {
  test(`a page with only the app's session cookie subscribes and publishes over ${rung}`, { timeout: 30_000 }, async (t) => {
    if (!requireBrowser(t, browser)) return;
    const before = app.callsTo("/connect").length;
    const result = await roundTrip(true, rung);
    assert.match(result.published, /^\d+-\d+$/, `published: ${result.published}`);
    assert.deepEqual(result.received, [{ from: rung }]);
    const calls = app.callsTo("/connect").slice(before);
    assert.ok(calls.length >= 1, "the hub asked the app");
    assert.ok(calls.every((c) => (c.body.cookies as Record<string, string>).session === "alice-session"));
  });
}

test("the same page without the cookie is refused by the app", { timeout: 30_000 }, async (t) => {
  if (!requireBrowser(t, browser)) return;
  const result = await roundTrip(false, "sse");
  assert.deepEqual(result.received, []);
  assert.equal(result.published, "refused: unauthenticated");
});
