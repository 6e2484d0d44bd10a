/**
 * What `ladder bench` prints and writes: a text table for the terminal, and one self-contained HTML file
 * — the guide's comparison table with a measured row under each line it can measure, then a latency
 * histogram and a throughput-over-time chart per pattern. The charts are SVG drawn here: no script, no
 * chart library, nothing fetched, so the file opens offline anywhere and cannot fail to run.
 */
import type { BenchReport, PatternResult, Quantiles } from "./run.js";
import type { Pattern } from "./subscribers.js";

const NAMES: Record<Pattern, string> = { poll: "Polling", "long-poll": "Long-polling", sse: "SSE", websocket: "WebSockets" };
const ORDER: readonly Pattern[] = ["poll", "long-poll", "sse", "websocket"];

/** The guide's table, row by row, and the measured line shown under the rows that can be measured. */
const GUIDE: ReadonlyArray<{ row: string; cells: readonly [string, string, string, string]; measured?: (r: PatternResult) => string }> = [
  { row: "Direction", cells: ["client pulls", "client pulls", "server → client", "both ways"] },
  {
    row: "Connection",
    cells: ["new each time", "held, then re-opened", "one, long-lived", "one, long-lived"],
    measured: (r) => `${fmt(r.requestsPerDelivery)} requests per delivery`,
  },
  { row: "Protocol", cells: ["plain HTTP", "plain HTTP", "plain HTTP", "upgraded from HTTP"], measured: (r) => (r.pattern === "websocket" ? "HTTP/1.1 upgrade" : r.protocol) },
  { row: "Auto-reconnect", cells: ["n/a", "manual", "built in", "manual"], measured: (r) => `${r.reconnects} reconnects, ${r.lost} lost, ${r.duplicated} duplicated` },
  { row: "Browser API", cells: ["fetch", "fetch", "EventSource", "WebSocket"] },
  { row: "Latency", cells: ["up to interval", "near-instant", "near-instant", "near-instant"], measured: (r) => `p50 ${ms(r.latencyMs.p50)}, p99 ${ms(r.latencyMs.p99)}` },
  { row: "Best for", cells: ["rare updates", "fallback", "feeds, notifications, dashboards", "chat, games, collaboration"] },
  {
    row: "Main cost",
    cells: ["wasted requests", "connection churn", "one-way only", "most complexity"],
    measured: (r) => `${fmt(r.bytesInPerDelivery)} B down + ${fmt(r.bytesOutPerDelivery)} B up per delivery; ${r.emptyAnswers} empty answers`,
  },
];

