// Example 4: network conditions. Ladder's own client (transport "auto") follows demo.prices through a small
// proxy path the demo mounts, /demo/net/<lane>/, that this tab alone controls: it can refuse WebSocket
// upgrades, buffer event streams, or drop every connection. The client steps down the ladder, climbs back
// when the path heals, and the counts below check every message against what the hub published.
import { createClient } from "/ladder-client.js";
import { formatBytes, formatMs, frameBytes, HTTP_VERSION, responseHeaders, statusLine, utf8 } from "./wire.js";

export const LADDER_CHANNEL = "demo.prices";
const NETWORK = "/demo/network";
const PUBLISHER = "/demo/publisher";
const RUNGS = ["websocket", "sse", "long-poll", "poll"];
const LABEL = { websocket: "WebSocket", sse: "SSE", "long-poll": "long-poll", poll: "poll" };
const CONDITION_LABEL = { refuseWebSocket: "Refuse WebSocket upgrades", bufferSse: "Buffer SSE", dropAll: "Drop every connection" };
const KEEP_CELLS = 120;
const KEEP_EVENTS = 40;
const KEEP_IDS = 20_000;
const STATUS_MS = 2000;

function randomLane() {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => alphabet[b % alphabet.length]).join("");
}

function clockTime(date = new Date()) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

/** Which rung a request of the client belongs to, from its path and query. */
function purpose(url, method) {
  if (url.pathname.endsWith("/readyz")) return "is the hub there? (asked before calling a rung blocked)";
  if (url.pathname.endsWith("/api/stream")) return "SSE: one response that stays open";
  if (method === "POST") return "publish";
  if (url.pathname.endsWith("/api/messages")) return url.searchParams.has("wait") ? "long-poll: held until there is news" : "poll: answers at once";
  return "";
}

export class LadderPanel {
  constructor({ wire, root }) {
    this.wire = wire;
    this.root = root;
    this.$ = (id) => root.querySelector(`#${id}`);
    this.lane = randomLane();
    this.prefix = null;
    this.available = false;
    this.client = null;
    this.conditions = { refuseWebSocket: false, bufferSse: false, dropAll: false };
    this.path = null; // the lane's status on the hub
    this.ids = [];
    this.seen = new Set();
    this.firstN = null;
    this.lastN = null;
    this.received = 0;
    this.missing = 0;
    this.repeated = 0;
    this.publishedN = null;
    this.reconnects = 0;
    this.connectedOnce = false;
    this.carried = { websocket: 0, sse: 0, "long-poll": 0, poll: 0 };
    this.visited = [];
    this.events = [];
  }

