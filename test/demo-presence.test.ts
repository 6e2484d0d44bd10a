/**
 * The demo's chat shows who is in the room, live, in both tabs: two Chromium pages against a real
 * `ladder serve` (demo on, so presence on `demo.*`), each named; a tab that closes leaves the other's
 * list after the leave delay. A screenshot goes to artifacts/screenshots/.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { useChromium } from "./helpers/browser.js";
import { startNode } from "./helpers/nodes.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SCREENSHOTS = join(ROOT, "artifacts", "screenshots");
const chromiumFor = useChromium("demo presence");

test("the chat lists both tabs by name, live; a closed tab leaves the other's list", async (t) => {
  const browser = chromiumFor(t);
  if (!browser) return;
  const node = await startNode("memory", ["--demo", "--presence-leave-delay", "1"]);
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const problems: string[] = [];
    const open = async (name: string) => {
      const page = await context.newPage();
      page.on("pageerror", (error) => problems.push(error.message));
      await page.addInitScript((n) => localStorage.setItem("ladder-demo:name", n), name);
      await page.goto(node.url);
      return page;
    };
    const ada = await open("Ada");
    const grace = await open("Grace");
    const members = (page: typeof ada) => page.locator("#chat-members").innerText();
    await ada.waitForFunction(() => document.querySelector("#chat-members")?.textContent?.includes("Grace"), undefined, { timeout: 10_000 });
    await grace.waitForFunction(() => document.querySelector("#chat-members")?.textContent?.includes("Ada"), undefined, { timeout: 10_000 });
    assert.match(await members(ada), /In the room \(2\): Ada \(you\), Grace/);
    assert.match(await members(grace), /In the room \(2\): Grace \(you\), Ada/);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await ada.locator("#websocket").screenshot({ path: join(SCREENSHOTS, "demo-presence.png") });
    await grace.close();
    await ada.waitForFunction(() => !document.querySelector("#chat-members")?.textContent?.includes("Grace"), undefined, { timeout: 10_000 });
    assert.match(await members(ada), /In the room \(1\): Ada \(you\)$/);
    assert.deepEqual(problems, []);
    await context.close();
  } finally {
    await node.kill();
  }
});
