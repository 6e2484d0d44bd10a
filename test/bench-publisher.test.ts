/**
 * The fan-out bench's `--publisher ws` (bench/publisher.ts, bench/ws-publish.ts): a short real run of
 * `dist/bench/run.js` in which every message is published as an acked WebSocket frame and reaches every
 * subscriber, each implementation labelled with the publisher it used; and, against a stand-in server
 * that acks some publishes, refuses some and answers others never, every publish that was not acked
 * counted as a failure. No timing is asserted.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, test } from "node:test";
import { WebSocketServer, type WebSocket } from "ws";
import { findNchan } from "../bench/nchan.js";
import { parseOptions, UsageError } from "../bench/options.js";
import { Publisher } from "../bench/publisher.js";
import { publisherPlan, type CaseResult } from "../bench/scenario.js";
import { PublisherSockets, type FrameOutcome } from "../bench/ws-publish.js";
import { runNode, type ChildRun } from "./helpers/child.js";
import { sleep } from "./helpers/server.js";

const RUN = fileURLToPath(new URL("../bench/run.js", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "ladder-bench-publisher-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function bench(args: string[], timeoutMs = 110_000): Promise<ChildRun> {
  return runNode(RUN, args, timeoutMs);
}

test("--publisher ws, a short real run: every publish acked, every message delivered, each implementation labelled", async () => {
  const nchan = typeof findNchan() !== "string";
  const out = join(dir, "ws.json");
  // 20 channels of one subscriber each, as the many-small-channels shape; 60 messages, 3 per channel.
  const run = await bench([
    ...["--patterns", "sse,websocket", "--subscribers", "20", "--channels", "20", "--rate", "60", "--seconds", "1", "--warmup", "0.2"],
    ...["--publisher", "ws", "--publisher-connections", "2", "--impls", "ladder,baseline,nchan", "--no-pin", "--out", out],
  ]);
  assert.equal(run.code, 0, run.stderr);
  const results = (JSON.parse(readFileSync(out, "utf8")) as { results: CaseResult[] }).results;
  assert.deepEqual(
    results.map((r) => `${r.pattern}/${r.impl}/${r.publisher}`),
    ["sse", "websocket"].flatMap((p) => [`${p}/ladder/ws×2`, `${p}/baseline/ws×2`, ...(nchan ? [`${p}/nchan/http`] : [])]),
    "Ladder and the baseline publish over WebSockets; Nchan on 20 channels stays on HTTP",
  );
  for (const r of results) {
    const name = `${r.pattern}/${r.impl}`;
    assert.equal(r.published, 60, `${name}: every publish of the phase acked`);
    assert.equal(r.publishFailed + r.publishRefused + r.publishUnanswered, 0, `${name}: no publish failed`);
    assert.equal(r.expected, 60, `${name}: one subscriber per message`);
    assert.equal(r.delivered, r.expected, `${name}: every message arrived`);
    // The kernel's share is the serving process's stime: part of the whole, never more.
    assert.ok(Number.isFinite(r.systemUsPerDelivered) && r.systemUsPerDelivered >= 0, `${name}: kernel µs per delivery ${r.systemUsPerDelivered}`);
    assert.ok(r.systemUsPerDelivered <= r.cpuUsPerDelivered, `${name}: kernel ${r.systemUsPerDelivered} µs within the whole ${r.cpuUsPerDelivered} µs`);
  }
  assert.match(run.stderr, /in the kernel\), server \d+% \/ load/);
  assert.match(run.stdout, /^publisher: ladder ws×2, baseline ws×2/m);
  assert.match(run.stdout, /^pattern\s+impl\s+publisher\s+subscribers .* failed pubs$/m);
  assert.match(run.stdout, /^sse\s+ladder\s+ws×2\s/m);
  if (nchan) {
    assert.match(run.stdout, /nchan http \(published over http, not ws: Nchan's WebSocket publisher binds one channel per connection/);
    assert.match(run.stdout, /^sse\s+ws×2 \/ http\s/m, "the ladder / nchan ratios name both publishers");
    assert.match(run.stdout, /^note: sse ladder \/ nchan compares different publishers/m);
  }
});

/**
 * A stand-in publisher endpoint: of the publish frames it gets, acks the first 4, refuses the next 3 with
 * an error frame, leaves the next 2 unanswered, and closes the connection at the 10th.
 */
