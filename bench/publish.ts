/**
 * `npm run bench -- --publish http,http-batch,ws,ws-batch,history`: the publish side, with nobody subscribed.
 *
 * - `http`: single messages, `POST /api/messages` over HTTP/1.1 keep-alive, driven by h2load (nghttp2-client)
 *   with `--h2load-connections` (20) connections, one request in flight on each;
 * - `http-batch`: the same with `--batch` (100) messages per request (`{"messages":[…]}`; Ladder only);
 *   Nchan (when installed) runs `http` alone, `POST /pub/bench` with the same body, and its single-message
 *   rate is the reference Ladder's batch rate is set against (issue 18);
 * - `ws`: WebSocket publishes with acks, over 1 connection and over 100 (`--ws-connections`), each
 *   connection keeping a window of publishes in flight; `ws-batch`: `--batch` messages per frame;
 * - `history`: the server's memory per channel holding history — `--channels` channels (10,000 unless given)
 *   with `--history` (10) messages each and no subscriber — RSS growth after GC ÷ channels.
 *
 * Every message carries the same ~120-byte JSON data. Figures: messages/s (acknowledged ÷ wall time), the
 * server's CPU µs per message (/proc utime+stime), and its share of its core; the server is pinned to one
 * CPU, the load (h2load, or this process) to the other. Ladder runs on each engine of `--engines` (default
 * memory); with Redis (a private redis-server the run starts), its counts of commands and of reads of client
 * input give commands per message and round trips per message (a read is one request batch).
 */
import { execFile, spawn } from "node:child_process";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FLOOR_PUBLISH_SCENARIOS } from "./floor.js";
import type { Impl } from "./ipc.js";
import { NCHAN_MESSAGES_KEPT, NCHAN_PUBLISH_SCENARIOS, NchanServer, type NchanInstall } from "./nchan.js";
import type { BenchOptions } from "./options.js";
import { ServerHandle, type BenchServer, type Pinning } from "./proc.js";
import { cleanup, engineUrl, type EngineName } from "./engines.js";
import { table } from "./report.js";
import { PublisherSockets, type FrameOutcome } from "./ws-publish.js";

export type PublishScenario = "http" | "http-batch" | "ws" | "ws-batch" | "history";
export const PUBLISH_SCENARIOS: readonly PublishScenario[] = ["http", "http-batch", "ws", "ws-batch", "history"];

export interface PublishCaseResult {
  readonly scenario: PublishScenario;
  readonly impl: Impl;
  readonly engine: EngineName | "-";
  /** Client connections (h2load's or WebSockets). */
  readonly connections: number;
  /** Messages per request or frame. */
  readonly batch: number;
  readonly messages: number;
  readonly failed: number;
  readonly seconds: number;
  readonly messagesPerSec: number;
  readonly cpuUsPerMessage: number;
  readonly serverCpuPercent: number;
  readonly clientCpuPercent: number;
  /** Redis commands the broker processed per message (Redis engine only). */
  readonly brokerCommandsPerMessage: number;
  /** Redis reads of client input per message: request batches, so round trips per message at most. */
  readonly brokerReadsPerMessage: number;
  /** `history`: server RSS growth after GC per channel, kB. */
  readonly kbPerChannel: number;
  /** Messages the channel held after the run, as the server reports it (Nchan; NaN where not read). */
  readonly kept: number;
  readonly notes: string[];
}

/**
 * Where publishes go: Ladder, the baseline and the floor answer `POST /api/messages`; Nchan `POST /pub/<channel>`
 * (bench/nchan.ts).
 */
export interface PublishTarget {
  readonly impl: Impl;
  readonly pid: number;
  readonly url: string;
  /** Path and body of a single publish of `data` (JSON text) on `channel`. */
  single(channel: string, data: string): { readonly path: string; readonly body: string };
}

/** About 120 bytes of JSON, as in the measurements. */
const DATA = '{"t":1732540000000.123,"seq":12345,"text":"hello world, this is a message of about 120 bytes.."}';
const CHANNEL = "bench";

function singleBody(channel: string, data: string): string {
  return `{"channel":"${channel}","data":${data}}`;
}

