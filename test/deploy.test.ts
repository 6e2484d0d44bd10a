/**
 * The deploy recipes of docs/deploy.md, started for real: nginx and Caddy (Debian's packages) with the
 * files in deploy/, in front of three `ladder serve` nodes sharing Redis. The client runs on every rung
 * through each front over TLS; the busiest node is SIGKILLed mid-stream; every subscriber must still hold
 * exactly the channel's log, in order. A front configured the wrong way (deploy/nginx/broken.conf) shows
 * its symptoms, and the client still delivers through it by stepping down the ladder. The systemd unit is
 * checked by systemd-analyze and its command line by starting it; the alert rules name only metrics a
 * real hub exports.
 *
 * Needs Redis at 127.0.0.1:6379 (or LADDER_TEST_REDIS_URL), nginx-light and caddy; skips loudly
 * without them locally, fails under CI=true.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { connect as connectH2 } from "node:http2";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { createClient, type LadderClient, type Message, type TransportName, type WebSocketConstructor } from "../src/client/index.js";
import { serve } from "../src/index.js";
import { brokerAvailable, deleteRedisKeys, hasProgram, IN_CI, programAvailable, REDIS_URL, waitUntil } from "./helpers/brokers.js";
import { recipe, startFront, startNginx, type Front, type FrontKind } from "./helpers/fronts.js";
import { isReady, startNode, type LadderNode } from "./helpers/nodes.js";
import { sleep, upgradeStatusAt } from "./helpers/server.js";

// The fronts serve a self-signed certificate made for this run; this process alone trusts it.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

const VERSION_ARGS: Record<FrontKind, string[]> = { nginx: ["-v"], caddy: ["version"] };
const RUNGS: Array<TransportName | "auto"> = ["websocket", "sse", "long-poll", "poll", "auto"];

function client(url: string, transport: TransportName | "auto", extra: { openTimeoutMs?: number } = {}): LadderClient {
  return createClient({
    url,
    transport,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    backoff: { minMs: 50, maxMs: 300 },
    probe: { minMs: 60_000, maxMs: 60_000 },
    pollIntervalMs: 100,
    longPollWaitSeconds: 2,
    heartbeatTimeoutMs: 3000,
    openTimeoutMs: extra.openTimeoutMs ?? 3000,
  });
}

/** Publishes through the front, retrying what failed (a node killed mid-request): the log is the truth. */
async function publishThrough(url: string, channel: string, data: unknown): Promise<string | null> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const res = await fetch(`${url}/api/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ channel, data }),
    }).catch(() => null);
    if (res?.status === 201) return ((await res.json()) as { id: string }).id;
    await res?.body?.cancel();
    await sleep(100);
  }
  return null;
}

async function logIds(url: string, channel: string): Promise<string[]> {
  const res = await fetch(`${url}/api/messages?channel=${channel}&since=0&limit=1000`);
  assert.equal(res.status, 200);
  return ((await res.json()) as Message[]).map((m) => m.id);
}

/** Open connections a node reports on /metrics (every transport). */
async function connectionsOn(node: LadderNode): Promise<number> {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(/^ladder_connections\{[^}]*\} (\d+)/gm)) sum += Number(m[1]);
  return sum;
}

async function available(kind: FrontKind): Promise<boolean> {
  return (await brokerAvailable("Redis", REDIS_URL)) && (await programAvailable(kind, VERSION_ARGS[kind]));
}

for (const kind of ["nginx", "caddy"] as const) {
  describe(`deploy recipe: ${kind} in front of three nodes`, () => {
    const prefix = `ladder-test:deploy-${kind}-${process.pid}:`;
    let ok = false;
    let nodes: LadderNode[] = [];
    let front: Front | null = null;

    before(async () => {
      ok = await available(kind);
      if (!ok) return;
      const engine = `${REDIS_URL}?prefix=${encodeURIComponent(prefix)}`;
      nodes = await Promise.all([0, 1, 2].map(() => startNode(engine, ["--trust-proxy", "loopback", "--heartbeat", "1", "--max-wait", "5", "--metrics"])));
      front = await startFront(kind, nodes.map((n) => n.port));
      await waitUntil(`${kind} passes /readyz`, () => isReady(front!.url), 15_000);
    });
    after(async () => {
      await front?.close();
      await Promise.all(nodes.map((n) => n.kill()));
      if (ok) await deleteRedisKeys(REDIS_URL, prefix);
    });

    test("HTTP/2 to browsers: the front negotiates h2 and an SSE stream flows over it at once", async (t) => {
      if (!ok) return t.skip("needs Redis and " + kind);
      const session = connectH2(front!.url, { rejectUnauthorized: false });
      try {
        await new Promise<void>((resolve, reject) => session.once("connect", () => resolve()).once("error", reject));
        assert.equal(session.alpnProtocol, "h2");
        const stream = session.request({ ":path": `/api/stream?channel=h2${process.pid}` });
        const started = Date.now();
        const head = await new Promise<string>((resolve, reject) => {
          let text = "";
          stream.setEncoding("utf8");
          stream.on("data", (chunk: string) => {
            text += chunk;
            if (text.includes("event: ready")) resolve(text);
          });
          stream.once("error", reject);
          setTimeout(() => reject(new Error(`no ready event through ${kind} in 3 s: ${JSON.stringify(text)}`)), 3000).unref();
        });
        assert.match(head, /event: ready/);
        assert.ok(Date.now() - started < 3000);
        stream.close();
      } finally {
        session.close();
      }
    });

    test("every rung through the front over TLS; the busiest node is SIGKILLed; each subscriber holds the log exactly once, in order", async (t) => {
      if (!ok) return t.skip("needs Redis and " + kind);
      const url = front!.url;
      const channel = `deploy${kind}${process.pid}`;
      const clients = RUNGS.map((rung) => ({ rung, c: client(url, rung), got: [] as string[], gaps: 0 }));
      try {
        for (const entry of clients) {
          const sub = entry.c.subscribe(channel);
          sub.on("message", (m) => entry.got.push(m.id));
          sub.on("gap", () => entry.gaps++);
        }
        await waitUntil("every client connected", () => clients.every(({ c }) => c.state === "connected" && c.cursor(channel) !== null), 15_000);
        const fixed = clients.filter(({ rung }) => rung !== "auto");
        for (const { rung, c } of fixed) assert.equal(c.transport, rung, `${rung} holds through ${kind}`);
        assert.equal(clients.find(({ rung }) => rung === "auto")!.c.transport, "websocket", `${kind} passes WebSocket upgrades`);

        const acked: string[] = [];
        for (let i = 0; i < 20; i++) {
          const id = await publishThrough(url, channel, { i });
          if (id) acked.push(id);
          await sleep(20);
        }
        const counts = await Promise.all(nodes.map(connectionsOn));
        const victim = counts.indexOf(Math.max(...counts));
        t.diagnostic(`connections per node before the kill: ${counts.join(", ")}; killing node ${victim}`);
        assert.ok(counts[victim]! > 0, "some subscriber is on the node that dies");
        await nodes[victim]!.kill("SIGKILL");
        for (let i = 20; i < 60; i++) {
          const id = await publishThrough(url, channel, { i });
          if (id) acked.push(id);
          await sleep(20);
        }
        assert.equal(acked.length, 60, "every publish was acknowledged through the front");
        const log = await logIds(url, channel);
        for (const id of acked) assert.ok(log.includes(id), `acknowledged ${id} is in the log`);
        await waitUntil(
          "every subscriber caught up",
          () => clients.every(({ got }) => got.length >= log.length),
          20_000,
        ).catch(() => undefined);
        for (const { rung, got, gaps } of clients) {
          assert.deepEqual(got, log, `${rung} through ${kind}: the whole log once, in order`);
          assert.equal(gaps, 0, `${rung}: no gap`);
        }
      } finally {
        for (const { c } of clients) c.close();
      }
    });
  });
}

describe("a front configured the wrong way (deploy/nginx/broken.conf)", () => {
  let ok = false;
  let node: LadderNode | null = null;
  let front: Front | null = null;

  before(async () => {
    ok = await programAvailable("nginx", VERSION_ARGS.nginx);
    if (!ok) return;
    node = await startNode("memory", ["--heartbeat", "1"]);
    front = await startNginx("broken.conf", [node.port]);
    await waitUntil("broken nginx passes /readyz", () => isReady(front!.url), 15_000);
  });
  after(async () => {
    await front?.close();
    await node?.kill();
  });

  test("symptoms: the WebSocket handshake is refused and SSE events are held back", async (t) => {
    if (!ok) return t.skip("needs nginx");
    const refused = await upgradeStatusAt(`${front!.url.replace("https", "wss")}/api/ws`);
    assert.equal(refused, 400, "without Upgrade headers Ladder sees a plain GET and says it needs an upgrade");

    // Through a good front the stream's head and ready event arrive at once (the recipe tests above);
    // here nginx holds even the head back, waiting to fill a gzip buffer.
    const controller = new AbortController();
    const started = Date.now();
    const answer = fetch(`${front!.url}/api/stream?channel=broken${process.pid}`, { signal: controller.signal, headers: { "accept-encoding": "gzip" } }).then(
      async (res) => `status ${res.status}`,
      () => "nothing",
    );
    const first = await Promise.race([answer, sleep(1500).then(() => "nothing")]);
    controller.abort();
    await answer;
    assert.equal(first, "nothing", `the SSE answer is held in nginx's buffers (got ${first} after ${Date.now() - started} ms)`);
  });

  test("the client still delivers through it: down to long-poll, every message once, in order", async (t) => {
    if (!ok) return t.skip("needs nginx");
    const c = client(front!.url, "auto", { openTimeoutMs: 1500 });
    const channel = `brokenfront${process.pid}`;
    const got: string[] = [];
    const rungs: string[] = [];
    c.on("transport", ({ transport }) => rungs.push(transport));
    try {
      c.subscribe(channel).on("message", (m) => got.push(m.id));
      await waitUntil("client connected below SSE", () => c.state === "connected" && c.cursor(channel) !== null, 15_000);
      assert.equal(c.transport, "long-poll");
      assert.deepEqual(rungs, ["websocket", "sse", "long-poll"]);
      const acked: string[] = [];
      for (let i = 0; i < 15; i++) acked.push((await publishThrough(front!.url, channel, { i }))!);
      await waitUntil("all delivered", () => got.length >= acked.length, 10_000).catch(() => undefined);
      assert.deepEqual(got, acked);
    } finally {
      c.close();
    }
  });
});

