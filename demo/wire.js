// The wire views: what this page sends and receives, line by line, as it happens.
//
// Browsers hide raw bytes from page scripts, so each exchange is rebuilt from what the page does and
// sees: the request it makes, the status and headers fetch() hands back, the raw text of a stream, every
// WebSocket frame. What the page cannot see (the browser's own request headers, the handshake's random key)
// is shown dimmed, marked as reconstructed.

const encoder = new TextEncoder();
export const utf8 = (text) => encoder.encode(text).length;

const navigation = performance.getEntriesByType("navigation")[0];
const hop = navigation?.nextHopProtocol ?? "http/1.1";
/** The HTTP version this page came over; fetches to the same origin use the same. */
export const HTTP_VERSION = hop === "h2" ? "HTTP/2" : hop === "h3" ? "HTTP/3" : "HTTP/1.1";

/** Bytes of an HTTP/1.1 head: start line, `name: value` lines, CRLFs and the blank line. */
export function headBytes(startLine, headers) {
  let n = utf8(startLine) + 2;
  for (const [name, value] of headers) n += utf8(name) + 2 + utf8(value) + 2;
  return n + 2;
}

/** WebSocket frame bytes (RFC 6455 §5.2): 2-byte header, extended length, and the mask a client adds. */
export function frameBytes(payloadBytes, fromClient) {
  const length = payloadBytes < 126 ? 0 : payloadBytes < 65536 ? 2 : 8;
  return 2 + length + (fromClient ? 4 : 0) + payloadBytes;
}

function acceptLanguage() {
  const langs = navigator.languages?.length ? navigator.languages : [navigator.language || "en-US"];
  return langs.slice(0, 10).map((l, i) => (i === 0 ? l : `${l};q=${Math.max(0.1, 1 - i * 0.1).toFixed(1)}`)).join(",");
}

/**
 * The request headers the browser adds by itself. Page scripts cannot read them, so they are rebuilt from
 * what the page does know (user agent, languages, address); their values are close, not guaranteed.
 */
export function browserHeaders(kind) {
  const secure = location.protocol === "https:" || ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
  const headers = [];
  if (kind !== "websocket") headers.push(["Connection", "keep-alive"]);
  else headers.push(["Pragma", "no-cache"], ["Cache-Control", "no-cache"]);
  const ua = navigator.userAgentData;
  if (secure && ua?.brands) {
    headers.push(["sec-ch-ua", ua.brands.map((b) => `"${b.brand}";v="${b.version}"`).join(", ")]);
    headers.push(["sec-ch-ua-mobile", ua.mobile ? "?1" : "?0"]);
    headers.push(["sec-ch-ua-platform", `"${ua.platform}"`]);
  }
  headers.push(["User-Agent", navigator.userAgent]);
  if (kind === "post" || kind === "websocket") headers.push(["Origin", location.origin]);
  if (kind !== "websocket") {
    headers.push(["Sec-Fetch-Site", "same-origin"], ["Sec-Fetch-Mode", "cors"], ["Sec-Fetch-Dest", "empty"]);
    headers.push(["Referer", location.href.split("#")[0]]);
  }
  headers.push(["Accept-Encoding", location.protocol === "https:" ? "gzip, deflate, br, zstd" : "gzip, deflate"]);
  headers.push(["Accept-Language", acceptLanguage()]);
  return headers;
}

// The order the hub writes its headers in (fetch hands them back sorted).
const ORDER = ["content-type", "content-length", "cache-control", "x-accel-buffering", "ladder-cursor", "ladder-gap", "connection", "date", "keep-alive", "transfer-encoding"];

/** A fetch Response's headers as name/value pairs, in the order they travelled. */
export function responseHeaders(res) {
  const pairs = [...res.headers];
  const rank = (name) => {
    const i = ORDER.indexOf(name);
    return i < 0 ? ORDER.length : i;
  };
  return pairs.sort((a, b) => rank(a[0]) - rank(b[0]));
}

