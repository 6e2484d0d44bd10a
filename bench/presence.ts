/**
 * What presence costs: 1,000 members join a channel and leave it while a watcher on another node follows
 * every change — over the in-process bus (one process, two Presence instances) and over Redis and NATS
 * (each node its own connection). Reports changes per second end to end, this process's CPU per change,
 * and the heap each member adds on the node that holds it.
 *
 *   npm run build && node --expose-gc dist/bench/presence.js [--members 1000] [--buses memory,redis,nats]
 */
import { parseArgs } from "node:util";
import { createBus, MemoryBus, type PresenceBus } from "../src/server/presence/bus.js";
import { Presence } from "../src/server/presence/presence.js";

const { values } = parseArgs({ options: { members: { type: "string", default: "1000" }, buses: { type: "string", default: "memory,redis,nats" } } });
const MEMBERS = Number(values.members);
const gc = (globalThis as { gc?: () => void }).gc;

async function busFor(kind: string, tag: string): Promise<PresenceBus> {
  if (kind === "memory") return new MemoryBus();
  if (kind === "redis") return createBus(`redis://127.0.0.1:6379?prefix=ladder-bench:${tag}:`);
  return createBus(`nats://127.0.0.1:4222?prefix=ladder-bench.${tag}`);
}

async function heapUsed(): Promise<number> {
  gc?.();
  await new Promise((resolve) => setTimeout(resolve, 20));
  gc?.();
  return process.memoryUsage().heapUsed;
}

async function run(kind: string): Promise<void> {
  const tag = `p${process.pid}${kind}`;
  const shared = kind === "memory" ? new MemoryBus() : null;
  const busA = shared ?? (await busFor(kind, tag));
  const busB = shared ?? (await busFor(kind, tag));
  const holder = new Presence({ bus: busA, leaveDelayMs: 0, gatherMs: 200 });
  const watcher = new Presence({ bus: busB, leaveDelayMs: 0, gatherMs: 200 });
  await Promise.all([holder.whenStarted(), watcher.whenStarted()]);
  const channel = "bench.room";
  let joins = 0;
  let leaves = 0;
  const watch = await watcher.watch(channel, (e) => (e.type === "join" ? joins++ : leaves++));
  const until = async (check: () => boolean): Promise<void> => {
    const deadline = Date.now() + 30_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`${kind}: timed out (${joins} joins, ${leaves} leaves)`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  };

  const heap0 = await heapUsed();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const releases = Array.from({ length: MEMBERS }, (_, i) => holder.join(channel, { client: `c${i}`, info: { name: `member ${i}` }, since: Date.now() }));
  await until(() => joins === MEMBERS);
  const joinMs = performance.now() - t0;
  const heap1 = await heapUsed();
  const listed = await watcher.list(channel, MEMBERS);
  const t1 = performance.now();
  for (const release of releases) release();
  await until(() => leaves === MEMBERS);
  const leaveMs = performance.now() - t1;
  const cpu = process.cpuUsage(cpu0);
  const cpuUs = (cpu.user + cpu.system) / (2 * MEMBERS);
  console.log(
    `${kind.padEnd(6)}  ${MEMBERS} members: joins ${Math.round(MEMBERS / (joinMs / 1000)).toLocaleString("en-US")}/s, leaves ${Math.round(MEMBERS / (leaveMs / 1000)).toLocaleString("en-US")}/s, ` +
      `${cpuUs.toFixed(1)} µs CPU per change (both nodes, this process), heap ${(((heap1 - heap0) / MEMBERS)).toFixed(0)} B per member (holder and watcher's view), list of ${listed.count} read`,
  );
  watch.stop();
  await holder.close();
  await watcher.close();
  if (!shared) await Promise.all([busA.close(), busB.close()]);
}

for (const kind of values.buses!.split(",")) await run(kind.trim());
