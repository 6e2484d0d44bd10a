/**
 * The demo's backfill panel in Chromium against a real `ladder serve` (demo on, history of 5): the page cuts
 * its connection, the board publishes past history, the page reconnects with its old cursor, and the gap
 * arrives with the demo backfill hook's snapshot — after which the page shows exactly the hub's board.
 * A screenshot of the panel goes to artifacts/screenshots/.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { useChromium } from "./helpers/browser.js";
import { startNode } from "./helpers/nodes.js";

const SCREENSHOTS = join(fileURLToPath(new URL("../../", import.meta.url)), "artifacts", "screenshots");
const chromiumFor = useChromium("demo backfill");

interface Board {
  state: { total: number; recent: string[] };
  historySize: number;
}

test("cut, publish past history, reconnect: the board is repaired from the snapshot and equals the hub's", async (t) => {
  const browser = chromiumFor(t);
  if (!browser) return;
  const node = await startNode("memory", ["--demo", "--history-size", "5"]);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await context.newPage();
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(error.message));
    await page.goto(node.url);
    const text = (id: string): Promise<string> => page.locator(`#${id}`).innerText();
    const server = async (): Promise<Board> => (await (await fetch(`${node.url}/demo/board`)).json()) as Board;
    await page.waitForFunction(() => document.querySelector("#board-status")?.textContent?.startsWith("Connected"), undefined, { timeout: 10_000 });

    await page.click("#board-add");
    await page.waitForFunction(() => document.querySelector("#board-total")?.textContent === "1", undefined, { timeout: 5000 });
    await page.click("#board-cut");
    await page.click("#board-past");
    await page.waitForFunction(() => document.querySelector("#board-note")?.textContent?.startsWith("The hub took"), undefined, { timeout: 5000 });
    const behind = await server();
    assert.equal(behind.historySize, 5);
    assert.equal(behind.state.total, 1 + 5 + 5, "one item, then history size + 5");
    assert.equal(await text("board-total"), "1", "cut off: the page has not seen them");

    await page.click("#board-reconnect");
    await page.waitForFunction(() => document.querySelector("#board-note")?.textContent?.includes("Repaired from the app’s snapshot"), undefined, { timeout: 5000 });
    // The history left after the snapshot (the last 5) must not count twice.
    await page.waitForTimeout(300);
    const after = await server();
    assert.equal(await text("board-total"), String(after.state.total));
    const items = await page.locator("#board-recent li").allInnerTexts();
    assert.deepEqual(items, after.state.recent);
    assert.match(await text("board-note"), /^Gap \(trimmed\)/);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.locator("#backfill").screenshot({ path: join(SCREENSHOTS, "demo-backfill.png") });

    // And it goes on live from there.
    await page.click("#board-add");
    await page.waitForFunction((n) => document.querySelector("#board-total")?.textContent === String(n), after.state.total + 1, { timeout: 5000 });
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
    await node.kill();
  }
});
