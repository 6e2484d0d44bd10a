/**
 * `npm run soak -- [flags]`: Ladder under steady load while faults pile up on a seeded schedule, checked
 * continuously (see ledger.ts for the invariants). Exit 0: no violation; 1: violations; 2: the soak itself failed.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { FaultSchedule, faultKindsFor, seededRandom, type FaultKind } from "./faults.js";
import { LoopLag } from "./lag.js";
import { Ledger } from "./ledger.js";
import { clientSubscriber, headCursor, pollSubscriber, Publishers, sseSubscriber, WsSubscriber, type ChannelLoad, type SoakSubscriber } from "./load.js";
import { faultCounts, formatViolation, markdown, progressLine, recoveryFigures, type NodeReport, type SoakReport } from "./report.js";
import { Topology, type EngineKind, type NodeStats } from "./topology.js";

const USAGE = `npm run soak -- [flags]

  --engine E          memory (one node, restarted) | redis | nats (three nodes behind a round-robin front,
                      a private broker the soak restarts)                         (default memory)
  --duration S        seconds of load and faults                                   (default 300, 10..86400)
  --seed N            schedule seed (printed at start; the same seed replays the same faults) (default random)
  --faults LIST       kinds to inject: kill,term,broker,rst,freeze,slow,burst     (default all that apply)
  --history N         historySize of every node                                    (default 100, 10..10000)
  --broker-url URL    use this broker instead of a private one (no broker restarts)
  --out DIR           where the JSON and Markdown reports go                        (default soak/results)
  --help`;

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** A node's heap may grow by this much over a run before it counts as a leak (V8 collects lazily). */
const HEAP_SLACK_BYTES = 48 * 1024 * 1024;
const FD_SLACK = 8;
const FINAL_CATCH_UP_MS = 20_000;
const STALL_MS = 10_000;

interface Options {
  engine: EngineKind;
  duration: number;
  seed: number;
  faults: FaultKind[] | null;
  history: number;
  brokerUrl: string | undefined;
  out: string;
}

function fail(message: string): never {
  process.stderr.write(`${message}\n\n${USAGE}\n`);
  process.exit(2);
}

function int(value: string | undefined, name: string, fallback: number, lo: number, hi: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < lo || n > hi) fail(`--${name} must be a whole number in ${lo}..${hi}, got ${value}`);
  return n;
}

