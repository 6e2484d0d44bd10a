/** The stdout table, the ladder/baseline ratios, and the JSON written next to them. */
import type { Impl } from "./ipc.js";
import type { Pattern } from "./load.js";
import type { CaseResult } from "./scenario.js";

export interface Ratio {
  readonly pattern: Pattern;
  /** What ladder is divided by. */
  readonly against: Exclude<Impl, "ladder">;
  /** How each side published, ladder's first (`ws×1 / http`): a comparison across publishers says so. */
  readonly publishers: string;
  readonly mixedPublishers: boolean;
  /** ladder ÷ the other: above 1 is better for delivered/s, worse for the others. */
  readonly deliveredPerSec: number;
  readonly p50: number;
  readonly p99: number;
  readonly cpuUsPerDelivered: number;
  readonly kbPerIdleConnection: number;
}

function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "-";
}

function grouped(value: number): string {
  return Number.isFinite(value) ? Math.round(value).toLocaleString("en-US") : "-";
}

export function table(headers: readonly string[], rows: readonly (readonly string[])[], leftColumns: number): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function median(values: number[]): number {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Field by field median of objects of one shape (numbers: median; arrays: all items once; the rest: the first). */
function medianShape(items: readonly unknown[]): unknown {
  const first = items[0];
  if (typeof first === "number") return median(items as number[]);
  if (Array.isArray(first)) return [...new Set(items.flatMap((i) => i as unknown[]))];
  if (first && typeof first === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(first)) out[key] = medianShape(items.map((i) => (i as Record<string, unknown>)[key]));
    return out;
  }
  return first;
}

/** One result per key: the median of the repeated runs, metric by metric. */
export function medianOf<T>(runs: readonly T[], key: (run: T) => string): T[] {
  const groups = new Map<string, T[]>();
  for (const run of runs) groups.set(key(run), [...(groups.get(key(run)) ?? []), run]);
  return [...groups.values()].map((group) => (group.length === 1 ? group[0]! : (medianShape(group) as T)));
}

/** One result per pattern and implementation: the median of the repeated runs, metric by metric. */
export function medianResults(runs: readonly CaseResult[]): CaseResult[] {
  return medianOf(runs, (run) => `${run.pattern}/${run.impl}`);
}

export function ratios(results: readonly CaseResult[], against: Exclude<Impl, "ladder"> = "baseline"): Ratio[] {
  const out: Ratio[] = [];
  for (const ladder of results.filter((r) => r.impl === "ladder")) {
    const baseline = results.find((r) => r.impl === against && r.pattern === ladder.pattern);
    if (!baseline) continue;
    out.push({
      pattern: ladder.pattern,
      against,
      publishers: `${ladder.publisher} / ${baseline.publisher}`,
      mixedPublishers: ladder.publisher !== baseline.publisher,
      deliveredPerSec: ladder.deliveredPerSec / baseline.deliveredPerSec,
      p50: ladder.latencyMs.p50 / baseline.latencyMs.p50,
      p99: ladder.latencyMs.p99 / baseline.latencyMs.p99,
      cpuUsPerDelivered: ladder.cpuUsPerDelivered / baseline.cpuUsPerDelivered,
      kbPerIdleConnection: ladder.idle.kbPerConnection / baseline.idle.kbPerConnection,
    });
  }
  return out;
}

export function resultsTable(results: readonly CaseResult[]): string {
  const headers = ["pattern", "impl", "publisher", "subscribers", "delivered/s", "% offered", "p50 ms", "p99 ms", "CPU µs/delivered", "KB/idle conn", "srv CPU%", "load CPU%", "failed pubs"];
  const rows = results.map((r) => [
    r.pattern,
    r.impl,
    r.publisher,
    String(r.subscribers),
    grouped(r.deliveredPerSec),
    fixed((r.deliveredPerSec / r.offeredPerSec) * 100, 0),
    fixed(r.latencyMs.p50, 2),
    fixed(r.latencyMs.p99, 2),
    fixed(r.cpuUsPerDelivered, 2),
    fixed(r.idle.kbPerConnection, 1),
    fixed(r.serverCpuPercent, 0),
    fixed(r.clientCpuPercent, 0),
    String(r.publishFailed),
  ]);
  return table(headers, rows, 3);
}

export function ratioTable(list: readonly Ratio[]): string {
  const headers = ["pattern", "publishers", "delivered/s", "p50", "p99", "CPU/delivered", "KB/idle conn"];
  const rows = list.map((r) => [
    r.pattern,
    r.publishers,
    fixed(r.deliveredPerSec, 2),
    fixed(r.p50, 2),
    fixed(r.p99, 2),
    fixed(r.cpuUsPerDelivered, 2),
    fixed(r.kbPerIdleConnection, 2),
  ]);
  return table(headers, rows, 2);
}
