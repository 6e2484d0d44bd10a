/**
 * `ladder bench`, the real binary, against hubs started here: every pattern measured and the figures
 * checked against what the hub itself counted; a hub with access control (an API key works, nothing
 * refuses with one readable line); TLS with HTTP/2; and the HTML report opened in Chromium with no script
 * error, a screenshot saved under artifacts/screenshots/. The loss accounting is tested as a table.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { after, before, describe, test } from "node:test";
import { account, type BenchReport } from "../src/bench/run.js";
import type { RunningServer } from "../src/index.js";
import { useChromium } from "./helpers/browser.js";
import { runNode, type ChildRun } from "./helpers/child.js";
import { startHub } from "./helpers/server.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "bin", "ladder.js");
const SCREENSHOTS = join(ROOT, "artifacts", "screenshots");

type Run = ChildRun;

function ladder(args: string[], timeoutMs = 60_000): Promise<Run> {
  return runNode(BIN, args, timeoutMs);
}

async function published(hub: RunningServer): Promise<number> {
  const text = await (await fetch(`${hub.url}/metrics`)).text();
  return Number(/^ladder_messages_published_total (\d+)/m.exec(text)![1]);
}

const dir = mkdtempSync(join(tmpdir(), "ladder-bench-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("ladder bench against a local hub", () => {
  let hub: RunningServer;
  let report: BenchReport;
  let run: Run;
  const chromiumFor = useChromium("ladder bench report");

  before(async () => {
    hub = await startHub({ metrics: true });
    run = await ladder([
      "bench",
      "--url",
      hub.url,
      "--subscribers",
      "12",
      "--channels",
      "3",
      "--rate",
      "40",
      "--duration",
      "2",
      "--size",
      "200",
      "--poll-interval",
      "200",
      "--long-poll-wait",
      "5",
      "--json",
      join(dir, "bench.json"),
      "--report",
      join(dir, "bench.html"),
    ]);
    report = JSON.parse(readFileSync(join(dir, "bench.json"), "utf8")) as BenchReport;
  });
  after(() => hub.close());

  test("every pattern is measured; the figures match what the hub counted; nothing lost or duplicated", async () => {
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(report.results.map((r) => r.pattern), ["poll", "long-poll", "sse", "websocket"]);
    const hubPublished = await published(hub);
    assert.equal(report.results.reduce((n, r) => n + r.published, 0), hubPublished, "each publish the bench made reached the hub once");
    for (const r of report.results) {
      assert.equal(r.published, 80, `${r.pattern}: 40/s for 2 s`);
      assert.equal(r.publishFailures, 0);
      assert.equal(r.connected, 12);
      // 12 subscribers, 4 on each of 3 channels; the 80 messages go round robin over the channels, so
      // every message is due to 4 subscribers.
      assert.equal(r.expected, 4 * 80, `${r.pattern}: expected deliveries`);
      assert.equal(r.delivered, r.expected, `${r.pattern}: all delivered`);
      assert.equal(r.lost, 0);
      assert.equal(r.duplicated, 0);
      assert.ok(r.latencyMs.p50 > 0 && r.latencyMs.p50 <= r.latencyMs.p99 && r.latencyMs.p99 <= r.latencyMs.max + 0.001, `${r.pattern}: ordered quantiles`);
      assert.ok(r.bytesInPerDelivery >= 200, `${r.pattern}: at least the data's 200 bytes per delivery come down (${r.bytesInPerDelivery})`);
      assert.equal(r.perSecond.delivered.reduce((a, b) => a + b, 0), r.delivered, `${r.pattern}: the timeline adds up`);
    }
    const by = new Map(report.results.map((r) => [r.pattern, r]));
    // One request per stream: SSE and WebSocket make no requests after connecting; polls make many.
    assert.equal(by.get("sse")!.requests, 0);
    assert.equal(by.get("websocket")!.requests, 0);
    assert.ok(by.get("poll")!.requests >= 12 * 8, `interval polls: 12 subscribers every 200 ms for 2 s (${by.get("poll")!.requests})`);
    // Whether an interval poll comes back empty depends on timing (about 2.7 messages are due per poll here).
    assert.ok(by.get("poll")!.emptyAnswers <= by.get("poll")!.requests, "empty answers are some of the polls");
    assert.ok(by.get("sse")!.bytesInPerDelivery < 2 * 260, "an SSE delivery costs about its event's size");
    // A long-poll is answered at each burst and asked again: about one request per delivery at this rate.
    const longPoll = by.get("long-poll")!;
    assert.ok(longPoll.requests >= longPoll.delivered / 4 && longPoll.requests <= longPoll.delivered + 12 * 2, `long-poll requests ${longPoll.requests} for ${longPoll.delivered} deliveries`);
    assert.match(run.stdout, /^pattern\s+conn p50/m);
    assert.match(run.stderr, /websocket drain 100%/, "progress lines on a non-TTY");
    assert.equal(report.readyz.status, 200);
  });

  test("Chromium renders the HTML report with no script error; screenshot saved", async (t) => {
    const browser = chromiumFor(t);
    if (!browser) return;
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(error.message));
    page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
    page.on("request", (r) => !r.url().startsWith("file:") && problems.push(`fetched ${r.url()}`));
    await page.goto(pathToFileURL(join(dir, "bench.html")).href);
    assert.deepEqual(problems, []);
    assert.equal(await page.locator("table.guide tr.measured").count(), 5, "a measured row under Connection, Protocol, Auto-reconnect, Latency and Main cost");
    assert.equal(await page.locator("section.pattern").count(), 4);
    assert.equal(await page.locator("section.pattern svg").count(), 8, "a histogram and a timeline per pattern");
    assert.match((await page.locator("table.guide").innerText()).replace(/\s+/g, " "), /p50 [\d.]+ ms, p99 [\d.]+ ms/);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: join(SCREENSHOTS, "bench-report.png"), fullPage: true });
    await page.close();
  });
});

test("a hub with access control: an API key benches, none gets one readable line and exit 1", async () => {
  const key = "bench-test-key-0123456789abcdef";
  const hub = await startHub({ auth: { rules: [{ match: "*", subscribe: "token", publish: "token" }], apiKeys: [key] } });
  try {
    const ok = await ladder(["bench", "--url", hub.url, "--patterns", "sse,websocket", "--subscribers", "3", "--rate", "20", "--duration", "1", "--api-key", key]);
    assert.equal(ok.code, 0, ok.stderr);
    const refused = await ladder(["bench", "--url", hub.url, "--patterns", "sse", "--subscribers", "2", "--duration", "1"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^ladder: cannot bench .*no sse subscriber could connect: SSE answered 401/m);
    assert.doesNotMatch(refused.stderr, /\n\s+at /, "no stack trace");
  } finally {
    await hub.close();
  }
});

test("TLS with HTTP/2: SSE and polls multiplexed over h2, WebSocket over HTTP/1.1", async () => {
  const hub = await startHub({ tls: "self-signed" });
  try {
    const json = join(dir, "tls.json");
    const run = await ladder(["bench", "--url", hub.url, "--insecure", "--patterns", "long-poll,sse,websocket", "--subscribers", "4", "--rate", "20", "--duration", "1", "--json", json]);
    assert.equal(run.code, 0, run.stderr);
    const tls = JSON.parse(readFileSync(json, "utf8")) as BenchReport;
    assert.deepEqual(
      tls.results.map((r) => [r.pattern, r.protocol, r.lost, r.duplicated, r.delivered === r.expected]),
      [
        ["long-poll", "h2", 0, 0, true],
        ["sse", "h2", 0, 0, true],
        ["websocket", "http/1.1", 0, 0, true],
      ],
    );
    const refused = await ladder(["bench", "--url", hub.url, "--patterns", "sse", "--subscribers", "1", "--duration", "1"]);
    assert.equal(refused.code, 1, "an unverifiable certificate is refused without --insecure");
    assert.match(refused.stderr, /^ladder: cannot bench .*certificate/m);
  } finally {
    await hub.close();
  }
});

test("usage mistakes: one line each, exit 2", async () => {
  for (const [args, message] of [
    [["bench"], /needs --url/],
    [["bench", "--url", "127.0.0.1:8080"], /--url: expected a URL with a scheme, like http:\/\//],
    [["bench", "--url", "ftp://hub.example"], /--url: expected http:\/\/ or https:\/\//],
    [["bench", "--url", "http://x", "--patterns", "carrier-pigeon"], /unknown pattern "carrier-pigeon"/],
    [["bench", "--url", "http://x", "--subscribers", "0"], /--subscribers: expected a whole number from 1/],
  ] as const) {
    const run = await ladder([...args]);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.match(run.stderr, message);
    assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
  }
});

describe("loss accounting", () => {
  const acked = [
    { seq: 1, id: "100-0" },
    { seq: 2, id: "100-1" },
    { seq: 3, id: "101-0" },
    { seq: 4, id: "102-0" },
  ];
  const gap = (since: string, resume: string) => ({ channel: "c", reason: "trimmed" as const, since, resume });
  const cases: Array<[string, number[], ReturnType<typeof gap>[], { lost: number; gapped: number }]> = [
    ["everything received", [1, 2, 3, 4], [], { lost: 0, gapped: 0 }],
    ["one missing, no gap signal: lost", [1, 2, 4], [], { lost: 1, gapped: 0 }],
    ["missing ones inside a gap are excused", [1, 4], [gap("100-0", "101-0")], { lost: 0, gapped: 2 }],
    ["a gap's since is exclusive", [2, 3, 4], [gap("100-0", "100-1")], { lost: 1, gapped: 0 }],
    ["outside the gap still counts as lost", [1], [gap("100-0", "100-1")], { lost: 2, gapped: 1 }],
    ["a gap from the start cursor excuses everything up to its resume", [], [gap("0", "101-0")], { lost: 1, gapped: 3 }],
    ["a composite cursor cannot be placed and excuses nothing", [], [gap("a=100-0;b=1-0", "102-0")], { lost: 4, gapped: 0 }],
  ];
  for (const [name, got, gaps, expected] of cases) {
    test(name, () => {
      assert.deepEqual(account(new Map(got.map((s) => [s, 1])), gaps, acked), expected);
    });
  }
});