export function ladderTarget(impl: Impl, server: BenchServer): PublishTarget {
  return { impl, pid: server.pid, url: server.url, single: (channel, data) => ({ path: "/api/messages", body: singleBody(channel, data) }) };
}

/**
 * Nchan's publisher URL names the channel, and it keeps the posted body whole as the message: it gets the
 * very bytes Ladder gets (123 of them), so both parse, store and answer the same request.
 */
export function nchanTarget(server: NchanServer): PublishTarget {
  return { impl: "nchan", pid: server.pid, url: server.url, single: (channel, data) => ({ path: `/pub/${channel}`, body: singleBody(channel, data) }) };
}

function batchBody(batch: number): string {
  return `{"channel":"${CHANNEL}","messages":[${Array.from({ length: batch }, () => `{"data":${DATA}}`).join(",")}]}`;
}

interface H2loadRun {
  readonly requests: number;
  readonly ok: number;
  readonly seconds: number;
}

function h2load(url: string, bodyFile: string, requests: number, connections: number): Promise<H2loadRun> {
  const args = ["--h1", "-n", String(requests), "-c", String(connections), "-d", bodyFile, "-H", "content-type: application/json", url];
  return new Promise((resolve, reject) => {
    execFile("h2load", args, { maxBuffer: 1 << 20, timeout: 300_000 }, (error, stdout) => {
      if (error) return reject(new Error(`h2load failed: ${error.message}`));
      const finished = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(stdout);
      const codes = /status codes: (\d+) 2xx/.exec(stdout);
      if (!finished || !codes) return reject(new Error(`h2load said: ${stdout.slice(0, 500)}`));
      const seconds = Number(finished[1]) / (finished[2] === "ms" ? 1000 : 1);
      resolve({ requests, ok: Number(codes[1]), seconds });
    });
  });
}

/** CPU of the server (all its processes: nginx's master and worker) and of this process (the WebSocket load) over `run`. */
async function measured<T>(server: BenchServer, run: () => Promise<T>): Promise<{ value: T; serverUs: number; clientUs: number; ms: number }> {
  const before = server.cpuUs();
  const client = process.cpuUsage();
  const start = performance.now();
  const value = await run();
  const ms = performance.now() - start;
  const used = process.cpuUsage(client);
  return { value, serverUs: server.cpuUs() - before, clientUs: used.user + used.system, ms };
}

interface WsRun {
  readonly acked: number;
  readonly failed: number;
}

/**
 * `frames` publish frames spread over `connections` WebSockets, each keeping `window` in flight: a new
 * frame goes out as each answer comes back (bench/ws-publish.ts). A batch ack counts its messages; refused
 * and unanswered ones count as failed.
 */
async function wsPublish(url: string, connections: number, frames: number, window: number, batch: number): Promise<WsRun> {
  const sockets = await PublisherSockets.open(`${url.replace(/^http/, "ws")}/api/ws`, connections);
  const items = Array.from({ length: batch }, () => `{"data":${DATA}}`).join(",");
  const frame = (ref: number): string =>
    batch > 1 ? `{"type":"publish","room":"${CHANNEL}","ref":${ref},"messages":[${items}]}` : `{"type":"publish","room":"${CHANNEL}","ref":${ref},"data":${DATA}}`;
  let acked = 0;
  let failed = 0;
  try {
    await new Promise<void>((resolve) => {
      let sending = connections;
      const finished = (): void => {
        if (--sending === 0) resolve();
      };
      for (let c = 0; c < connections; c++) {
        const share = Math.floor(frames / connections) + (c < frames % connections ? 1 : 0);
        let sent = 0;
        let answered = 0;
        const next = (): void => {
          if (sent === share) return;
          sent++;
          sockets.send(c, frame, batch, onAnswer);
        };
        const onAnswer = (outcome: FrameOutcome): void => {
          acked += outcome.acked;
          failed += outcome.refused + outcome.unanswered;
          if (++answered === share) finished();
          else next();
        };
        if (share === 0) finished();
        for (let i = 0; i < window; i++) next();
      }
    });
  } finally {
    sockets.close();
  }
  return { acked, failed };
}

interface RedisCounts {
  readonly commands: number;
  /** Reads of client input the server made: each is one request batch arriving, so one round trip at most. */
  readonly reads: number;
}

