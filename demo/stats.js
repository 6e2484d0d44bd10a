// Live counters per pattern, and the few numbers the comparison table derives from them.
import { formatBytes, formatMs } from "./wire.js";

export class PatternStats {
  constructor(label) {
    this.label = label;
    this.requests = 0; // HTTP requests made (a WebSocket's handshake counts as one)
    this.bytes = 0; // both directions: heads, bodies, frames
    this.messages = 0; // messages handed to the page
    this.empty = 0; // answers that carried nothing: wasted round-trips
    this.reconnects = 0; // connections re-opened after a drop
    this.lost = 0; // sequence numbers that never arrived
    this.duplicates = 0; // sequence numbers that arrived twice
    this.overhead = 0; // heartbeats (SSE comments, WebSocket pings) — not empty answers, but not news either
    this.latencies = [];
    this.lastLatency = null;
  }

  latency(ms) {
    const value = Math.max(0, ms);
    this.lastLatency = value;
    this.latencies.push(value);
    if (this.latencies.length > 500) this.latencies.shift();
  }

  get median() {
    if (this.latencies.length === 0) return null;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }

  get worst() {
    return this.latencies.length ? Math.max(...this.latencies) : null;
  }

  get active() {
    return this.requests > 0;
  }

  toJSON() {
    const { label, requests, bytes, messages, empty, reconnects, lost, duplicates, overhead, lastLatency } = this;
    return { label, requests, bytes, messages, empty, reconnects, lost, duplicates, overhead, lastLatency, median: this.median, worst: this.worst };
  }
}

/**
 * Follows a channel's `n` sequence (set by the demo publisher) to prove nothing was lost or repeated.
 * An `n` of 1 (or far below the last) means the hub restarted and its publisher with it: the count starts over.
 */
export class Sequence {
  #last = null;

  /** Records `n` against `stats`; returns true when it was new. */
  see(n, stats) {
    if (typeof n !== "number") return true;
    if (this.#last === null || n > this.#last) {
      if (this.#last !== null && n > this.#last + 1) stats.lost += n - this.#last - 1;
      this.#last = n;
      return true;
    }
    if (n === 1 || n < this.#last - 50) {
      this.#last = n; // the publisher started over (a hub restart)
      return true;
    }
    stats.duplicates++;
    return false;
  }
}

/** Fills a `<dl class="stats">` with the six counters. */
export function renderStats(dl, s, { emptyLabel = "Empty answers", emptyValue, emptyHint = "wasted round-trips" } = {}) {
  const rows = [
    ["Requests", String(s.requests), "HTTP requests; a handshake is one"],
    ["On the wire", formatBytes(s.bytes), "heads, bodies, frames, both ways"],
    ["Delivered", String(s.messages), "messages shown"],
    ["Latency", s.lastLatency === null ? "—" : `${formatMs(s.median)}`, s.lastLatency === null ? "publish → arrival" : `median; last ${formatMs(s.lastLatency)}`],
    [emptyLabel, emptyValue ?? String(s.empty), emptyHint],
    ["Reconnects", String(s.reconnects), s.lost || s.duplicates ? `${s.lost} lost, ${s.duplicates} repeated` : "nothing lost"],
  ];
  if (dl.childElementCount !== rows.length) {
    dl.replaceChildren(
      ...rows.map(() => {
        const div = document.createElement("div");
        div.append(document.createElement("dt"), document.createElement("dd"), document.createElement("span"));
        div.lastChild.className = "hint";
        return div;
      }),
    );
  }
  rows.forEach(([label, value, hint], i) => {
    const [dt, dd, span] = dl.children[i].children;
    if (dt.textContent !== label) dt.textContent = label;
    if (dd.textContent !== value) dd.textContent = value;
    if (span.textContent !== hint) span.textContent = hint;
    dl.children[i].classList.toggle("warn", (i === 4 && s.empty > 0 && emptyValue === undefined) || (i === 5 && s.lost + s.duplicates > 0));
  });
}
