// Example 1: a message feed read by interval polling or long-polling — the guide's loops, run with raw
// fetch so every request and every (empty) answer shows on the wire.
import { PatternStats, Sequence } from "./stats.js";
import { formatMs, tappedFetch } from "./wire.js";

export const FEED_CHANNEL = "demo.feed";
const WAIT_SECONDS = 25;
const KEEP = 40;

const sleep = (ms, run) =>
  new Promise((resolve) => {
    run.sleep = setTimeout(resolve, ms);
  });

export class Feed {
  constructor({ wire, list, status, clock }) {
    this.wire = wire;
    this.list = list;
    this.statusEl = status;
    this.clock = clock;
    this.stats = { poll: new PatternStats("Polling"), "long-poll": new PatternStats("Long-polling") };
    this.sequence = new Sequence();
    this.mode = "poll";
    this.intervalMs = 2000;
    /** The guide's lastId: "now" until the hub tells us where the channel stands. */
    this.lastId = "now";
    this.received = [];
    this.run = null;
  }

  get current() {
    return this.stats[this.mode];
  }

  start(mode = this.mode) {
    this.stop();
    this.mode = mode;
    const run = { stopped: false, controller: null, timer: null, sleep: null, inFlight: false, cut: false };
    this.run = run;
    if (mode === "poll") {
      this.wire.note(`Interval polling: one request every ${formatMs(this.intervalMs)}, news or not.`, "w-mode");
      void this.#tick(run);
      run.timer = setInterval(() => void this.#tick(run), this.intervalMs);
      this.#status(`Interval polling, one request every ${formatMs(this.intervalMs)}.`);
    } else {
      this.wire.note(`Long-polling: each request carries wait=${WAIT_SECONDS}; the hub holds it until there is news.`, "w-mode");
      void this.#longLoop(run);
      this.#status("Long-polling: a request is held open by the hub until there is news.");
    }
  }

  stop() {
    const run = this.run;
    if (!run) return;
    run.stopped = true;
    clearInterval(run.timer);
    clearTimeout(run.sleep);
    run.controller?.abort();
    this.run = null;
  }

  setIntervalMs(ms) {
    this.intervalMs = ms;
    if (this.mode === "poll") this.start("poll");
  }

  /** Drops the request in flight, if any; the next one resumes from lastId. */
  cut() {
    const run = this.run;
    if (!run) return;
    if (!run.inFlight) {
      this.wire.note("✂ Nothing to cut: interval polling holds no connection between polls. The next poll asks from since=" + this.lastId + ".", "w-cut");
      return;
    }
    run.cut = true;
    run.controller?.abort();
  }

  async #tick(run) {
    // setInterval fires whether or not the last answer came back; a slow one is simply skipped here.
    if (run.stopped || run.inFlight) return;
    try {
      await this.#exchange(run, false);
    } catch (error) {
      if (run.stopped) return;
      if (run.cut) {
        run.cut = false;
        this.current.reconnects++;
        this.wire.note(`✂ Cut. The next tick asks again from since=${this.lastId} — nothing is lost.`, "w-cut");
      } else {
        this.wire.note(`Request failed (${error.message}); the timer simply tries again.`, "w-error");
      }
    }
  }

  async #longLoop(run) {
    while (!run.stopped) {
      try {
        const ok = await this.#exchange(run, true);
        if (!ok) await sleep(1000, run);
      } catch (error) {
        if (run.stopped) return;
        if (run.cut) {
          run.cut = false;
          this.current.reconnects++;
          this.wire.note(`✂ Cut while the hub held the request. Asking again at once from since=${this.lastId} — nothing is lost.`, "w-cut");
          this.#status("Long-polling: cut, and asked again at once.");
        } else {
          this.wire.note(`Request failed (${error.message}); asking again in 1 s.`, "w-error");
          await sleep(1000, run);
        }
      }
    }
  }

  /** One request and its answer. Returns false when the hub answered with an error status. */
  async #exchange(run, long) {
    const stats = this.current;
    const mode = this.mode;
    const url = `/api/messages?channel=${FEED_CHANNEL}&since=${encodeURIComponent(this.lastId)}${long ? `&wait=${WAIT_SECONDS}` : ""}`;
    run.controller = new AbortController();
    run.inFlight = true;
    let answer;
    try {
      answer = await tappedFetch(this.wire, stats, url, {
        signal: run.controller.signal,
        pending: long ? "held open by the hub…" : "",
        open: stats.requests === 0, // the first exchange of each mode shows its headers
        describe: (res, text) => describe(res, text, long),
      });
    } finally {
      run.inFlight = false;
    }
    if (run.stopped) return true;
    const { res, text } = answer;
    if (!res.ok) return false;
    const messages = JSON.parse(text);
    if (messages.length === 0) stats.empty++;
    const gap = res.headers.get("ladder-gap");
    if (gap) this.wire.note(`Gap: the hub could not reach back to since=${this.lastId}; it says so instead of skipping silently (${gap}).`, "w-gap");
    for (const message of messages) this.#deliver(message, stats, mode);
    this.lastId = res.headers.get("ladder-cursor") ?? messages.at(-1)?.id ?? this.lastId;
    if (long && this.statusEl.textContent.includes("cut")) this.#status("Long-polling: a request is held open by the hub until there is news.");
    return true;
  }

  #deliver(message, stats, mode) {
    if (!this.sequence.see(message.data?.n, stats)) return;
    stats.messages++;
    const latency = this.clock.latency(message.time);
    stats.latency(latency);
    this.received.push({ id: message.id, n: message.data?.n, mode });
    if (this.received.length > 500) this.received.shift();
    const li = document.createElement("li");
    const text = document.createElement("span");
    text.className = "feed-text";
    text.textContent = typeof message.data?.text === "string" ? message.data.text : JSON.stringify(message.data);
    const meta = document.createElement("span");
    meta.className = `feed-meta feed-${mode}`;
    meta.textContent = `${mode === "poll" ? "polled" : "long-polled"} · ${formatMs(latency)} after publish`;
    li.append(text, meta);
    this.list.prepend(li);
    while (this.list.childElementCount > KEEP) this.list.lastElementChild.remove();
  }

  #status(text) {
    if (this.statusEl.textContent !== text) this.statusEl.textContent = text;
  }
}

function describe(res, text, long) {
  if (!res.ok) return { note: "the hub refused: see the error body", className: "w-error" };
  let messages;
  try {
    messages = JSON.parse(text);
  } catch {
    return { note: "not JSON", className: "w-error" };
  }
  if (messages.length === 0) {
    return long
      ? { note: `empty: the ${WAIT_SECONDS} s wait ran out with no news — ask again`, className: "w-empty" }
      : { note: "EMPTY — a wasted round-trip", className: "w-empty" };
  }
  return { note: `${messages.length} message${messages.length === 1 ? "" : "s"}`, className: "w-news" };
}
