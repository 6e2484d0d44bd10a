// Example 2: a price ticker over Server-Sent Events. EventSource would hide the bytes, so the same URL is
// read with fetch and parsed here — and reconnected exactly as EventSource does (HTML Living Standard,
// "Server-sent events"): after the server's `retry:` delay, sending the last id as Last-Event-ID.
import { PatternStats, Sequence } from "./stats.js";
import { browserHeaders, formatMs, headBytes, HTTP_VERSION, responseHeaders, statusLine } from "./wire.js";

export const PRICE_CHANNEL = "demo.prices";
const URL_PATH = `/api/stream?channel=${PRICE_CHANNEL}`;

export class Ticker {
  constructor({ wire, status, clock, onPrice }) {
    this.wire = wire;
    this.statusEl = status;
    this.clock = clock;
    this.onPrice = onPrice;
    this.stats = new PatternStats("SSE");
    this.sequence = new Sequence();
    /** EventSource's "last event ID string", sent back as Last-Event-ID. */
    this.lastEventId = "";
    /** EventSource's reconnection time: 3 s until the server's retry: says otherwise. */
    this.retryMs = 3000;
    this.received = [];
    this.controller = null;
    this.reconnectTimer = null;
    this.opens = 0;
    this.closed = false;
  }

  start() {
    this.closed = false;
    void this.#connect();
  }

  /** Drops the stream as a network failure would; it comes back by itself. */
  cut() {
    if (this.controller) {
      this.controller.cut = true;
      this.controller.abort();
    } else if (this.closed) {
      this.wire.note("Reconnecting by hand (EventSource had given up).", "w-mode");
      this.start();
    }
  }

