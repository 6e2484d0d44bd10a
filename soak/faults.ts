/**
 * Faults on a schedule drawn from the seed: one at a time, in rounds of every kind in a shuffled order,
 * each followed by a measured recovery (every subscriber reaches the newest id known when the fault ended)
 * and a random pause. The same seed gives the
 * same sequence of kinds, targets, shares and pauses; the system's own timing still varies from run to run.
 */
import type { LoopLag } from "./lag.js";
import type { Ledger, Track } from "./ledger.js";
import { FREEZE_DETECT_MS, type ChannelLoad, type Publishers, type WsSubscriber } from "./load.js";
import type { Topology } from "./topology.js";

export type FaultKind = "kill" | "term" | "broker" | "rst" | "freeze" | "slow" | "burst";
export const FAULT_KINDS: readonly FaultKind[] = ["kill", "term", "broker", "rst", "freeze", "slow", "burst"];

/** Once a fault has ended, no subscriber that is behind may go longer than this without a delivery. */
export const RECOVERY_BOUND_MS = 10_000;
/** A recovery still not done by then is recorded at this value and the schedule goes on. */
const RECOVERY_GIVE_UP_MS = 30_000;

/** mulberry32: small, fast and good enough to make a schedule from a seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FaultRecord {
  readonly kind: FaultKind;
  readonly detail: string;
  readonly startedAt: number;
  readonly endedAt: number;
  /** Fault end to every subscriber caught up, ms (null while measuring). */
  recoveryMs: number | null;
  /** The subscribers (subscriber/channel) that were still behind on the last look before recovery: who to look at when it is slow. */
  lastBehind?: string[];
}