async function partialServer(): Promise<{ url: URL; frames: () => number; close: () => Promise<void> }> {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", path: "/api/ws" });
  await new Promise((resolve) => wss.once("listening", resolve));
  let frames = 0;
  wss.on("connection", (ws: WebSocket) => {
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data)) as { type: string; ref: number; room: string };
      assert.equal(frame.type, "publish");
      const n = ++frames;
      if (n <= 4) ws.send(JSON.stringify({ type: "ack", ref: frame.ref, id: `${n}-0`, room: frame.room }));
      else if (n <= 7) ws.send(JSON.stringify({ type: "error", code: "unavailable", message: "refused here", ref: frame.ref }));
      else if (n === 10) ws.terminate();
    });
  });
  const { port } = wss.address() as { port: number };
  return { url: new URL(`http://127.0.0.1:${port}`), frames: () => frames, close: () => new Promise((resolve) => wss.close(() => resolve())) };
}

test("a ws publish that is refused or never answered counts as failed, never as published", async () => {
  const server = await partialServer();
  const publisher = new Publisher(server.url, 5, { via: "ws" });
  try {
    await publisher.open();
    const result = await publisher.run(100, 0.2);
    assert.equal(result.attempted, 20);
    assert.equal(result.ok, 4, "the four acked");
    assert.equal(result.refused, 3, "the three error frames");
    assert.equal(result.unanswered, 13, "the two left unanswered, the one that closed the connection and the nine sent after");
    assert.equal(result.failed, 16);
    assert.equal(server.frames(), 10, "nothing is sent on a closed connection");
  } finally {
    publisher.close();
    await server.close();
  }
});

test("a publish frame with no answer within the timeout ends as unanswered", async () => {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((resolve) => wss.once("listening", resolve));
  const { port } = wss.address() as { port: number };
  const sockets = await PublisherSockets.open(`ws://127.0.0.1:${port}`, 1, "ref", 150);
  const outcomes: FrameOutcome[] = [];
  try {
    for (let i = 0; i < 3; i++) sockets.send(0, (ref) => `{"type":"publish","room":"r","ref":${ref},"data":${i}}`, 1, (o) => outcomes.push(o));
    assert.equal(sockets.inFlight, 3);
    await sleep(600);
    assert.deepEqual(outcomes, Array.from({ length: 3 }, () => ({ acked: 0, refused: 0, unanswered: 1 })));
    assert.equal(sockets.inFlight, 0);
  } finally {
    sockets.close();
    await new Promise((resolve) => wss.close(resolve));
  }
});

test("--publisher: http by default, ws with its connections; refused where it does not apply", () => {
  const fanOut = parseOptions([]);
  assert.ok(fanOut !== "help");
  assert.equal(fanOut.publisher, "http");
  const ws = parseOptions(["--publisher", "ws", "--publisher-connections", "4"]);
  assert.ok(ws !== "help");
  assert.deepEqual([ws.publisher, ws.publisherConnections], ["ws", 4]);
  assert.deepEqual([publisherPlan("ladder", ws).label, publisherPlan("baseline", ws).label], ["ws×4", "ws×4"]);
  const floor = publisherPlan("floor", ws);
  assert.deepEqual([floor.via, floor.label, floor.fallback], ["ws", "ws×4", null], "the floor takes Ladder's publish frames");
  for (const args of [["--publisher", "carrier-pigeon"], ["--publisher-connections", "2"], ["--publisher", "ws", "--publish", "http"], ["--publisher", "ws", "--engines", "memory"]]) {
    assert.throws(() => parseOptions(args), UsageError, args.join(" "));
  }
});