async function redisCounts(url: string): Promise<RedisCounts> {
  const { createClient } = await import("redis");
  const client = createClient({ url });
  client.on("error", () => {});
  await client.connect();
  const info = await client.info("stats");
  client.destroy();
  const field = (name: string): number => Number(new RegExp(`${name}:(\\d+)`).exec(info)?.[1] ?? NaN);
  return { commands: field("total_commands_processed"), reads: field("total_reads_processed") };
}

/**
 * A redis-server of the run's own (no persistence), so its counts of commands and reads are this run's
 * alone — a shared one counts every other client too. Null without redis-server on the PATH.
 */
async function privateRedis(): Promise<{ url: string; stop(): void } | null> {
  const port = await new Promise<number>((resolve, reject) => {
    const probe = createNetServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port: free } = probe.address() as AddressInfo;
      probe.close(() => resolve(free));
    });
  });
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  const failed = await new Promise<boolean>((resolve) => {
    child.once("error", () => resolve(true));
    child.once("spawn", () => resolve(false));
  });
  if (failed) return null;
  const url = `redis://127.0.0.1:${port}`;
  // Gone with the bench, however it ends.
  const kill = (): void => void child.kill("SIGKILL");
  process.once("exit", kill);
  for (let i = 0; i < 100; i++) {
    try {
      await redisCounts(url);
      return {
        url,
        stop: () => {
          process.off("exit", kill);
          kill();
        },
      };
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  child.kill("SIGKILL");
  return null;
}

let caseSeq = 0;

export async function runPublishCase(
  scenario: PublishScenario,
  impl: Impl,
  engine: EngineName,
  connections: number,
  options: BenchOptions,
  pinning: Pinning,
  log: (line: string) => void,
  nchan: NchanInstall | null = null,
): Promise<PublishCaseResult> {
  const tag = `${process.pid}_p${++caseSeq}`;
  if (impl === "nchan" && (!nchan || !NCHAN_PUBLISH_SCENARIOS.has(scenario))) throw new Error(`no nchan case for publish ${scenario}${nchan ? "" : " without nginx and its Nchan module"}`);
  const redis = engine === "redis" && impl === "ladder" ? await privateRedis() : null;
  if (redis) options = { ...options, redisUrl: redis.url };
  const engineArg = impl === "ladder" ? engineUrl(engine, options, tag) : undefined;
  const server: BenchServer =
    impl === "nchan"
      ? await NchanServer.start(nchan!, { cpu: pinning.serverCpu, taskset: pinning.taskset, maxConnections: 10_000 })
      : await ServerHandle.start(impl, {
          cpu: pinning.serverCpu,
          taskset: pinning.taskset,
          maxConnections: 10_000,
          profileDir: options.profileDir,
          ...(engineArg ? { engine: engineArg } : {}),
        });
  const target = server instanceof NchanServer ? nchanTarget(server) : ladderTarget(impl, server);
  const dir = mkdtempSync(join(tmpdir(), "ladder-bench-publish-"));
  const notes: string[] = [];
  const batch = scenario === "http-batch" || scenario === "ws-batch" ? options.batch : 1;
  const base = { scenario, impl, engine: impl === "ladder" ? engine : ("-" as const), connections, batch, kbPerChannel: NaN, kept: NaN, brokerCommandsPerMessage: NaN, brokerReadsPerMessage: NaN, notes };
  try {
    if (scenario === "history") {
      const channels = options.channels > 1 ? options.channels : 10_000;
      await server.gc();
      const before = server.rssKb();
      // Filled through batches of one channel's history each, a few requests in flight.
      const bodies = Array.from({ length: channels }, (_, c) => `{"channel":"${CHANNEL}-${c}","messages":[${Array.from({ length: options.history }, () => `{"data":${DATA}}`).join(",")}]}`);
      for (let i = 0; i < bodies.length; i += 16) {
        await Promise.all(
          bodies.slice(i, i + 16).map(async (body) => {
            const res = await fetch(`${target.url}/api/messages`, { method: "POST", headers: { "content-type": "application/json" }, body });
            if (res.status !== 200) throw new Error(`history fill answered ${res.status}`);
            await res.arrayBuffer();
          }),
        );
      }
      await server.gc();
      const after = server.rssKb();
      log(`  ${channels} channels × ${options.history} messages: RSS ${before} -> ${after} kB`);
      return { ...base, connections: 0, batch: options.history, messages: channels * options.history, failed: 0, seconds: NaN, messagesPerSec: NaN, cpuUsPerMessage: NaN, serverCpuPercent: NaN, clientCpuPercent: NaN, kbPerChannel: (after - before) / channels };
    }

    const redisBefore = redis ? await redisCounts(redis.url) : null;
    let messages = 0;
    let failed = 0;
    let kept = NaN;
    let run: { serverUs: number; clientUs: number; ms: number };
    if (scenario === "http" || scenario === "http-batch") {
      const file = join(dir, "body.json");
      writeFileSync(file, batch > 1 ? batchBody(batch) : target.single(CHANNEL, DATA).body);
      const url = `${target.url}${target.single(CHANNEL, DATA).path}`;
      const requests = Math.max(connections, Math.round(options.publishCount / batch));
      // Warm-up: JIT and first buffers are not charged to the measured run.
      const warm = await h2load(url, file, Math.max(connections, Math.round(requests / 5)), connections);
      const timed = await measured(server, () => h2load(url, file, requests, connections));
      messages = timed.value.ok * batch;
      failed = (timed.value.requests - timed.value.ok) * batch;
      run = { ...timed, ms: timed.value.seconds * 1000 };
      notes.push("client CPU is h2load's (not measured)");
      if (server instanceof NchanServer) {
        // A 2xx is Nchan's word that it stored the message: the channel must hold the newest 1,000 of them.
        const info = await server.channelInfo(CHANNEL);
        kept = info?.messages ?? 0;
        const due = Math.min(NCHAN_MESSAGES_KEPT, warm.ok + timed.value.ok);
        log(`  ${warm.ok + timed.value.ok} publishes answered 2xx; Nchan's channel ${CHANNEL} holds ${kept} messages (${due} expected)`);
        if (kept !== due) notes.push(`Nchan's channel holds ${kept} messages, ${due} expected`);
      }
    } else {
      const frames = Math.max(connections, Math.round(options.publishCount / batch));
      const window = batch > 1 ? 4 : Math.max(2, Math.ceil(256 / connections));
      await wsPublish(target.url, connections, Math.max(connections, Math.round(frames / 5)), window, batch);
      const timed = await measured(server, () => wsPublish(target.url, connections, frames, window, batch));
      run = timed;
      messages = timed.value.acked;
      failed = timed.value.failed;
    }
    const redisAfter = redis ? await redisCounts(redis.url) : null;
    const perMessage = (count: (c: RedisCounts) => number): number =>
      redisBefore && redisAfter ? (count(redisAfter) - count(redisBefore)) / Math.max(1, messages) : NaN;
    const brokerCommandsPerMessage = perMessage((c) => c.commands);
    const brokerReadsPerMessage = perMessage((c) => c.reads);
    if (engine === "redis" && !redis) notes.push("no redis-server on the PATH: the shared Redis was used and its counts are not reported");
    if (failed > 0) notes.push(`${failed} messages refused or failed`);
    const serverCpuPercent = (run.serverUs / (run.ms * 1000)) * 100;
    const clientCpuPercent = scenario.startsWith("ws") ? (run.clientUs / (run.ms * 1000)) * 100 : NaN;
    if (clientCpuPercent > 90) notes.push("load generator saturated: messages/s may be the client's limit");
    return {
      ...base,
      messages,
      failed,
      kept,
      seconds: run.ms / 1000,
      messagesPerSec: messages / (run.ms / 1000),
      cpuUsPerMessage: run.serverUs / Math.max(1, messages),
      serverCpuPercent,
      clientCpuPercent,
      brokerCommandsPerMessage,
      brokerReadsPerMessage,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await server.stop();
    if (impl === "ladder" && !redis) await cleanup(engine, options, tag);
    redis?.stop();
  }
}

/**
 * The cases of a `--publish` run: each scenario for Ladder (on each engine) and, where they have one, the
 * baseline and (when installed) Nchan.
 */
export function publishCases(options: BenchOptions, nchanInstalled = false): Array<{ scenario: PublishScenario; impl: Impl; engine: EngineName; connections: number }> {
  const cases: Array<{ scenario: PublishScenario; impl: Impl; engine: EngineName; connections: number }> = [];
  const engines = options.engines ?? ["memory"];
  for (const scenario of options.publish ?? []) {
    const connectionCounts = scenario === "ws" || scenario === "ws-batch" ? options.wsConnections : scenario === "history" ? [0] : [options.h2loadConnections];
    for (const connections of connectionCounts) {
      for (const impl of options.impls) {
        // The baseline has no batch form, and keeps one shared history rather than one per channel.
        if (impl === "baseline" && scenario !== "http" && scenario !== "ws") continue;
        if (impl === "nchan" && (!nchanInstalled || !NCHAN_PUBLISH_SCENARIOS.has(scenario))) continue;
        if (impl === "floor" && !FLOOR_PUBLISH_SCENARIOS.has(scenario)) continue;
        for (const engine of impl === "ladder" ? engines : (["memory"] as const)) {
          if (scenario === "history" && engine !== "memory") continue;
          cases.push({ scenario, impl, engine, connections });
        }
      }
    }
  }
  return cases;
}

export function publishTable(results: readonly PublishCaseResult[]): string {
  const f = (v: number, d: number): string => (Number.isFinite(v) ? v.toFixed(d) : "-");
  const g = (v: number): string => (Number.isFinite(v) ? Math.round(v).toLocaleString("en-US") : "-");
  return table(
    ["scenario", "impl", "engine", "conns", "batch", "messages", "msg/s", "CPU µs/msg", "srv CPU%", "load CPU%", "redis cmds/msg", "redis reads/msg", "KB/channel"],
    results.map((r) => [
      r.scenario,
      r.impl,
      r.engine,
      String(r.connections),
      String(r.batch),
      g(r.messages),
      g(r.messagesPerSec),
      f(r.cpuUsPerMessage, 2),
      f(r.serverCpuPercent, 0),
      f(r.clientCpuPercent, 0),
      f(r.brokerCommandsPerMessage, 2),
      f(r.brokerReadsPerMessage, 3),
      f(r.kbPerChannel, 2),
    ]),
    3,
  );
}

/**
 * The issue-18 comparisons of a run, one line each: Ladder's batch rate against Nchan's single-message
 * rate, and Ladder's single rate against the baseline's and Nchan's. "Per core" is 10⁶ ÷ CPU µs per
 * message: what one saturated core would take, the figure a shared machine moves least.
 */
export function publishComparisons(results: readonly PublishCaseResult[]): string[] {
  const find = (scenario: PublishScenario, impl: Impl): PublishCaseResult | undefined =>
    results.find((r) => r.scenario === scenario && r.impl === impl && (impl !== "ladder" || r.engine === "memory") && r.messages > 0);
  const g = (v: number): string => (Number.isFinite(v) ? Math.round(v).toLocaleString("en-US") : "-");
  const f = (v: number): string => (Number.isFinite(v) ? v.toFixed(2) : "-");
  const line = (label: string, a: PublishCaseResult | undefined, b: PublishCaseResult | undefined, goal = true): string[] => {
    if (!a || !b) return [];
    const perCore = (r: PublishCaseResult): number => 1e6 / r.cpuUsPerMessage;
    return [
      `${label}: ${f(a.messagesPerSec / b.messagesPerSec)}× measured (${g(a.messagesPerSec)} vs ${g(b.messagesPerSec)} msg/s), ` +
        `${f(perCore(a) / perCore(b))}× per core (${g(perCore(a))} vs ${g(perCore(b))} msg/s at ${f(a.cpuUsPerMessage)} vs ${f(b.cpuUsPerMessage)} µs)${goal ? " — goal ≥ 1" : ""}`,
    ];
  };
  const batch = find("http-batch", "ladder");
  return [
    ...line(`ladder http-batch (${batch?.batch ?? "-"}/request) ÷ nchan http (single)`, batch, find("http", "nchan")),
    ...line("ladder http ÷ baseline http", find("http", "ladder"), find("http", "baseline")),
    ...line("ladder http ÷ nchan http (for reference)", find("http", "ladder"), find("http", "nchan"), false),
    ...line("ladder http ÷ floor http (a raw node:net server, for reference)", find("http", "ladder"), find("http", "floor"), false),
  ];
}