export interface FaultContext {
  readonly topology: Topology;
  readonly ledger: Ledger;
  readonly publishers: Publishers;
  readonly slowConsumer: WsSubscriber;
  readonly burstChannel: ChannelLoad;
  readonly historySize: number;
  /** Draws the schedule: kinds, targets, shares, durations, pauses. */
  readonly random: () => number;
  /** Picks which connections a cut or a freeze hits: a stream of its own, so the schedule replays exactly. */
  readonly pick: () => number;
  readonly log: (line: string) => void;
  /** The soak's own event-loop delay, named in a stall's report. */
  readonly lag: LoopLag;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const between = (random: () => number, lo: number, hi: number): number => Math.round(lo + random() * (hi - lo));

export function faultKindsFor(topology: Topology): FaultKind[] {
  return FAULT_KINDS.filter((kind) => kind !== "broker" || topology.restartableBroker);
}

const SLOW_PAD_BYTES = 32 * 1024;

/** Publishes `count` messages on the burst channel as fast as 8 concurrent HTTP publishers go. */
async function burst(ctx: FaultContext, count: number, pad: number): Promise<void> {
  const channel = { ...ctx.burstChannel, pad };
  let sent = 0;
  const worker = async (): Promise<void> => {
    while (sent < count) {
      sent++;
      await ctx.publishers.publish(channel, "http");
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

/** Injects one fault; resolves at the fault's end. */
async function inject(kind: FaultKind, ctx: FaultContext): Promise<string> {
  const { topology, random } = ctx;
  switch (kind) {
    case "kill":
    case "term": {
      const slot = topology.slots[Math.floor(random() * topology.slots.length)]!;
      const downMs = between(random, 200, 2000);
      // Noted as the new process is spawned: every cursor reached before (a drain still delivers) is unknown to it.
      const respawned = topology.options.engine === "memory" ? () => ctx.ledger.noteRestart() : undefined;
      await topology.restart(slot, kind === "kill" ? "SIGKILL" : "SIGTERM", downMs, respawned);
      return `${slot.name} ${kind === "kill" ? "SIGKILL" : "SIGTERM"}, down ${downMs} ms`;
    }
    case "broker": {
      const signal = random() < 0.5 ? "SIGKILL" : "SIGTERM";
      const downMs = between(random, 500, 4000);
      await topology.restartBroker(signal, downMs);
      return `broker ${signal}, down ${downMs} ms`;
    }
    case "rst": {
      const share = 0.3 + random() * 0.7;
      const cut = topology.front.cut(share, ctx.pick, "rst");
      return `reset ${cut} connections (${Math.round(share * 100)}%)`;
    }
    case "freeze": {
      const share = 0.2 + random() * 0.5;
      const frozen = topology.front.freeze(share, ctx.pick);
      // The fault lasts until every client must have noticed: the slowest detection is a held long-poll.
      await sleep(FREEZE_DETECT_MS);
      topology.front.releaseFrozen();
      return `froze ${frozen} connections (${Math.round(share * 100)}%) for ${FREEZE_DETECT_MS} ms`;
    }
    case "slow": {
      const ms = between(random, 4000, 12_000);
      const closesBefore = ctx.slowConsumer.closes.get(1008) ?? 0;
      const paused = ctx.slowConsumer.pause(ms);
      // Large messages while it does not read: enough to fill the kernel's buffers along the way and the
      // node's own bound, so the slow-consumer policy really acts.
      await sleep(500);
      await burst(ctx, ctx.historySize, SLOW_PAD_BYTES);
      await paused;
      await sleep(200);
      const cut = (ctx.slowConsumer.closes.get(1008) ?? 0) - closesBefore;
      return `${ctx.slowConsumer.name} stopped reading for ${ms} ms under ${ctx.historySize} messages of ${SLOW_PAD_BYTES / 1024} KiB${cut > 0 ? "; closed 1008 by the slow-consumer policy" : ""}`;
    }
    case "burst": {
      const count = Math.round(ctx.historySize * (1.2 + random()));
      await burst(ctx, count, ctx.burstChannel.pad);
      return `${count} publishes on ${ctx.burstChannel.name} (history ${ctx.historySize})`;
    }
  }
}

/** Tracks behind the newest id each channel had at `targets` time. */
function behind(ledger: Ledger, targets: Map<string, string | null>): Track[] {
  return ledger.tracks().filter((t) => ledger.behind(t, targets.get(t.channel) ?? null));
}

/** Waits until every subscriber holds the ids known at the fault's end; reports the ones left behind. */
async function measureRecovery(ctx: FaultContext, record: FaultRecord): Promise<void> {
  const targets = new Map(ctx.ledger.channels().map((c) => [c, ctx.ledger.head(c)]));
  for (;;) {
    const late = behind(ctx.ledger, targets);
    const now = Date.now();
    const elapsed = now - record.endedAt;
    if (late.length === 0) {
      record.recoveryMs = elapsed;
      return;
    }
    record.lastBehind = late.map((t) => `${t.subscriber}/${t.channel}`);
    // Behind is allowed (a catch-up takes its time); behind with nothing delivered for the bound is not.
    for (const track of late) {
      const idle = now - Math.max(track.lastProgressAt, record.endedAt);
      if (idle > RECOVERY_BOUND_MS) {
        const own = ctx.lag.window(now - idle, now);
        ctx.ledger.stalled(track, `nothing delivered for ${idle} ms after ${record.kind} (${record.detail}) ended: at ${track.pos}, newest ${targets.get(track.channel)}; the soak's own loop meanwhile: longest delay ${own.maxMs} ms, ${own.totalMs} ms in all`, [track.pos, targets.get(track.channel) ?? "-"]);
      }
    }
    if (elapsed > RECOVERY_GIVE_UP_MS) {
      record.recoveryMs = elapsed;
      return;
    }
    await sleep(50);
  }
}

function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

export class FaultSchedule {
  readonly records: FaultRecord[] = [];
  /** Faults the soak could not inject (a node that would not start again): the run proves less, and says so. */
  readonly errors: string[] = [];
  /** True from a fault's start until its recovery is measured (the stall watchdog stands aside). */
  active = false;
  lastEnd = 0;
  #stopped = false;
  #done: Promise<void> = Promise.resolve();

  constructor(
    readonly ctx: FaultContext,
    readonly kinds: readonly FaultKind[],
  ) {}

  start(until: number, firstAfterMs: number): void {
    this.#done = this.#run(until, firstAfterMs);
  }

  /** Stops scheduling; resolves once the fault in progress has ended and recovered. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#done;
  }

  async #run(until: number, firstAfterMs: number): Promise<void> {
    const { random } = this.ctx;
    await this.#sleepUnlessStopped(firstAfterMs);
    let round: FaultKind[] = [];
    while (!this.#stopped && Date.now() < until) {
      // Rounds of every kind in a seeded order: a short run still sees many kinds, a long one all evenly.
      if (round.length === 0) round = shuffled(this.kinds, random);
      const kind = round.pop()!;
      this.active = true;
      const startedAt = Date.now();
      let detail: string;
      try {
        detail = await inject(kind, this.ctx);
      } catch (error) {
        detail = `failed to inject: ${(error as Error).message.slice(0, 500)}`;
        this.errors.push(`${kind}: ${detail}`);
      }
      const record: FaultRecord = { kind, detail, startedAt, endedAt: Date.now(), recoveryMs: null };
      this.records.push(record);
      await measureRecovery(this.ctx, record);
      const slowest = record.lastBehind && record.recoveryMs !== null && record.recoveryMs > 2000 ? ` (last: ${record.lastBehind.slice(0, 4).join(", ")})` : "";
      this.ctx.log(`fault ${this.records.length}: ${kind} — ${detail}; recovered in ${record.recoveryMs} ms${slowest}`);
      this.lastEnd = Date.now();
      this.active = false;
      await this.#sleepUnlessStopped(between(random, 2000, 8000));
    }
  }

  async #sleepUnlessStopped(ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (!this.#stopped && Date.now() < end) await sleep(Math.min(200, end - Date.now()));
  }
}
