/**
 * `node dist/bench/engine-publish.js [--against <other dist dir>]`: the memory engine's publish, in process,
 * in ns per publish (200-byte data, its size given as the hub gives it). Three cases: one hot channel with
 * a listener; 1000 channels round-robin; a new channel each publish (past the default 50,000 channels every
 * publish also evicts one). With `--against`, the same cases run alternately against that build's engine
 * (e.g. a checkout before a change), so the two are measured side by side on the same noisy machine.
 * Each measurement is a fresh child process (no JIT state shared between builds or cases) and counts the
 * process's CPU time, not wall time, so other processes on the machine do not inflate it. Median of 3
 * rounds; docs/performance.md quotes it.
 */
import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Engine } from "../src/engines/engine.js";

type MakeEngine = () => Engine;


const DATA = { text: "x".repeat(200) };
const SIZE = Buffer.byteLength(JSON.stringify(DATA));
const ROUNDS = 3;

interface Case {
  readonly name: string;
  readonly publishes: number;
  channel(i: number): string;
  setup?(engine: Engine): Promise<unknown>;
}

const NEW_CHANNELS = Array.from({ length: 400_000 }, (_, i) => `new-${i}`);
const CASES: Case[] = [
  { name: "one hot channel, 1 listener", publishes: 300_000, channel: () => "hot", setup: (e) => e.subscribe("hot", () => {}) },
  { name: "1000 channels round-robin", publishes: 300_000, channel: (i) => `c${i % 1000}` },
  { name: "a new channel each publish", publishes: 200_000, channel: (i) => NEW_CHANNELS[i % NEW_CHANNELS.length]! },
];

async function nsPerPublish(make: MakeEngine, c: Case): Promise<number> {
  const engine = make();
  await c.setup?.(engine);
  const warm = 20_000;
  for (let i = 0; i < warm; i++) await engine.publish(c.channel(i), DATA, SIZE);
  const start = process.cpuUsage();
  for (let i = warm; i < warm + c.publishes; i++) await engine.publish(c.channel(i), DATA, SIZE);
  const used = process.cpuUsage(start);
  const ns = ((used.user + used.system) * 1000) / c.publishes;
  await engine.close();
  return ns;
}

async function engineFrom(distDir: string): Promise<MakeEngine> {
  const url = pathToFileURL(resolve(distDir, "src/engines/memory.js")).href;
  const { MemoryEngine } = (await import(url)) as { MemoryEngine: new (o: { maxCount: number; maxAgeMs: number }) => Engine };
  return () => new MemoryEngine({ maxCount: 1000, maxAgeMs: 3_600_000 });
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** One measurement in a fresh process: `--one <dist dir> <case index>` prints ns per publish. */
function measure(distDir: string, caseIndex: number): number {
  const out = execFileSync(process.execPath, [new URL(import.meta.url).pathname, "--one", distDir, String(caseIndex)], { encoding: "utf8" });
  return Number(out.trim());
}

async function main(): Promise<void> {
  const one = process.argv.indexOf("--one");
  if (one > 0) {
    const make = await engineFrom(process.argv[one + 1]!);
    process.stdout.write(`${await nsPerPublish(make, CASES[Number(process.argv[one + 2])]!)}\n`);
    return;
  }
  const at = process.argv.indexOf("--against");
  const builds: Array<[string, string]> = [["this build", resolve(new URL(".", import.meta.url).pathname, "..")]];
  if (at > 0) builds.unshift([process.argv[at + 1]!, process.argv[at + 1]!]);
  for (const [index, c] of CASES.entries()) {
    const samples = builds.map((): number[] => []);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [k, [, dir]] of builds.entries()) samples[k]!.push(measure(dir, index));
    }
    const cells = builds.map(([label], k) => `${label}: ${median(samples[k]!).toFixed(0)} ns (${samples[k]!.map((x) => x.toFixed(0)).join(", ")})`);
    const ratio = builds.length === 2 ? `  ×${(median(samples[1]!) / median(samples[0]!)).toFixed(2)}` : "";
    process.stdout.write(`${c.name.padEnd(30)} ${cells.join("  |  ")}${ratio}\n`);
  }
}

await main();