export const statusLine = (res) => `${HTTP_VERSION} ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;

function clock() {
  const d = new Date();
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function truncate(text, max = 700) {
  return text.length > max ? `${text.slice(0, max)}… (${utf8(text) - utf8(text.slice(0, max))} more bytes)` : text;
}

/** One pane of wire entries, capped, that keeps scrolled to the newest unless the reader scrolled up. */
export class WireView {
  constructor(element, { max = 240 } = {}) {
    this.element = element;
    this.max = max;
    this.allHeaders = false;
  }

  /** Opens (or folds) every head in the pane, and the ones to come. */
  showHeaders(open) {
    this.allHeaders = open;
    for (const details of this.element.querySelectorAll(".w-head details")) details.open = open;
  }

  clear() {
    this.element.replaceChildren();
  }

  #append(node) {
    const box = this.element;
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 40;
    box.append(node);
    while (box.childElementCount > this.max) box.firstElementChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
    return node;
  }

  #entry(direction, className) {
    const entry = el("div", `w ${direction ? `w-${direction}` : ""} ${className ?? ""}`.trim());
    return entry;
  }

  #summaryLine(direction, text, meta) {
    const line = el("span", "w-line");
    line.append(el("span", "w-arrow", direction === "out" ? "→" : direction === "in" ? "←" : "·"));
    line.append(el("time", "w-time", clock()));
    line.append(el("code", "w-start", text));
    const metaEl = el("span", "w-meta", meta ?? "");
    line.append(metaEl);
    return { line, metaEl };
  }

  /**
   * A request or response head: its start line always visible, headers folded under it. `hidden` headers
   * are the ones the browser adds and the page cannot read (shown dimmed).
   */
  head(direction, startLine, headers, { hidden = [], meta = "", open = false, className = "" } = {}) {
    const entry = this.#entry(direction, `w-head ${className}`);
    const details = el("details");
    details.open = open || this.allHeaders;
    const summary = el("summary");
    // One tab stop per pane (the pane scrolls), not one per entry: "All headers" opens them from the keyboard.
    summary.tabIndex = -1;
    const { line, metaEl } = this.#summaryLine(direction, startLine, meta);
    summary.append(line);
    details.append(summary);
    const pre = el("pre", "w-headers");
    for (const [name, value] of headers) {
      const row = el("span", "h");
      row.append(el("span", "hn", `${name}: `), el("span", value.startsWith("‹") ? "hv est" : "hv", value));
      pre.append(row, "\n");
    }
    if (hidden.length > 0) {
      pre.append(el("span", "est", `# added by the browser (reconstructed: page scripts can't read these)\n`));
      for (const [name, value] of hidden) pre.append(el("span", "est", `${name}: ${value}\n`));
    }
    details.append(pre);
    entry.append(details);
    this.#append(entry);
    return { entry, setMeta: (text) => (metaEl.textContent = text) };
  }

  /** A body or a raw chunk of text as it travelled, with an optional note beside it. */
  body(direction, text, { note = "", className = "" } = {}) {
    const entry = this.#entry(direction, `w-body ${className}`);
    entry.append(el("pre", "w-raw", truncate(text)));
    if (note) entry.append(el("span", "w-note", note));
    return this.#append(entry);
  }

  /** An SSE event block, field names highlighted, as the raw lines arrived. */
  sseBlock(raw, { note = "", className = "" } = {}) {
    const entry = this.#entry("in", `w-sse ${className}`);
    const pre = el("pre", "w-raw");
    const lines = raw.replace(/\r\n|\r/g, "\n").split("\n");
    if (lines.at(-1) === "") lines.pop();
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (line === "") pre.append(el("span", "blank", "⏎\n"));
      else if (colon === 0) pre.append(el("span", "comment", `${line}\n`));
      else if (colon > 0) {
        const row = el("span", `f f-${line.slice(0, colon)}`);
        row.append(el("span", "fn", line.slice(0, colon + 1)), truncate(line.slice(colon + 1), 400), "\n");
        pre.append(row);
      } else pre.append(`${line}\n`);
    }
    const top = el("span", "w-line");
    top.append(el("span", "w-arrow", "←"), el("time", "w-time", clock()));
    if (note) top.append(el("span", "w-note", note));
    entry.append(top, pre);
    return this.#append(entry);
  }

  /** A WebSocket frame: direction, opcode, size on the wire, payload. */
  frame(direction, opcode, payload, wireBytes, note = "") {
    const entry = this.#entry(direction, `w-frame w-${opcode}`);
    const { line } = this.#summaryLine(direction, `${opcode} frame`, `${wireBytes} B`);
    if (note) line.append(el("span", "w-note", note));
    entry.append(line);
    if (payload) entry.append(el("pre", "w-raw", truncate(payload)));
    return this.#append(entry);
  }

  /** A remark that is not bytes: a cut, a wait, a reconnect. */
  note(text, className = "") {
    const entry = this.#entry("", `w-remark ${className}`);
    entry.append(el("time", "w-time", clock()), el("span", "w-note", text));
    return this.#append(entry);
  }
}