  async #connect() {
    clearTimeout(this.reconnectTimer);
    const controller = new AbortController();
    this.controller = controller;
    const resume = this.opens > 0;
    this.opens++;
    const visible = [
      ["Host", location.host],
      ["Accept", "text/event-stream"],
      ["Cache-Control", "no-cache"],
    ];
    if (this.lastEventId) visible.push(["Last-Event-ID", this.lastEventId]);
    const requestLine = `GET ${URL_PATH} ${HTTP_VERSION}`;
    const hidden = browserHeaders("fetch");
    this.stats.requests++;
    this.stats.bytes += headBytes(requestLine, [...visible, ...hidden]);
    this.wire.head("out", requestLine, visible, {
      hidden,
      open: !resume || this.lastEventId !== "",
      className: resume ? "w-resume" : "",
      meta: resume ? (this.lastEventId ? `resume after ${this.lastEventId}` : "reconnect") : "",
    });
    this.#status(resume ? "Reconnecting…" : "Connecting…");
    let res;
    try {
      const headers = Object.fromEntries(visible.filter(([name]) => name !== "Host"));
      res = await fetch(URL_PATH, { headers, signal: controller.signal, cache: "no-store" });
    } catch (error) {
      this.#dropped(controller, error);
      return;
    }
    const answer = responseHeaders(res);
    this.stats.bytes += headBytes(statusLine(res), answer);
    const type = res.headers.get("content-type") ?? "";
    this.wire.head("in", statusLine(res), answer, { open: !resume, className: res.ok ? "" : "w-error" });
    if (res.status !== 200 || !type.startsWith("text/event-stream")) {
      // EventSource "fails the connection" here and never retries by itself.
      const body = await res.text().catch(() => "");
      if (body) this.wire.body("in", body, { className: "w-error" });
      this.wire.note(`EventSource gives up on a ${res.status} answer and does not retry. Press Cut to try again.`, "w-error");
      this.#status(`Stopped: the hub answered ${res.status}. Press Cut to reconnect.`);
      this.controller = null;
      this.closed = true;
      return;
    }
    this.#status(resume ? "Stream open again — resumed where it left off." : "Stream open: one response, never ending.");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parser = new StreamParser((block, event) => this.#block(block, event));
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        // Chunked transfer coding frames each chunk with its size in hex and two CRLFs.
        this.stats.bytes += value.byteLength + (HTTP_VERSION === "HTTP/1.1" ? value.byteLength.toString(16).length + 4 : 0);
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch (error) {
      this.#dropped(controller, error);
      return;
    }
    this.wire.note("The hub ended the stream.", "w-cut");
    this.#dropped(controller, null);
  }

  #dropped(controller, error) {
    if (controller !== this.controller) return;
    this.controller = null;
    const cut = controller.cut === true;
    if (cut) this.wire.note("✂ Cut: the connection is gone.", "w-cut");
    else if (error) this.wire.note(`The connection failed (${error.message}).`, "w-error");
    this.stats.reconnects++;
    const resume = this.lastEventId ? `, with Last-Event-ID: ${this.lastEventId}` : "";
    this.wire.note(`Reconnecting by itself in ${formatMs(this.retryMs)} — the server's retry: — as EventSource does${resume}.`, "w-wait");
    this.#status(`Dropped. Back by itself in ${formatMs(this.retryMs)}…`);
    this.reconnectTimer = setTimeout(() => void this.#connect(), this.retryMs);
  }

  /** One raw block (up to and including its blank line) and what EventSource makes of it. */
  #block(raw, event) {
    if (event.retry !== undefined) this.retryMs = event.retry;
    if (event.id !== undefined) this.lastEventId = event.id;
    if (event.comment && event.data === undefined && event.id === undefined) {
      this.stats.overhead++;
      this.wire.sseBlock(raw, { note: "heartbeat comment: keeps proxies from closing a quiet stream", className: "w-heartbeat" });
      return;
    }
    if (event.data === undefined) {
      this.wire.sseBlock(raw, { note: event.retry !== undefined ? `reconnect delay: ${formatMs(event.retry)}` : "no data: nothing dispatched", className: "w-control" });
      return;
    }
    const type = event.event ?? "message";
    if (type === "ready") {
      this.wire.sseBlock(raw, { note: "named event “ready”: not onmessage, but its id becomes Last-Event-ID", className: "w-control" });
      return;
    }
    if (type === "gap") {
      this.wire.sseBlock(raw, { note: "gap: history did not reach back that far — the hub says so", className: "w-gap" });
      return;
    }
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      this.wire.sseBlock(raw, { note: "onmessage (not JSON)" });
      return;
    }
    const fresh = this.sequence.see(data?.n, this.stats);
    const latency = typeof data?.ts === "number" ? this.clock.latency(data.ts) : null;
    this.wire.sseBlock(raw, { note: `onmessage → ${typeof data?.price === "number" ? data.price.toFixed(2) : "?"}${latency === null ? "" : ` · ${formatMs(latency)}`}`, className: "w-news" });
    if (!fresh) return;
    this.stats.messages++;
    if (latency !== null) this.stats.latency(latency);
    this.received.push({ id: this.lastEventId, n: data?.n });
    if (this.received.length > 500) this.received.shift();
    this.onPrice?.(data, this.lastEventId);
  }

  #status(text) {
    if (this.statusEl.textContent !== text) this.statusEl.textContent = text;
  }
}

/**
 * The event-stream parser of the HTML standard, keeping each block's raw text for the wire view. Lines end
 * in CRLF, LF or CR; a blank line dispatches; `field: value` drops one leading space; `:` starts a comment.
 */
export class StreamParser {
  constructor(onBlock) {
    this.onBlock = onBlock;
    this.buffer = "";
    this.raw = "";
    this.event = {};
  }

  feed(text) {
    this.buffer += text;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      // A lone CR at the end may be the first half of a CRLF: wait for more.
      if (!match || (match[0] === "\r" && match.index === this.buffer.length - 1)) return;
      const line = this.buffer.slice(0, match.index);
      this.raw += line + match[0];
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.#line(line);
    }
  }

  #line(line) {
    if (line === "") {
      const { raw, event } = this;
      this.raw = "";
      this.event = {};
      this.onBlock(raw, event);
      return;
    }
    if (line.startsWith(":")) {
      this.event.comment = true;
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.event.data = this.event.data === undefined ? value : `${this.event.data}\n${value}`;
        break;
      case "event":
        this.event.event = value;
        break;
      case "id":
        if (!value.includes("\0")) this.event.id = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.event.retry = Number(value);
        break;
      default:
        break;
    }
  }
}
