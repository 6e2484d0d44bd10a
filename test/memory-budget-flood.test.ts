/**
 * The flood of issue 20, against a real `ladder serve` child process: one message to each of many distinct
 * channels over keep-alive HTTP (a few connections at once), with the memory engine's budget on. The
 * hub's RSS must level off at the budget plus a stated overhead, /readyz must stay 200, an SSE subscriber
 * on a busy channel must get every message of it (no gap), and a poller returning to a channel the flood
 * evicted must get a `trimmed` gap.
 *
 * The suite runs it at 1/4 scale: 50,000 channels against a quarter of the default budget (16 MiB,
 * 12,500 channels). LADDER_FLOOD_FULL=1 runs the figures of docs/performance.md: 200,000 channels against
 * the default budget (64 MiB, 50,000 channels).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import { after, test } from "node:test";
import { DEFAULT_MAX_CHANNELS, DEFAULT_MAX_LOG_BYTES } from "../src/engines/memory.js";
import { openSse } from "./helpers/server.js";

const FULL = process.env.LADDER_FLOOD_FULL === "1";
const SCALE = FULL ? 1 : 4;
const CHANNELS = 200_000 / SCALE;
const MAX_LOG_BYTES = DEFAULT_MAX_LOG_BYTES / SCALE;
const MAX_CHANNELS = DEFAULT_MAX_CHANNELS / SCALE;
const CONCURRENCY = 4;
const PAYLOAD = { text: "x".repeat(200) };
/** One busy-channel message per this many flood publishes. */
const BUSY_EVERY = 100;
const SAMPLE_MS = 250;
/**
 * The stated overhead (docs/performance.md): per channel the log keeps a record, two arrays, a Map entry
 * and the name besides the counted message bytes (~0.35 KB measured; 0.5 KB allowed). V8 lets garbage
 * pile up to about as much again as what is live before it collects, so RSS may grow to twice the live
 * log, plus 32 MiB for the rest (young generation, sockets, allocator).
 */
const PER_CHANNEL_BYTES = 512;
const RSS_BOUND = 2 * (MAX_LOG_BYTES + MAX_CHANNELS * PER_CHANNEL_BYTES) + 32 * 1024 * 1024;

let child: ChildProcess | null = null;
after(() => {
  child?.kill("SIGKILL");
});

function rssOf(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) * 1024 : NaN;
}

async function startServe(): Promise<{ base: string; pid: number }> {
  const args = ["bin/ladder.js", "serve", "--port", "0", "--log-level", "warn", "--no-demo", "--metrics"];
  if (!FULL) args.push("--max-log-bytes", String(MAX_LOG_BYTES), "--max-log-channels", String(MAX_CHANNELS));
  const started = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  child = started;
  const base = await new Promise<string>((resolve, reject) => {
    let out = "";
    started.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    started.once("exit", () => reject(new Error(`ladder serve exited: ${out}`)));
  });
  return { base, pid: started.pid! };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY + 2 });

function request(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, { method, agent, headers: payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {} }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.once("error", reject);
    req.end(payload);
  });
}

async function publish(base: string, channel: string, data: unknown): Promise<string> {
  const res = await request(base, "POST", "/api/messages", { channel, data });
  assert.equal(res.status, 201, `publish to ${channel}: ${res.status} ${res.text}`);
  return (JSON.parse(res.text) as { id: string }).id;
}

function metric(text: string, name: string): number {
  const match = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return match ? Number(match[1]) : NaN;
}

