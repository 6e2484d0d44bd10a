/** The soak's report: a summary object, its Markdown rendering, and the terminal lines. */
import type { FaultKind, FaultRecord } from "./faults.js";
import type { Ledger, Violation } from "./ledger.js";
import type { NodeStats } from "./topology.js";

export interface RecoveryFigures {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export interface NodeReport {
  readonly name: string;
  readonly restarts: number;
  readonly start: NodeStats;
  readonly end: NodeStats;
}

export interface SoakReport {
  readonly engine: string;
  readonly seed: number;
  readonly command: string;
  readonly startedAt: string;
  readonly durationSeconds: number;
  readonly nodes: number;
  readonly historySize: number;
  readonly subscribers: number;
  readonly publishesAcked: number;
  readonly publishesFailed: number;
  readonly deliveriesChecked: number;
  readonly faults: Partial<Record<FaultKind, number>>;
  readonly recovery: Partial<Record<FaultKind, RecoveryFigures>>;
  readonly gaps: { readonly seen: number; readonly expected: number; readonly byReason: Record<string, number> };
  readonly slowConsumerCut: number;
  /** Longest delay of the soak's own event loop over the run, ms (see lag.ts). */
  readonly soakLoopDelayMaxMs: number;
  readonly nodeResources: readonly NodeReport[];
  readonly faultLog: readonly FaultRecord[];
  readonly violations: readonly Violation[];
  readonly faultErrors: readonly string[];
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export function recoveryFigures(records: readonly FaultRecord[]): Partial<Record<FaultKind, RecoveryFigures>> {
  const byKind = new Map<FaultKind, number[]>();
  for (const r of records) if (r.recoveryMs !== null) byKind.set(r.kind, [...(byKind.get(r.kind) ?? []), r.recoveryMs]);
  const out: Partial<Record<FaultKind, RecoveryFigures>> = {};
  for (const [kind, values] of byKind) {
    values.sort((a, b) => a - b);
    out[kind] = { count: values.length, p50: percentile(values, 50), p99: percentile(values, 99), max: values[values.length - 1]! };
  }
  return out;
}

export function faultCounts(records: readonly FaultRecord[]): Partial<Record<FaultKind, number>> {
  const out: Partial<Record<FaultKind, number>> = {};
  for (const r of records) out[r.kind] = (out[r.kind] ?? 0) + 1;
  return out;
}

export function formatViolation(v: Violation): string {
  return `${new Date(v.at).toISOString()} ${v.kind} channel=${v.channel} subscriber=${v.subscriber} ids=${v.ids.join(",")} — ${v.detail}`;
}

export function progressLine(elapsedS: number, totalS: number, ledger: Ledger, faults: number, lastFault: string): string {
  return (
    `[${String(Math.round(elapsedS)).padStart(5)}/${totalS}s] acked ${ledger.publishesAcked} (failed ${ledger.publishesFailed}) · ` +
    `checked ${ledger.deliveriesChecked} · gaps ${ledger.gapsSeen} · faults ${faults}${lastFault ? ` (last: ${lastFault})` : ""} · violations ${ledger.violations.length}`
  );
}

const mb = (bytes: number): string => (bytes / 1048576).toFixed(1);

export function markdown(report: SoakReport): string {
  const lines = [
    `# Soak: ${report.engine}, seed ${report.seed}`,
    "",
    `\`${report.command}\` — started ${report.startedAt}, ran ${report.durationSeconds} s, ${report.nodes} node(s), historySize ${report.historySize}, ${report.subscribers} subscriber streams.`,
    "",
    "| figure | value |",
    "|---|---|",
    `| publishes acknowledged | ${report.publishesAcked} |`,
    `| publishes failed (during faults) | ${report.publishesFailed} |`,
    `| deliveries checked | ${report.deliveriesChecked} |`,
    `| gaps seen / expected | ${report.gaps.seen} / ${report.gaps.expected} (${Object.entries(report.gaps.byReason).map(([r, n]) => `${r} ${n}`).join(", ") || "none"}) |`,
    `| slow consumer cut by the server | ${report.slowConsumerCut} |`,
    `| the soak's own event loop: longest delay | ${report.soakLoopDelayMaxMs} ms |`,
    `| violations | **${report.violations.length}** |`,
    "",
    "| fault | injected | recovery p50 | p99 | max |",
    "|---|---|---|---|---|",
    ...Object.entries(report.faults).map(([kind, n]) => {
      const r = report.recovery[kind as FaultKind];
      return `| ${kind} | ${n} | ${r ? `${r.p50} ms` : "-"} | ${r ? `${r.p99} ms` : "-"} | ${r ? `${r.max} ms` : "-"} |`;
    }),
    "",
    "| node | restarts | connections start → end | fds start → end | heap MiB start → end |",
    "|---|---|---|---|---|",
    ...report.nodeResources.map((n) => `| ${n.name} | ${n.restarts} | ${n.start.connections} → ${n.end.connections} | ${n.start.fds} → ${n.end.fds} | ${mb(n.start.heapBytes)} → ${mb(n.end.heapBytes)} |`),
    "",
  ];
  if (report.violations.length > 0) {
    lines.push("## Violations", "", ...report.violations.map((v) => `- ${formatViolation(v)}`), "");
  }
  lines.push("## Faults", "", ...report.faultLog.map((f, i) => `${i + 1}. ${f.kind}: ${f.detail} — recovered in ${f.recoveryMs} ms${f.lastBehind && f.recoveryMs !== null && f.recoveryMs > 2000 ? ` (last behind: ${f.lastBehind.join(", ")})` : ""}`), "");
  return lines.join("\n");
}