/**
 * fetch() with its exchange written to a wire view and counted in `stats`: the request head (and body),
 * then the status line and headers, then the body as text (`describe(res, text)` may add a note to it).
 * Resolves with `{ res, text, ms }`; a failure (or an abort) is noted and rethrown.
 */
export async function tappedFetch(view, stats, url, { method = "GET", headers = {}, body, signal, kind = "fetch", pending, describe, open = false } = {}) {
  const target = new URL(url, location.href);
  const requestLine = `${method} ${target.pathname}${target.search} ${HTTP_VERSION}`;
  const visible = [["Host", target.host], ...Object.entries(headers)];
  if (!Object.keys(headers).some((h) => h.toLowerCase() === "accept")) visible.push(["Accept", "*/*"]);
  if (body !== undefined) visible.push(["Content-Length", String(utf8(body))]);
  const hidden = browserHeaders(method === "POST" ? "post" : kind);
  stats.requests++;
  stats.bytes += headBytes(requestLine, [...visible, ...hidden]) + (body === undefined ? 0 : utf8(body));
  const head = view.head("out", requestLine, visible, { hidden, meta: pending ?? "", open });
  if (body !== undefined) view.body("out", body);
  const started = performance.now();
  let res;
  try {
    res = await fetch(target, { method, headers, body, signal, cache: "no-store" });
  } catch (error) {
    const ms = Math.round(performance.now() - started);
    head.setMeta(signal?.aborted ? `cut after ${formatMs(ms)}` : `failed after ${formatMs(ms)}`);
    throw error;
  }
  const text = await res.text().catch((error) => {
    head.setMeta("cut while reading the answer");
    throw error;
  });
  const ms = Math.round(performance.now() - started);
  const answer = responseHeaders(res);
  const bytes = headBytes(statusLine(res), answer) + utf8(text);
  stats.bytes += bytes;
  head.setMeta(pending ? `answered after ${formatMs(ms)}` : "");
  view.head("in", statusLine(res), answer, { meta: `${formatMs(ms)} · ${formatBytes(bytes)}`, className: res.ok ? "" : "w-error", open });
  const { note = "", className = "" } = describe?.(res, text) ?? {};
  view.body("in", text, { note, className });
  return { res, text, ms };
}

export function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms % 1000 === 0 && ms < 60_000) return `${ms / 1000} s`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function formatBytes(n) {
  if (n < 1000) return `${n} B`;
  if (n < 1_000_000) return `${(n / 1000).toFixed(n < 10_000 ? 2 : 1)} kB`;
  return `${(n / 1_000_000).toFixed(2)} MB`;
}