function parseOptions(argv: string[]): Options {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        engine: { type: "string" },
        duration: { type: "string" },
        seed: { type: "string" },
        faults: { type: "string" },
        history: { type: "string" },
        "broker-url": { type: "string" },
        out: { type: "string" },
        help: { type: "boolean" },
      },
    }));
  } catch (error) {
    fail((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const engine = (values.engine ?? "memory") as EngineKind;
  if (!["memory", "redis", "nats"].includes(engine)) fail(`--engine must be memory, redis or nats, got ${engine}`);
  const faults = values.faults === undefined ? null : (values.faults.split(",") as FaultKind[]);
  for (const kind of faults ?? []) if (!["kill", "term", "broker", "rst", "freeze", "slow", "burst"].includes(kind)) fail(`unknown fault ${kind}`);
  return {
    engine,
    duration: int(values.duration, "duration", 300, 10, 86_400),
    seed: int(values.seed, "seed", Math.floor(Math.random() * 2 ** 31), 0, 2 ** 31 - 1),
    faults,
    history: int(values.history, "history", 100, 10, 10_000),
    brokerUrl: values["broker-url"],
    out: values.out ?? join(ROOT, "soak", "results"),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const command = `npm run soak -- --engine ${options.engine} --duration ${options.duration} --seed ${options.seed}${options.faults ? ` --faults ${options.faults.join(",")}` : ""}`;
  const tty = process.stdout.isTTY === true;
  const log = (line: string): void => void process.stdout.write(`${tty ? "\r\x1b[K" : ""}${line}\n`);
  log(`soak: engine ${options.engine}, seed ${options.seed}, ${options.duration} s — replay with: ${command}`);

  const tag = `soak_${options.seed}_${process.pid}`;
  const topology = new Topology({
    engine: options.engine,
    nodes: options.engine === "memory" ? 1 : 3,
    historySize: options.history,
    maxBufferedBytes: 64 * 1024,
    tag,
    ...(options.brokerUrl ? { brokerUrl: options.brokerUrl } : {}),
  });
  const ledger = new Ledger({ historySize: options.history, memory: options.engine === "memory" });
  ledger.onViolation = (v) => log(`VIOLATION ${formatViolation(v)}`);
  const subscribers: SoakSubscriber[] = [];
  let publishers: Publishers | null = null;
  const cleanup = async (): Promise<void> => {
    for (const s of subscribers) s.stop();
    await publishers?.stop();
    await topology.stop();
  };
  // Interrupted: the nodes and the private broker are our children, and must not outlive us.
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void cleanup().finally(() => process.exit(130)));

  try {
    await topology.start();
    log(`front ${topology.url} → ${topology.slots.map((s) => `${s.name} :${s.port}`).join(", ")}${topology.broker ? `; private broker ${topology.broker.url}` : ""}`);
    const channels: ChannelLoad[] = [
      { name: "soak.a", rate: 4, pad: 0 },
      { name: "soak.b", rate: 4, pad: 0 },
      // Busy and padded: its history spans a few seconds, so resumes fall out of it and slow consumers fill up.
      { name: "soak.short", rate: 16, pad: 512 },
    ];
    const starts = new Map<string, string>();
    for (const c of channels) starts.set(c.name, await headCursor(topology.url, c.name));
    for (const transport of ["auto", "websocket", "sse", "long-poll", "poll"] as const) subscribers.push(clientSubscriber(topology.url, ledger, transport, starts));
    for (const c of channels) {
      const start = starts.get(c.name)!;
      subscribers.push(sseSubscriber(topology.url, ledger, c.name, start));
      subscribers.push(pollSubscriber(topology.url, ledger, c.name, start, 5, 0));
      subscribers.push(pollSubscriber(topology.url, ledger, c.name, start, 0, 1000));
    }
    const slowConsumer = new WsSubscriber(topology.url, ledger, starts, ":slow");
    subscribers.push(slowConsumer, new WsSubscriber(topology.url, ledger, starts));
    publishers = new Publishers(topology.url, ledger, `${tag}:`);
    const startedAt = Date.now();
    publishers.start(channels);

    const random = seededRandom(options.seed);
    const kinds = (options.faults ?? faultKindsFor(topology)).filter((k) => faultKindsFor(topology).includes(k));
    const lag = new LoopLag();
    lag.start();
    const schedule = new FaultSchedule({ topology, ledger, publishers, slowConsumer, burstChannel: channels[2]!, historySize: options.history, random, pick: seededRandom(options.seed ^ 0x5bd1e995), log, lag }, kinds);
    const until = startedAt + options.duration * 1000;
    schedule.lastEnd = startedAt;
    schedule.start(until, 3000);

    // The watchdog: outside faults and their recovery, no subscriber behind the newest known id goes 10 s without a delivery.
    let lastProgress = 0;
    while (Date.now() < until) {
      await sleep(250);
      const now = Date.now();
      if (!schedule.active) {
        for (const track of ledger.tracks()) {
          const since = ledger.waitingSince(track);
          if (since !== null && !track.paused && now - Math.max(since, track.lastProgressAt, schedule.lastEnd) > STALL_MS) {
            const own = lag.window(track.lastProgressAt, now);
            ledger.stalled(track, `no progress for ${now - track.lastProgressAt} ms with newer ids known (position ${track.pos}, head ${ledger.head(track.channel)}); the soak's own loop meanwhile: longest delay ${own.maxMs} ms, ${own.totalMs} ms in all`, [track.pos]);
          }
        }
      }
      if (now - lastProgress >= (tty ? 1000 : 10_000)) {
        lastProgress = now;
        const last = schedule.records[schedule.records.length - 1];
        const line = `${progressLine((now - startedAt) / 1000, options.duration, ledger, schedule.records.length, last ? last.kind : "")} · soak loop delay ≤ ${lag.takeMax()} ms`;
        if (tty) process.stdout.write(`\r\x1b[K${line}`);
        else log(line);
      }
    }
    await schedule.stop();
    await publishers.stop();
    const ranSeconds = Math.round((Date.now() - startedAt) / 1000);
    log(`load stopped after ${ranSeconds} s; waiting for every subscriber to catch up`);

    const finalDeadline = Date.now() + FINAL_CATCH_UP_MS;
    let late = ledger.tracks().filter((t) => ledger.behind(t, ledger.head(t.channel)));
    while (late.length > 0 && Date.now() < finalDeadline) {
      await sleep(100);
      late = ledger.tracks().filter((t) => ledger.behind(t, ledger.head(t.channel)));
    }
    for (const track of late) ledger.stalled(track, `still at ${track.pos} ${FINAL_CATCH_UP_MS} ms after the load stopped; head ${ledger.head(track.channel)}`, [track.pos, ledger.head(track.channel) ?? "-"]);

    for (const s of subscribers) s.stop();
    subscribers.length = 0;
    await topology.front.close();
    const nodeResources = await settle(topology, ledger);

    const report: SoakReport = {
      engine: options.engine,
      seed: options.seed,
      command,
      startedAt: new Date(startedAt).toISOString(),
      durationSeconds: ranSeconds,
      nodes: topology.slots.length,
      historySize: options.history,
      subscribers: ledger.tracks().length,
      publishesAcked: ledger.publishesAcked,
      publishesFailed: ledger.publishesFailed,
      deliveriesChecked: ledger.deliveriesChecked,
      faults: faultCounts(schedule.records),
      recovery: recoveryFigures(schedule.records),
      gaps: { seen: ledger.gapsSeen, expected: ledger.gapsExpected, byReason: ledger.gapsByReason },
      slowConsumerCut: slowConsumer.closes.get(1008) ?? 0,
      soakLoopDelayMaxMs: Math.round(lag.maxMs),
      nodeResources,
      faultLog: schedule.records,
      violations: ledger.violations,
      faultErrors: schedule.errors,
    };
    mkdirSync(options.out, { recursive: true });
    const base = join(options.out, `${options.engine}-${options.seed}`);
    writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(`${base}.md`, markdown(report));
    log("");
    log(markdown(report));
    log(`reports: ${base}.json, ${base}.md`);
    for (const error of schedule.errors) log(`SOAK ERROR ${error}`);
    log(report.violations.length === 0 ? "soak passed: no violation" : `soak FAILED: ${report.violations.length} violation(s) — replay with: ${command}`);
    if (report.violations.length > 0) return 1;
    return schedule.errors.length === 0 ? 0 : 2;
  } finally {
    await cleanup().catch(() => {});
  }
}

/** After the load: every node's connections, fds and heap must come back near their start. */
async function settle(topology: Topology, ledger: Ledger): Promise<NodeReport[]> {
  const within = (start: NodeStats, end: NodeStats): boolean =>
    end.connections <= start.connections && (start.fds < 0 || end.fds <= start.fds + FD_SLACK) && end.heapBytes <= start.heapBytes + HEAP_SLACK_BYTES;
  const deadline = Date.now() + 15_000;
  let ends: NodeStats[] = [];
  for (;;) {
    ends = await Promise.all(topology.slots.map((s) => topology.stats(s.node)));
    if (ends.every((end, i) => within(topology.slots[i]!.baseline, end)) || Date.now() > deadline) break;
    await sleep(500);
  }
  return topology.slots.map((slot, i) => {
    const end = ends[i]!;
    const start = slot.baseline;
    if (!within(start, end)) {
      ledger.leak(slot.name, `after the run: connections ${start.connections} → ${end.connections}, fds ${start.fds} → ${end.fds}, heap ${start.heapBytes} → ${end.heapBytes} bytes`);
    }
    return { name: slot.name, restarts: slot.restarts, start, end };
  });
}

process.on("unhandledRejection", (error) => {
  process.stderr.write(`soak error: ${(error as Error)?.stack ?? String(error)}\n`);
  process.exit(2);
});

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`soak error: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exit(2);
  },
);