  async start() {
    const status = await this.#get(`${NETWORK}?lane=${this.lane}`);
    this.available = status !== null;
    if (status) this.#showPath(status);
    else this.$("ladder-path").textContent = "Network conditions are not available on this hub (they need one process: not with --workers). The client below talks to the hub directly.";
    for (const box of this.root.querySelectorAll("[data-condition]")) {
      box.disabled = !this.available;
      box.addEventListener("change", () => void this.set(box.dataset.condition, box.checked));
    }
    this.#startClient();
    this.#poll();
    setInterval(() => this.#poll(), STATUS_MS);
  }

  /** Turns a condition of this tab's path on or off. */
  async set(name, on) {
    const box = this.root.querySelector(`[data-condition="${name}"]`);
    try {
      const res = await fetch(NETWORK, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ lane: this.lane, [name]: on }), cache: "no-store" });
      const body = await res.json();
      if (!res.ok) throw new Error(body?.error?.message ?? `answered ${res.status}`);
      this.#showPath(body);
      this.#event(`${on ? "⚑" : "⚐"} ${CONDITION_LABEL[name]}: ${on ? "on" : "off"}`, "e-condition");
      this.wire.note(`${CONDITION_LABEL[name]} turned ${on ? "on" : "off"} for this tab's path.${on && name !== "bufferSse" ? " Open connections it affects are cut." : ""}`, "w-mode");
    } catch (error) {
      if (box) box.checked = !on;
      this.$("ladder-path-error").textContent = `Could not change it: ${error.message}`;
    }
  }

  // ---- the client, reaching the hub through the lane ----

  #via(url) {
    const target = new URL(url, location.href);
    if (this.prefix) target.pathname = this.prefix + target.pathname;
    return target;
  }

  #startClient() {
    const panel = this;
    class LaneSocket extends WebSocket {
      constructor(url, protocols) {
        const via = panel.#via(url);
        super(via.href, protocols);
        panel.#socket(this, via);
      }
      send(data) {
        panel.#frame("out", String(data));
        super.send(data);
      }
    }
    this.client = createClient({
      transport: "auto",
      WebSocket: LaneSocket,
      fetch: (input, init) => this.#fetch(input, init),
      // Quicker than the defaults so the moves are seen within seconds.
      backoff: { minMs: 300, maxMs: 2000 },
      probe: { minMs: 1500, maxMs: 4000 },
      openTimeoutMs: 2500,
    });
    this.client.on("transport", ({ transport, reason }) => this.#moved(transport, reason));
    this.client.on("state", ({ newState }) => this.#state(newState));
    this.client.on("error", ({ transport, reason }) => this.wire.note(`${LABEL[transport]} ended: ${reason}.`, "w-cut"));
    const subscription = this.client.subscribe(LADDER_CHANNEL);
    subscription.on("message", (message) => this.#message(message));
    subscription.on("gap", (gap) => this.#event(`gap (${gap.reason}): history did not reach back`, "e-gap"));
  }

  async #fetch(input, init = {}) {
    const target = new URL(input instanceof Request ? input.url : String(input), location.href);
    const via = this.#via(target);
    const method = init.method ?? "GET";
    const head = this.wire.head("out", `${method} ${via.pathname}${via.search} ${HTTP_VERSION}`, [["Host", via.host]], { meta: purpose(target, method) });
    const started = performance.now();
    let res;
    try {
      res = await fetch(via, init);
    } catch (error) {
      head.setMeta(`${purpose(target, method)} · ${init.signal?.aborted ? "given up by the client" : "failed: the connection was dropped"} after ${formatMs(performance.now() - started)}`);
      throw error;
    }
    const stream = (res.headers.get("content-type") ?? "").startsWith("text/event-stream");
    this.wire.head("in", statusLine(res), responseHeaders(res), { meta: `after ${formatMs(performance.now() - started)}${stream ? " — the events follow as they arrive" : ""}`, className: res.ok ? "" : "w-error" });
    if (stream && res.body) return new Response(res.body.pipeThrough(this.#sseTap()), { status: res.status, statusText: res.statusText, headers: res.headers });
    // Read here, then handed on, so the body shows under its own head (the client asks again only after it).
    const text = await res.text();
    if (text && !target.pathname.endsWith("/readyz")) this.wire.body("in", text, { className: text.startsWith("[{") ? "w-news" : "" });
    return new Response(text, { status: res.status, statusText: res.statusText, headers: res.headers });
  }

  #sseTap() {
    const decoder = new TextDecoder();
    return new TransformStream({
      transform: (chunk, controller) => {
        controller.enqueue(chunk);
        this.wire.sseBlock(decoder.decode(chunk, { stream: true }), { note: chunk.length > 4096 ? `${formatBytes(chunk.length)} at once: a buffer let go` : "" });
      },
    });
  }

  #socket(ws, via) {
    this.wire.head("out", `GET ${via.pathname}${via.search} HTTP/1.1`, [["Host", via.host], ["Connection", "Upgrade"], ["Upgrade", "websocket"]], { meta: "WebSocket: asks to upgrade" });
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      this.wire.head("in", "HTTP/1.1 101 Switching Protocols", [["Upgrade", "websocket"], ["Connection", "Upgrade"]], { meta: "frames both ways from here", className: "w-upgrade" });
    });
    ws.addEventListener("message", (event) => this.#frame("in", String(event.data)));
    ws.addEventListener("close", (event) => {
      if (!opened) this.wire.note(`No WebSocket: the upgrade was refused or the connection dropped (the browser only says close ${event.code}).`, "w-cut");
      else if (!event.wasClean) this.wire.note(`The socket was cut without a close frame (${event.code}).`, "w-cut");
    });
  }

  #frame(direction, text) {
    let note = "";
    let className = "";
    try {
      const frame = JSON.parse(text);
      note = frame.type === "join" ? (frame.since ? `join, resuming after ${frame.since}` : "join, live from now") : frame.type;
      if (frame.type === "message") className = "w-news";
    } catch {
      /* not JSON */
    }
    const entry = this.wire.frame(direction, "text", text, frameBytes(utf8(text), direction === "out"), note);
    if (className) entry.classList.add(className);
  }

  // ---- what the client reports ----

  #moved(transport, reason) {
    const from = this.visited.at(-1);
    this.visited.push(transport);
    const down = from !== undefined && RUNGS.indexOf(transport) > RUNGS.indexOf(from);
    const arrow = from === undefined ? "→" : down ? "↓" : "↑";
    this.#event(`${arrow} ${LABEL[transport]} — ${reason}`, from === undefined ? "" : down ? "e-down" : "e-up");
    this.wire.note(`The client ${from === undefined ? "starts on" : down ? "steps down to" : "climbs back to"} ${LABEL[transport]} (${reason}).`, down ? "w-cut" : "w-resume");
  }

  #state(state) {
    if (state !== "connected") return;
    if (this.connectedOnce) this.reconnects++;
    this.connectedOnce = true;
  }

  #message(message) {
    const rung = this.client.transport ?? "websocket";
    this.received++;
    this.carried[rung]++;
    // Counted by id: the client hands each message over once, whichever rung brought it or how often it reconnected.
    const fresh = !this.seen.has(message.id);
    if (!fresh) this.repeated++;
    else {
      this.seen.add(message.id);
      if (this.ids.length < KEEP_IDS) this.ids.push(message.id);
    }
    // The publisher numbers its messages: a hole in the numbers is a message lost on the way.
    const n = message.data?.n;
    if (fresh && typeof n === "number") {
      if (this.firstN === null) this.firstN = n;
      else if (n > this.lastN + 1) this.missing += n - this.lastN - 1;
      if (this.lastN === null || n > this.lastN) this.lastN = n;
      // What arrived was published: the hub's count (polled) is at least that.
      if (this.publishedN !== null && n > this.publishedN) this.publishedN = n;
    }
    const cell = document.createElement("span");
    cell.className = `cell r-${rung}`;
    cell.title = `#${n} (${message.id}) via ${LABEL[rung]}`;
    const strip = this.$("ladder-strip");
    strip.append(cell);
    while (strip.childElementCount > KEEP_CELLS) strip.firstElementChild.remove();
  }

  #event(text, className = "") {
    this.events.push(text);
    const li = document.createElement("li");
    if (className) li.className = className;
    const time = document.createElement("time");
    time.textContent = clockTime();
    li.append(time, ` ${text}`);
    const list = this.$("ladder-events");
    list.prepend(li);
    while (list.childElementCount > KEEP_EVENTS) list.lastElementChild.remove();
  }

  // ---- the path's status and the hub's count ----

  async #get(url) {
    try {
      const res = await fetch(url, { cache: "no-store" });
      return res.ok ? await res.json() : null;
    } catch {
      return null;
    }
  }

  async #poll() {
    if (document.visibilityState === "hidden") return;
    const [path, publisher] = await Promise.all([this.available ? this.#get(`${NETWORK}?lane=${this.lane}`) : null, this.#get(PUBLISHER)]);
    if (path) this.#showPath(path);
    if (publisher) this.publishedN = Math.max(publisher.published?.prices ?? 0, this.publishedN ?? 0, this.lastN ?? 0);
  }

  #showPath(status) {
    this.path = status;
    this.prefix = status.prefix;
    this.conditions = status.conditions;
    for (const box of this.root.querySelectorAll("[data-condition]")) box.checked = status.conditions[box.dataset.condition] === true;
    const c = status.counts;
    this.$("ladder-path").textContent = `This tab's client reaches the hub through ${status.prefix}/ — a proxy path the demo mounts. So far it relayed ${c.relayed} · refused ${c.refused} upgrade${c.refused === 1 ? "" : "s"} · dropped ${c.dropped} · cut ${c.cut} open · held ${formatBytes(c.heldBytes)} of events.`;
    this.$("ladder-path-error").textContent = "";
  }

  // ---- rendering ----

  get published() {
    return this.firstN === null || this.publishedN === null ? null : Math.max(0, this.publishedN - this.firstN + 1);
  }

  render() {
    const rung = this.client?.transport ?? null;
    const failed = this.client?.failedTransports ?? [];
    for (const li of this.root.querySelectorAll("#ladder-rungs [data-rung]")) {
      const name = li.dataset.rung;
      const on = name === rung && this.client.state === "connected";
      li.classList.toggle("on", on);
      li.classList.toggle("blocked", failed.includes(name));
      if (on) li.setAttribute("aria-current", "true");
      else li.removeAttribute("aria-current");
      const note = on ? "carrying the messages" : failed.includes(name) ? "blocked — a probe retries it" : name === rung ? "connecting…" : "";
      const noteEl = li.querySelector(".rung-note");
      if (noteEl.textContent !== note) noteEl.textContent = note;
    }
    const state = this.client?.state ?? "disconnected";
    const line = !this.client ? "Starting…" : state === "connected" ? `Connected over ${LABEL[rung]}.` : state === "connecting" ? `Connecting over ${LABEL[rung] ?? "…"}…` : "Disconnected: waiting out the backoff.";
    const rungEl = this.$("ladder-rung");
    if (rungEl.textContent !== line) rungEl.textContent = line;
    rungEl.dataset.rung = state === "connected" ? rung : "";
    const published = this.published;
    const pending = published === null ? null : Math.max(0, published - this.received - this.missing);
    const values = {
      "ladder-published": published === null ? "—" : String(published),
      "ladder-received": String(this.received),
      "ladder-pending": pending === null ? "—" : String(pending),
      "ladder-missing": String(this.missing),
      "ladder-repeated": String(this.repeated),
      "ladder-reconnects": String(this.reconnects),
    };
    for (const [id, value] of Object.entries(values)) {
      const el = this.$(id);
      if (el.textContent !== value) el.textContent = value;
    }
    this.$("ladder-missing").parentElement.classList.toggle("warn", this.missing > 0);
    this.$("ladder-repeated").parentElement.classList.toggle("warn", this.repeated > 0);
    const carried = RUNGS.filter((r) => this.carried[r] > 0).map((r) => `${LABEL[r]} ${this.carried[r]}`).join(" · ");
    const strip = this.$("ladder-strip");
    const label = `Each square is one message of ${LADDER_CHANNEL}, coloured by the rung that carried it: ${carried || "none yet"}.`;
    if (strip.getAttribute("aria-label") !== label) strip.setAttribute("aria-label", label);
  }

  toJSON() {
    return {
      lane: this.lane,
      available: this.available,
      state: this.client?.state ?? null,
      transport: this.client?.transport ?? null,
      failed: this.client?.failedTransports ?? [],
      conditions: this.conditions,
      published: this.published,
      received: this.received,
      missing: this.missing,
      repeated: this.repeated,
      reconnects: this.reconnects,
      carried: this.carried,
      visited: this.visited,
      ids: this.ids,
      path: this.path,
    };
  }
}