function fmt(n: number): string {
  return Number.isInteger(n) ? n.toLocaleString("en-US") : n.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

function ms(n: number): string {
  return n >= 100 ? `${Math.round(n)} ms` : `${n.toFixed(n >= 10 ? 1 : 2)} ms`;
}

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function ordered(report: BenchReport): PatternResult[] {
  return [...report.results].sort((a, b) => ORDER.indexOf(a.pattern) - ORDER.indexOf(b.pattern));
}

/** The terminal summary: one row per pattern. */
export function textTable(report: BenchReport): string {
  const head = ["pattern", "conn p50", "p50", "p99", "p999", "max", "deliv/s", "lost", "dup", "gaps", "B down/dlv", "B up/dlv", "req/dlv", "empty", "reconn", "client CPU"];
  const rows = ordered(report).map((r) => [
    r.pattern,
    ms(r.connectMs.p50),
    ms(r.latencyMs.p50),
    ms(r.latencyMs.p99),
    ms(r.latencyMs.p999),
    ms(r.latencyMs.max),
    fmt(r.deliveriesPerSecond),
    fmt(r.lost),
    fmt(r.duplicated),
    fmt(r.gaps),
    fmt(r.bytesInPerDelivery),
    fmt(r.bytesOutPerDelivery),
    fmt(r.requestsPerDelivery),
    fmt(r.emptyAnswers),
    fmt(r.reconnects),
    `${r.clientCpuPercent}%${r.clientSaturated ? " SATURATED" : ""}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  const out = [line(head), ...rows.map(line)];
  for (const r of ordered(report)) {
    if (r.connected < r.subscribers) out.push(`${r.pattern}: only ${r.connected} of ${r.subscribers} subscribers connected (${r.lastError})`);
    if (r.publishFailures > 0) out.push(`${r.pattern}: ${r.publishFailures} publishes failed (${r.lastPublishFailure})`);
    if (r.clientSaturated) out.push(`${r.pattern}: the load generator used ${r.clientCpuPercent}% of a core — the figures may be its limit, not the hub's`);
  }
  return out.join("\n") + "\n";
}

/** Log-scale latency histogram as SVG bars. */
function histogramSvg(buckets: ReadonlyArray<readonly [number, number]>, q: Quantiles): string {
  const W = 560;
  const H = 180;
  const pad = { l: 44, r: 10, t: 10, b: 34 };
  if (buckets.length === 0) return `<p class="muted">no deliveries</p>`;
  const lo = Math.log10(Math.max(0.01, buckets[0]![0] / 1.5));
  const hi = Math.log10(Math.max(buckets[buckets.length - 1]![0] * 1.5, 1));
  const x = (v: number): number => pad.l + ((Math.log10(Math.max(v, 0.01)) - lo) / (hi - lo || 1)) * (W - pad.l - pad.r);
  // Buckets regrouped into 60 columns so a wide spread still reads as a shape.
  const columns = new Array<number>(60).fill(0);
  for (const [upper, count] of buckets) {
    const i = Math.min(59, Math.max(0, Math.floor(((Math.log10(upper) - lo) / (hi - lo || 1)) * 60)));
    columns[i]! += count;
  }
  const top = Math.max(...columns);
  const cw = (W - pad.l - pad.r) / 60;
  const bars = columns
    .map((c, i) => (c === 0 ? "" : `<rect x="${(pad.l + i * cw).toFixed(1)}" y="${(pad.t + (1 - c / top) * (H - pad.t - pad.b)).toFixed(1)}" width="${(cw - 1).toFixed(1)}" height="${((c / top) * (H - pad.t - pad.b)).toFixed(1)}"/>`))
    .join("");
  const ticks: string[] = [];
  for (let d = Math.ceil(lo); d <= Math.floor(hi); d++) {
    const v = 10 ** d;
    ticks.push(`<line x1="${x(v)}" x2="${x(v)}" y1="${H - pad.b}" y2="${H - pad.b + 4}"/><text x="${x(v)}" y="${H - pad.b + 16}" text-anchor="middle">${v >= 1 ? v : v.toFixed(-d)} ms</text>`);
  }
  const marks = (["p50", "p99"] as const)
    .map((k) => `<line class="mark" x1="${x(q[k])}" x2="${x(q[k])}" y1="${pad.t}" y2="${H - pad.b}"/><text class="mark" x="${x(q[k]) + 3}" y="${pad.t + 10}">${k}</text>`)
    .join("");
  return `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="latency histogram"><g class="bars">${bars}</g><g class="axis"><line x1="${pad.l}" x2="${W - pad.r}" y1="${H - pad.b}" y2="${H - pad.b}"/>${ticks.join("")}</g>${marks}</svg>`;
}

/** Deliveries and publishes per second over the run, as two polylines. */
function timelineSvg(delivered: readonly number[], published: readonly number[]): string {
  const W = 560;
  const H = 180;
  const pad = { l: 54, r: 10, t: 10, b: 30 };
  const n = Math.max(delivered.length, published.length, 2);
  const top = Math.max(1, ...delivered, ...published);
  const x = (i: number): number => pad.l + (i / (n - 1)) * (W - pad.l - pad.r);
  const y = (v: number): number => pad.t + (1 - v / top) * (H - pad.t - pad.b);
  const line = (values: readonly number[], cls: string): string =>
    values.length === 0 ? "" : `<polyline class="${cls}" points="${values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ")}"/>`;
  return `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="throughput over time"><g class="axis"><line x1="${pad.l}" x2="${W - pad.r}" y1="${H - pad.b}" y2="${H - pad.b}"/><line x1="${pad.l}" x2="${pad.l}" y1="${pad.t}" y2="${H - pad.b}"/><text x="${pad.l - 6}" y="${pad.t + 8}" text-anchor="end">${fmt(top)}/s</text><text x="${pad.l - 6}" y="${H - pad.b}" text-anchor="end">0</text><text x="${W - pad.r}" y="${H - 8}" text-anchor="end">${n - 1} s</text></g>${line(delivered, "delivered")}${line(published, "published")}</svg>`;
}

function guideTable(results: PatternResult[]): string {
  const byPattern = new Map(results.map((r) => [r.pattern, r]));
  const rows = GUIDE.map(({ row, cells, measured }) => {
    const guide = `<tr><th>${row}</th>${cells.map((c) => `<td>${escape(c)}</td>`).join("")}</tr>`;
    if (!measured) return guide;
    const values = ORDER.map((p) => {
      const r = byPattern.get(p);
      return `<td class="measured">${r ? escape(measured(r)) : "—"}</td>`;
    });
    return `${guide}<tr class="measured"><th>measured</th>${values.join("")}</tr>`;
  });
  return `<table class="guide"><thead><tr><th></th>${ORDER.map((p) => `<th>${NAMES[p]}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function details(r: PatternResult): string {
  const facts: Array<[string, string]> = [
    ["subscribers connected", `${r.connected} of ${r.subscribers} (${r.protocol})`],
    ["connect time p50 / p99 / max", `${ms(r.connectMs.p50)} / ${ms(r.connectMs.p99)} / ${ms(r.connectMs.max)}`],
    ["latency p50 / p90 / p99 / p999 / max", `${ms(r.latencyMs.p50)} / ${ms(r.latencyMs.p90)} / ${ms(r.latencyMs.p99)} / ${ms(r.latencyMs.p999)} / ${ms(r.latencyMs.max)}`],
    ["published (failed)", `${fmt(r.published)} (${fmt(r.publishFailures)})`],
    ["delivered of expected", `${fmt(r.delivered)} of ${fmt(r.expected)}; ${fmt(r.deliveriesPerSecond)}/s`],
    ["lost / duplicated / excused by a gap", `${fmt(r.lost)} / ${fmt(r.duplicated)} / ${fmt(r.gapped)} (${fmt(r.gaps)} gap signals)`],
    ["bytes on the wire per delivery", `${fmt(r.bytesInPerDelivery)} down, ${fmt(r.bytesOutPerDelivery)} up`],
    ["requests per delivery (empty answers)", `${fmt(r.requestsPerDelivery)} (${fmt(r.emptyAnswers)})`],
    ["reconnects / client errors", `${fmt(r.reconnects)} / ${fmt(r.errors)}`],
    ["load generator CPU", `${r.clientCpuPercent}% of a core${r.clientSaturated ? " — saturated: these figures may be its limit" : ""}`],
  ];
  const bad = r.lost > 0 || r.duplicated > 0;
  return `<section class="pattern${bad ? " bad" : ""}"><h2>${NAMES[r.pattern]}</h2>
<table class="facts">${facts.map(([k, v]) => `<tr><th>${k}</th><td>${escape(v)}</td></tr>`).join("")}</table>
<div class="charts"><figure>${histogramSvg(r.histogram, r.latencyMs)}<figcaption>publish → arrival latency (log scale)</figcaption></figure>
<figure>${timelineSvg(r.perSecond.delivered, r.perSecond.published)}<figcaption><span class="key delivered"></span>deliveries/s <span class="key published"></span>publishes/s</figcaption></figure></div></section>`;
}

const CSS = `body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1180px;padding:0 1rem;color:#1d2330}
h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}.muted{color:#667}
table{border-collapse:collapse;margin:.6rem 0}th,td{padding:.3rem .6rem;border-bottom:1px solid #e3e6ee;text-align:left;vertical-align:top}
table.guide td,table.guide thead th{width:22%}tr.measured td,tr.measured th{background:#eef6ee;color:#174d1f;font-size:.9em}
section.pattern{border-top:2px solid #d6dbe6}section.bad h2{color:#b00020}.charts{display:flex;gap:1rem;flex-wrap:wrap}
figure{margin:0;flex:1 1 520px}figcaption{font-size:.85em;color:#556}svg{width:100%;height:auto;background:#fafbfe}
.bars rect{fill:#3b6fd8}.axis line{stroke:#889}.axis text,text.mark{font-size:11px;fill:#445}line.mark{stroke:#d0392b;stroke-dasharray:3 3}
polyline{fill:none;stroke-width:2}polyline.delivered{stroke:#3b6fd8}polyline.published{stroke:#d08a1b;stroke-dasharray:4 3}
.key{display:inline-block;width:14px;height:3px;margin:0 .3rem .2rem .6rem;vertical-align:middle}.key.delivered{background:#3b6fd8}.key.published{background:#d08a1b}
code{background:#f1f3f8;padding:0 .25rem;border-radius:3px}`;

/** The whole report as one HTML file: inline CSS and SVG, no script, nothing loaded from anywhere. */
export function htmlReport(report: BenchReport): string {
  const results = ordered(report);
  const o = report.options;
  const params = `${o.subscribers} subscribers on ${o.channels} channel${o.channels === 1 ? "" : "s"}, ${o.rate} msg/s for ${o.durationSeconds} s, ${o.size} B messages, poll every ${o.pollIntervalMs} ms, long-poll wait ${o.longPollWaitSeconds} s, auth: ${o.auth}`;
  const violations = results.filter((r) => r.lost > 0 || r.duplicated > 0);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>ladder bench — ${escape(report.url)}</title><style>${CSS}</style></head>
<body><h1>ladder bench: the four patterns, measured</h1>
<p class="muted">${escape(report.url)} · ${escape(report.startedAt)} · Ladder ${escape(report.version)} (the bench) · <code>/readyz</code> ${report.readyz.status}: <code>${escape(JSON.stringify(report.readyz.body))}</code></p>
<p>${escape(params)}. Latency is publish → arrival on this machine's clock; bytes are counted on the TCP sockets (TLS and HTTP framing included).</p>
${violations.length === 0 ? `<p>Every subscriber got every acknowledged message once, in order${results.some((r) => r.gapped > 0) ? ", except where the hub signalled a gap" : ""}.</p>` : `<p class="bad"><strong>Lost or duplicated messages:</strong> ${violations.map((r) => `${NAMES[r.pattern]} ${r.lost} lost, ${r.duplicated} duplicated`).join("; ")}.</p>`}
${guideTable(results)}
${results.map(details).join("\n")}
</body></html>
`;
}
