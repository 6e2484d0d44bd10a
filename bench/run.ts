/**
 * `npm run bench`: Ladder against a minimal baseline, pattern by pattern, each server in its own pinned
 * child process and the load in this one. See bench/README.md for what each figure means.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, totalmem } from "node:os";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { engineTable, runEngines } from "./engines.js";
import { FLOOR_PATTERNS } from "./floor.js";
import { runWorkersBench, workersTable } from "./workers.js";
import { parseOptions, USAGE, type BenchOptions } from "./options.js";
import { findNchan, NCHAN_PATTERNS, NCHAN_PUBLISH_SCENARIOS } from "./nchan.js";
import { publishCases, publishComparisons, publishTable, runPublishCase, type PublishCaseResult } from "./publish.js";
import { checkFdLimit, CLOCK_TICKS, installCleanup, killAllChildren, pinCores, waitForQuiet } from "./proc.js";
import { medianOf, medianResults, ratios, ratioTable, resultsTable } from "./report.js";
import { publisherPlan, runCase, type CaseResult } from "./scenario.js";

const DEFAULT_OUT = fileURLToPath(new URL("../../bench/results/latest.json", import.meta.url));

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Percentage of the phase in which other processes kept the server or the load generator from its CPU. */
function noise(result: CaseResult): number {
  return (Math.max(result.foreignWaitMs.server, result.foreignWaitMs.load) / result.phaseMs) * 100;
}

function medianPublishResults(runs: readonly PublishCaseResult[]): PublishCaseResult[] {
  return medianOf(runs, (r) => `${r.scenario}/${r.impl}/${r.engine}/${r.connections}`);
}

/** How each implementation of the fan-out cases publishes, said once at the top: a run may mix them (Nchan on many channels). */
function publishersLine(options: BenchOptions, nchanInstalled: boolean): string {
  const plans = options.impls
    .filter((impl) => impl !== "nchan" || nchanInstalled)
    .map((impl) => {
      const plan = publisherPlan(impl, options);
      return `${impl} ${plan.label}${plan.fallback ? ` (${plan.fallback})` : ""}`;
    });
  const what = options.publisher === "ws" ? "ws×N: one publish frame per message on N publisher WebSockets, each acked; http: " : "";
  return `publisher: ${plans.join(", ")} [${what}one POST /api/messages per message]`;
}