describe("systemd unit and alert rules", () => {
  test("systemd-analyze accepts deploy/systemd/ladder@.service", async (t) => {
    if (!(await hasProgram("systemd-analyze"))) {
      if (IN_CI) throw new Error("systemd-analyze is not installed (CI=true)");
      return t.skip("no systemd-analyze");
    }
    const dir = mkdtempSync(join(tmpdir(), "ladder-unit-"));
    try {
      const path = join(dir, "ladder@8081.service");
      writeFileSync(path, recipe("systemd/ladder@.service"));
      const result = spawnSync("systemd-analyze", ["verify", path], { encoding: "utf8" });
      assert.equal(result.status, 0, result.stderr);
      assert.doesNotMatch(result.stderr, /Unknown|ignoring|Invalid/i, result.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the unit's command line starts a node that drains on SIGTERM within TimeoutStopSec", async (t) => {
    if (!(await brokerAvailable("Redis", REDIS_URL))) return t.skip("needs Redis");
    const unit = recipe("systemd/ladder@.service");
    const line = /^ExecStart=(\S+) (\S+) serve (.*)$/m.exec(unit);
    assert.ok(line, "ExecStart runs node on bin/ladder.js serve");
    const stopSeconds = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)![1]);
    const args = line[3]!.replace("--port %i", "").replace("--engine redis://127.0.0.1:6379", "").split(/\s+/).filter(Boolean);
    const prefix = `ladder-test:unit-${process.pid}:`;
    const node = await startNode(`${REDIS_URL}?prefix=${encodeURIComponent(prefix)}`, args);
    try {
      assert.equal((await fetch(`${node.url}/metrics`)).status, 200, "--metrics from the unit is on");
      const started = Date.now();
      await node.kill("SIGTERM");
      const took = (Date.now() - started) / 1000;
      assert.ok(took < stopSeconds, `stopped in ${took} s, within TimeoutStopSec=${stopSeconds}`);
      assert.equal(node.child.exitCode, 0, "a clean exit, not a kill");
    } finally {
      await node.kill();
      await deleteRedisKeys(REDIS_URL, prefix);
    }
  });

  test("every metric the alert rules use is exported by a hub, with the labels they use", async () => {
    const running = await serve({ port: 0, host: "127.0.0.1", metrics: true });
    try {
      const exported = await (await fetch(`${running.url}/metrics`)).text();
      const rules = recipe("prometheus/alerts.yml");
      const names = new Set([...rules.matchAll(/\b(ladder_[a-z_]+)/g)].map((m) => m[1]!));
      assert.ok(names.size >= 5);
      for (const name of names) assert.match(exported, new RegExp(`^# TYPE ${name} `, "m"), `${name} is exported`);
      assert.match(exported, /^ladder_engine_ready\{engine="memory"\} 1$/m);
      assert.match(exported, /^# HELP ladder_refusals_total /m);
    } finally {
      await running.close();
    }
  });
});