test(`a flood of ${CHANNELS} channels: RSS levels off at the budget, the hub stays ready, busy subscribers lose nothing, returning ones get a gap`, { timeout: FULL ? 600_000 : 90_000 }, async (t) => {
  const { base, pid } = await startServe();
  // Warm up (JIT, sockets, first heap growth) before the baseline.
  for (let i = 0; i < 500; i++) await publish(base, `warm-${i % 10}`, PAYLOAD);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const rssStart = rssOf(pid);

  const early = [await publish(base, "early", 1), await publish(base, "early", 2), await publish(base, "early", 3)];
  const busy = await openSse(`${base}/api/stream?channel=busy`);
  await busy.waitFor(0, 5000, () => busy.ready.length > 0, "the busy stream to be ready");

  const samples: Array<{ ms: number; published: number; rss: number }> = [];
  const readyz: number[] = [];
  let published = 0;
  let busySent = 0;
  const begin = Date.now();
  let flooding = true;
  const sampler = (async () => {
    while (flooding) {
      samples.push({ ms: Date.now() - begin, published, rss: rssOf(pid) });
      readyz.push((await request(base, "GET", "/readyz")).status);
      await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
    }
  })();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < CHANNELS) {
      const i = next++;
      await publish(base, `flood-${i}`, PAYLOAD);
      published++;
      if (i % BUSY_EVERY === 0) await publish(base, "busy", { n: busySent++ });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  flooding = false;
  await sampler;
  const elapsedMs = Date.now() - begin;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const rssEnd = rssOf(pid);
  samples.push({ ms: Date.now() - begin, published, rss: rssEnd });

  const metrics = (await request(base, "GET", "/metrics")).text;
  const figures = {
    channels: CHANNELS,
    elapsedMs,
    publishesPerSecond: Math.round(CHANNELS / (elapsedMs / 1000)),
    rssStartMiB: +(rssStart / 2 ** 20).toFixed(1),
    rssEndMiB: +(rssEnd / 2 ** 20).toFixed(1),
    rssPeakMiB: +(Math.max(...samples.map((s) => s.rss)) / 2 ** 20).toFixed(1),
    rssBoundMiB: +((rssStart + RSS_BOUND) / 2 ** 20).toFixed(1),
    retainedBytes: metric(metrics, "ladder_log_retained_bytes"),
    logChannels: metric(metrics, "ladder_log_channels"),
    evictedMessages: metric(metrics, "ladder_log_evicted_messages_total"),
    evictedChannels: metric(metrics, "ladder_log_evicted_channels_total"),
  };
  t.diagnostic(JSON.stringify(figures));
  // RSS over time, one line per tenth of the flood.
  for (let k = 1; k <= 10; k++) {
    const s = samples.find((x) => x.published >= (CHANNELS * k) / 10) ?? samples.at(-1)!;
    t.diagnostic(`${s.published} published, ${(s.ms / 1000).toFixed(1)} s: RSS ${(s.rss / 2 ** 20).toFixed(1)} MiB`);
  }

  assert.ok(readyz.length > 0 && readyz.every((status) => status === 200), `/readyz answers: ${readyz.join(",")}`);
  assert.ok(figures.retainedBytes <= MAX_LOG_BYTES, `retained ${figures.retainedBytes} bytes > budget ${MAX_LOG_BYTES}`);
  assert.ok(figures.logChannels <= MAX_CHANNELS, `${figures.logChannels} channels > budget ${MAX_CHANNELS}`);
  assert.ok(figures.evictedChannels >= CHANNELS - MAX_CHANNELS, `evicted ${figures.evictedChannels} channels`);
  assert.ok(rssEnd - rssStart <= RSS_BOUND, `RSS grew ${((rssEnd - rssStart) / 2 ** 20).toFixed(1)} MiB, more than the budget's ${(RSS_BOUND / 2 ** 20).toFixed(1)} MiB`);
  // Levelled off: the budget is full after a quarter of the flood, so the second half adds far less than the first.
  const half = samples.find((s) => s.published >= CHANNELS / 2)!;
  const firstHalf = half.rss - rssStart;
  const secondHalf = rssEnd - half.rss;
  assert.ok(secondHalf <= firstHalf / 3, `RSS grew ${(firstHalf / 2 ** 20).toFixed(1)} MiB in the first half and still ${(secondHalf / 2 ** 20).toFixed(1)} MiB in the second`);

  // The busy channel has a subscriber: kept in preference, it lost nothing.
  await busy.waitFor(busySent, 10_000);
  assert.deepEqual(busy.events.filter((e) => e.event === "gap"), []);
  assert.deepEqual(busy.events.map((e) => (JSON.parse(e.data) as { n: number }).n), Array.from({ length: busySent }, (_, n) => n));
  busy.close();

  // The early channel was idle and least recently used: evicted; its reader is told so.
  const back = await request(base, "GET", `/api/messages?channel=early&since=${early[0]}`);
  assert.equal(back.status, 200);
  const gap = JSON.parse(String(back.headers["ladder-gap"])) as { reason: string; since: string };
  assert.equal(gap.reason, "trimmed");
  assert.equal(gap.since, early[0]);
  assert.equal((await request(base, "GET", "/readyz")).status, 200);
  agent.destroy();
});