async function main(): Promise<number> {
  let options: BenchOptions | "help";
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (options === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  installCleanup();

  const cpuCount = availableParallelism();
  const pinning = pinCores(!options.pin);
  // This process holds one socket per subscriber plus a few; each server child as many.
  const fd = checkFdLimit(options.subscribers + 200);
  const started = new Date();
  const header = [
    options.publish
      ? `ladder bench, publish mode: ${options.publish.join(",")}, ${options.publishCount} messages per run, batches of ${options.batch}, nobody subscribed`
      : `ladder bench: ${options.subscribers} subscribers/pattern${options.channels > 1 ? ` on ${options.channels} channels` : ""}, ${options.rate} msg/s for ${options.seconds} s (warm-up ${options.warmupSeconds} s), patterns ${options.patterns.join(",")}`,
    `cpu: ${cpuCount} x ${cpus()[0]?.model ?? "?"}; ${pinning.note}`,
    `fd limit: ${fd.note}; node ${process.version}; CLK_TCK ${CLOCK_TICKS}`,
  ];
  // Nchan joins the run when installed; without it the bench says so and goes on. Engine mode is Ladder's alone.
  const nchanFound = options.impls.includes("nchan") && (options.publish || !options.engines) ? findNchan() : null;
  const nchan = nchanFound !== null && typeof nchanFound !== "string" ? nchanFound : null;
  const nchanCases = options.publish ? `publish ${[...NCHAN_PUBLISH_SCENARIOS].join(",")}` : `patterns ${[...NCHAN_PATTERNS].join(",")}`;
  if (nchan) header.push(`nchan: ${nchan.nginx} with ${nchan.module ?? "Nchan built in"} (${nchanCases})`);
  else if (typeof nchanFound === "string") header.push(`nchan: left out: ${nchanFound}`);
  if (!options.publish && !options.engines && !options.workers) header.push(publishersLine(options, nchan !== null));
  for (const line of header) process.stdout.write(`${line}\n`);

  if (options.workers) {
    // Workers mode: ladder serve --workers N for each N (bench/workers.ts).
    const workerResults = await runWorkersBench(options, pinning, log);
    process.stdout.write(`\n${workersTable(workerResults)}\n`);
    for (const r of workerResults.filter((e) => e.notes.length > 0)) process.stdout.write(`note ${r.pattern}/${r.workers}: ${r.notes.join("; ")}\n`);
    const out = options.out ?? DEFAULT_OUT.replace(/latest\.json$/, "workers-latest.json");
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify({ startedAt: started.toISOString(), finishedAt: new Date().toISOString(), options, results: workerResults }, null, 2)}\n`);
    process.stdout.write(`\nwrote ${out}\n`);
    return 0;
  }

  if (options.publish) {
    // Publish mode: publish rates with nobody subscribed; repeated cases report their median.
    const runs: PublishCaseResult[] = [];
    for (let round = 1; round <= options.repeat; round++) {
      for (const c of publishCases(options, nchan !== null)) {
        log(`[publish ${c.scenario} / ${c.impl}${c.impl === "ladder" ? ` / ${c.engine}` : ""} / ${c.connections} conns${options.repeat > 1 ? ` / run ${round} of ${options.repeat}` : ""}]`);
        if (options.waitQuietSeconds > 0) await waitForQuiet(options.waitQuietSeconds);
        const r = await runPublishCase(c.scenario, c.impl, c.engine, c.connections, options, pinning, log, nchan);
        log(`  ${Math.round(r.messagesPerSec)} msg/s, ${r.cpuUsPerMessage.toFixed(2)} µs CPU/msg, server ${r.serverCpuPercent.toFixed(0)}%${r.notes.length ? `; ${r.notes.join("; ")}` : ""}`);
        runs.push(r);
      }
    }
    const results = medianPublishResults(runs);
    if (options.repeat > 1) process.stdout.write(`\nmedians of ${options.repeat} runs per case\n`);
    process.stdout.write(`\n${publishTable(results)}\n`);
    const comparisons = publishComparisons(results);
    if (comparisons.length > 0) process.stdout.write(`\n${comparisons.join("\n")}\n`);
    for (const r of results.filter((e) => e.notes.length > 0)) process.stdout.write(`note ${r.scenario}/${r.impl}/${r.engine}/${r.connections}: ${r.notes.join("; ")}\n`);
    const out = options.out ?? DEFAULT_OUT.replace(/latest\.json$/, "publish-latest.json");
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify({ startedAt: started.toISOString(), finishedAt: new Date().toISOString(), options, results, comparisons, runs: options.repeat > 1 ? runs : undefined }, null, 2)}\n`);
    process.stdout.write(`\nwrote ${out}\n`);
    return 0;
  }

  if (options.engines) {
    // Engine mode: ladder on each engine, one node and three, instead of ladder against the baseline.
    const engineResults = await runEngines(options, pinning, log);
    process.stdout.write(`\n${engineTable(engineResults)}\n`);
    for (const r of engineResults.filter((e) => e.notes.length > 0)) process.stdout.write(`note ${r.pattern}/${r.engine}/${r.nodes}: ${r.notes.join("; ")}\n`);
    const out = options.out ?? DEFAULT_OUT.replace(/latest\.json$/, "engines-latest.json");
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify({ startedAt: started.toISOString(), finishedAt: new Date().toISOString(), options, results: engineResults }, null, 2)}\n`);
    process.stdout.write(`\nwrote ${out}\n`);
    return 0;
  }

  const runs: CaseResult[] = [];
  for (let round = 1; round <= options.repeat; round++) {
    for (const pattern of options.patterns) {
      for (const impl of options.impls) {
        if (impl === "nchan" && (!nchan || !NCHAN_PATTERNS.has(pattern))) continue;
        if (impl === "floor" && !FLOOR_PATTERNS.has(pattern)) continue;
        log(`[${pattern} / ${impl}${options.repeat > 1 ? ` / run ${round} of ${options.repeat}` : ""}]`);
        let result: CaseResult | null = null;
        for (let attempt = 0; attempt <= options.retryNoisy; attempt++) {
          if (attempt > 0) log(`  noisy (other processes held a core for ${noise(result!).toFixed(0)}% of the phase): running it again`);
          if (options.waitQuietSeconds > 0) {
            const quiet = await waitForQuiet(options.waitQuietSeconds);
            if (quiet.waitedSeconds > 1.5) log(`  waited ${quiet.waitedSeconds.toFixed(0)} s for a quiet machine (last second ${quiet.busyPercent.toFixed(0)}% busy)`);
          }
          const attemptResult = await runCase(pattern, impl, options, pinning, log, nchan);
          if (!result || noise(attemptResult) < noise(result)) result = attemptResult;
          if (noise(result) <= 10) break;
        }
        result = result!;
        runs.push(result);
        log(
          `  delivered ${result.delivered}/${result.expected} (${Math.round(result.deliveredPerSec)}/s), p50 ${result.latencyMs.p50.toFixed(2)} ms, p99 ${result.latencyMs.p99.toFixed(2)} ms, ` +
            `${result.cpuUsPerDelivered.toFixed(2)} µs CPU/delivery (${result.systemUsPerDelivered.toFixed(2)} in the kernel), server ${result.serverCpuPercent.toFixed(0)}% / load ${result.clientCpuPercent.toFixed(0)}% of a core` +
            (result.notes.length ? `; ${result.notes.join("; ")}` : ""),
        );
      }
    }
  }
  const results = medianResults(runs);
  if (options.repeat > 1) process.stdout.write(`\nmedians of ${options.repeat} runs per case\n`);

  const ratioList = ratios(results);
  const nchanRatios = ratios(results, "nchan");
  const floorRatios = ratios(results, "floor");
  process.stdout.write(`\n${resultsTable(results)}\n`);
  if (ratioList.length > 0) process.stdout.write(`\nladder / baseline (delivered/s: higher is better; the rest: lower is better)\n${ratioTable(ratioList)}\n`);
  if (nchanRatios.length > 0) process.stdout.write(`\nladder / nchan (delivered/s: higher is better; the rest: lower is better)\n${ratioTable(nchanRatios)}\n`);
  if (floorRatios.length > 0) process.stdout.write(`\nladder / floor, a raw node:net server (delivered/s: higher is better; the rest: lower is better)\n${ratioTable(floorRatios)}\n`);
  for (const r of [...ratioList, ...nchanRatios, ...floorRatios].filter((x) => x.mixedPublishers)) {
    process.stdout.write(`note: ${r.pattern} ladder / ${r.against} compares different publishers (ladder / ${r.against}: ${r.publishers})\n`);
  }
  const noted = results.filter((r) => r.notes.length > 0);
  for (const r of noted) process.stdout.write(`note ${r.pattern}/${r.impl}: ${r.notes.join("; ")}\n`);
  const saturatedClient = results.filter((r) => r.clientCpuPercent > 90);
  if (saturatedClient.length > 0) {
    process.stdout.write(
      `note: the load generator used >90% of its core in ${saturatedClient.map((r) => `${r.pattern}/${r.impl}`).join(", ")}; those delivered/s and latencies may be client-bound\n`,
    );
  }
  if (!pinning.pinned) process.stdout.write(`note: ${pinning.note}\n`);

  const out = options.out ?? DEFAULT_OUT;
  mkdirSync(dirname(out), { recursive: true });
  const json = {
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    options,
    environment: {
      node: process.version,
      cpus: cpuCount,
      cpuModel: cpus()[0]?.model ?? null,
      memoryBytes: totalmem(),
      pinning,
      fdLimit: fd,
      clockTicks: CLOCK_TICKS,
    },
    units: {
      deliveredPerSec: "deliveries per second, all subscribers together, over first publish → last delivery",
      latencyMs: "publish stamp (before the POST or the publish frame is sent) → receipt by the subscriber, ms",
      publisher: "http: one POST /api/messages per message; ws×N: one publish frame per message over N publisher WebSockets, each acked",
      cpuUsPerDelivered: "server utime+stime (/proc/<pid>/stat) over the publish phase and drain, µs ÷ deliveries",
      kbPerConnection: "server VmRSS growth after gc with the subscribers idle, kB ÷ connections",
    },
    results,
    ratios: [...ratioList, ...nchanRatios, ...floorRatios],
    runs: options.repeat > 1 ? runs : undefined,
  };
  writeFileSync(out, `${JSON.stringify(json, null, 2)}\n`);
  process.stdout.write(`\nwrote ${out}\n`);
  return 0;
}

main().then(
  (code) => {
    killAllChildren();
    process.exit(code);
  },
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    killAllChildren();
    process.exit(1);
  },
);
