// Example 3: a chat room on a WebSocket, driven by Ladder's own client (backoff, heartbeats, resume by id).
// The client is handed a WebSocket subclass that writes the handshake and every frame to the wire view.
import { backoffCeiling, createClient } from "/ladder-client.js";
import { PatternStats, Sequence } from "./stats.js";
import { browserHeaders, formatMs, frameBytes, headBytes, tappedFetch, utf8 } from "./wire.js";

export const CHAT_CHANNEL = "demo.chat";
const CURSOR_KEY = "ladder-demo:chat-cursor";
const NAME_KEY = "ladder-demo:name";
const KEEP = 100;
// What the page cannot see of the handshake: the browser picks the key; the hub answers with its hash.
const KEY = "‹16 random bytes, base64 — picked by the browser›";
const ACCEPT = "‹base64(SHA-1(key + 258EAFA5-E914-47DA-95CA-C5AB0DC85B11))›";

export class Chat {
  constructor({ wire, log, members, status, form, nameInput, textInput, error, clock }) {
    this.wire = wire;
    this.log = log;
    this.membersEl = members;
    this.statusEl = status;
    this.form = form;
    this.nameInput = nameInput;
    this.textInput = textInput;
    this.errorEl = error;
    this.clock = clock;
    this.stats = new PatternStats("WebSocket");
    this.sequence = new Sequence();
    this.tabId = Math.random().toString(36).slice(2, 10);
    this.received = [];
    this.socket = null;
    this.connectedOnce = false;
    this.failures = 0;
    this.downSince = 0;
    this.client = null;
  }

  start() {
    const saved = safeStorage(() => localStorage.getItem(NAME_KEY));
    this.nameInput.value = saved || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
    this.nameInput.addEventListener("change", () => safeStorage(() => localStorage.setItem(NAME_KEY, this.nameInput.value.trim())));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.#send();
    });

    const chat = this;
    class TappedWebSocket extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols);
        chat.#handshake(this, url);
      }
      send(data) {
        chat.#frameOut(this, String(data));
        super.send(data);
      }
      close(code, reason) {
        chat.#closing(this, code, reason);
        super.close(code, reason);
      }
    }

    this.client = createClient({
      transport: "websocket",
      // Presence: this tab is one member of the room, named by what it typed (self-declared: the demo has no logins).
      clientId: this.tabId,
      presenceInfo: { name: this.nameInput.value.trim() },
      backoff: { minMs: 500, maxMs: 8000 },
      WebSocket: TappedWebSocket,
      fetch: (input, init) => this.#httpPublish(input, init),
    });
    this.client.on("state", ({ newState }) => this.#state(newState));
    this.client.on("error", ({ reason }) => this.wire.note(`The client saw the socket end: ${reason}.`, "w-cut"));
    const since = safeStorage(() => sessionStorage.getItem(CURSOR_KEY)) || undefined;
    if (since) this.wire.note(`This tab saw the chat before: joining with since=${since} to get what it missed.`, "w-mode");
    const subscription = this.client.subscribe(CHAT_CHANNEL, since ? { since, presence: true } : { presence: true });
    this.room = subscription;
    subscription.on("message", (message) => this.#message(message));
    subscription.on("join", () => this.#members());
    subscription.on("leave", () => this.#members());
    subscription.on("gap", (gap) => {
      this.wire.note(`Gap (${gap.reason}): history did not reach back to ${gap.since}; the hub says so instead of skipping silently.`, "w-gap");
      this.#system(gap.reason === "unknown" ? "The hub restarted since this tab was here: older messages are gone." : "Some older messages are no longer kept.");
    });
  }

  /** Closes the socket as a drop would; the client's backoff brings it back. */
  cut() {
    const ws = this.socket;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.cutByDemo = true;
      ws.close(4000, "cut by the demo");
    } else {
      this.wire.note("✂ Nothing to cut: the socket is already down; the client is on its way back.", "w-cut");
    }
  }

  // ---- the wire ----

  #handshake(ws, url) {
    const target = new URL(url);
    const requestLine = `GET ${target.pathname}${target.search} HTTP/1.1`;
    const visible = [
      ["Host", target.host],
      ["Connection", "Upgrade"],
      ["Upgrade", "websocket"],
      ["Sec-WebSocket-Version", "13"],
      ["Sec-WebSocket-Key", KEY],
      ["Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"],
    ];
    const hidden = browserHeaders("websocket");
    const counted = visible.map(([n, v]) => [n, v === KEY ? "x".repeat(24) : v]);
    this.stats.requests++;
    this.stats.bytes += headBytes(requestLine, [...counted, ...hidden]);
    const reconnect = this.connectedOnce;
    this.wire.head("out", requestLine, visible, { hidden, open: !reconnect, meta: reconnect ? "a new handshake" : "asks to upgrade", className: reconnect ? "w-resume" : "" });
    const started = performance.now();
    this.socket = ws;
    ws.addEventListener("open", () => {
      const headers = [
        ["Upgrade", "websocket"],
        ["Connection", "Upgrade"],
        ["Sec-WebSocket-Accept", ACCEPT],
      ];
      if (ws.extensions) headers.push(["Sec-WebSocket-Extensions", ws.extensions]);
      if (ws.protocol) headers.push(["Sec-WebSocket-Protocol", ws.protocol]);
      const line = "HTTP/1.1 101 Switching Protocols";
      this.stats.bytes += headBytes(line, headers.map(([n, v]) => [n, v === ACCEPT ? "x".repeat(28) : v]));
      this.wire.head("in", line, headers, { open: !reconnect, meta: `after ${formatMs(performance.now() - started)} — from here on, frames both ways`, className: "w-upgrade" });
    });
    ws.addEventListener("message", (event) => this.#frameIn(String(event.data)));
    ws.addEventListener("close", (event) => {
      if (this.socket === ws) this.socket = null;
      if (!event.wasClean) {
        this.wire.note(`Connection lost without a close frame (code ${event.code}).`, "w-cut");
        return;
      }
      const payload = event.code === 1005 ? 0 : 2 + utf8(event.reason);
      this.stats.bytes += frameBytes(payload, false);
      this.wire.frame("in", "close", event.code === 1005 ? "" : `${event.code}${event.reason ? ` "${event.reason}"` : ""}`, frameBytes(payload, false), "the hub’s close frame: the socket is closed");
    });
  }

  #closing(ws, code, reason) {
    if (ws.readyState !== WebSocket.OPEN) return;
    const payload = code === undefined ? 0 : 2 + utf8(reason ?? "");
    this.stats.bytes += frameBytes(payload, true);
    const note = ws.cutByDemo ? "✂ cut: close the socket under the client" : "the client closes the socket";
    this.wire.frame("out", "close", code === undefined ? "" : `${code}${reason ? ` "${reason}"` : ""}`, frameBytes(payload, true), note);
  }

  #frameOut(ws, text) {
    const bytes = frameBytes(utf8(text), true);
    this.stats.bytes += bytes;
    let note = "";
    try {
      const frame = JSON.parse(text);
      if (frame.type === "ping") {
        this.stats.overhead++;
        note = "the client’s heartbeat";
      } else if (frame.type === "join") note = frame.since ? `re-join, resuming after ${frame.since}` : "join the room, live from now";
      else if (frame.type === "publish") note = "publish, up the same socket";
    } catch {
      /* not JSON */
    }
    this.wire.frame("out", "text", text, bytes, note);
  }

  #frameIn(text) {
    const bytes = frameBytes(utf8(text), false);
    this.stats.bytes += bytes;
    let note = "";
    let className = "";
    try {
      const frame = JSON.parse(text);
      if (frame.type === "pong") note = "heartbeat answered";
      else if (frame.type === "joined") note = "in the room; messages from here on";
      else if (frame.type === "ack") note = `stored as ${frame.id}`;
      else if (frame.type === "message") {
        note = `message · ${formatMs(this.clock.latency(frame.time))}`;
        className = "w-news";
      } else if (frame.type === "gap") note = "gap: the hub says what it could not replay";
      else if (frame.type === "presence") note = `who is in: ${frame.count}`;
      else if (frame.type === "join" || frame.type === "leave") note = `presence: someone ${frame.type === "join" ? "came in" : "left"}`;
      else if (frame.type === "error") note = "error";
    } catch {
      /* not JSON */
    }
    const entry = this.wire.frame("in", "text", text, bytes, note);
    if (className) entry.classList.add(className);
  }

  /** The client publishes over HTTP while the socket is down: that request shows here too. */
  async #httpPublish(input, init = {}) {
    this.wire.note("The socket is down, so the client publishes over HTTP instead.", "w-mode");
    const headers = Object.fromEntries(Object.entries(init.headers ?? {}).map(([k, v]) => [k.replace(/(^|-)\w/g, (c) => c.toUpperCase()), v]));
    const { res, text } = await tappedFetch(this.wire, this.stats, input, { method: init.method ?? "GET", headers, body: init.body, signal: init.signal });
    return new Response(text, { status: res.status, statusText: res.statusText, headers: res.headers });
  }

  // ---- the chat ----

  #state(state) {
    if (state === "connected") {
      this.connectedOnce = true;
      if (this.failures > 0) this.wire.note(`Back after ${formatMs(performance.now() - this.downSince)}, re-joined after the last id it had: what was sent meanwhile comes with it.`, "w-resume");
      this.failures = 0;
      this.#status("Connected: one socket, both directions.");
    } else if (state === "disconnected") {
      if (this.failures === 0) this.downSince = performance.now();
      this.failures++;
      const ceiling = backoffCeiling(this.failures - 1, this.client.options.backoff);
      this.wire.note(`Backoff: the client waits a random 0–${formatMs(ceiling)} (exponential, full jitter), then reconnects.`, "w-wait");
      this.#status(`Disconnected. Reconnecting within ${formatMs(ceiling)}…`);
    } else if (state === "connecting") {
      if (this.connectedOnce) {
        this.stats.reconnects++;
        this.#status("Reconnecting…");
      } else this.#status("Connecting…");
    }
  }

  #message(message) {
    const data = message.data ?? {};
    if (data.bot && !this.sequence.see(data.n, this.stats)) return;
    this.stats.messages++;
    const latency = this.clock.latency(message.time);
    this.stats.latency(latency);
    this.received.push({ id: message.id, text: data.text, n: data.n });
    if (this.received.length > 500) this.received.shift();
    safeStorage(() => sessionStorage.setItem(CURSOR_KEY, message.id));
    const li = document.createElement("li");
    li.className = `msg${data.from === this.tabId ? " mine" : ""}${data.bot ? " bot" : ""}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = typeof data.name === "string" ? data.name : "someone";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = typeof data.text === "string" ? data.text : JSON.stringify(data);
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${new Date(message.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })} · ${formatMs(latency)}`;
    li.append(who, text, meta);
    this.#append(li);
  }

  /** Who is in the room, this tab first; names as each tab declared them. */
  #members() {
    const members = this.room.presence();
    const name = (m) => (m.info && typeof m.info.name === "string" ? m.info.name : m.client);
    const mine = members.filter((m) => m.client === this.tabId);
    const others = members.filter((m) => m.client !== this.tabId);
    this.membersEl.replaceChildren(document.createTextNode(`In the room (${members.length}): `));
    [...mine, ...others].forEach((m, i) => {
      if (i > 0) this.membersEl.append(", ");
      const span = document.createElement("span");
      span.className = m.client === this.tabId ? "you member" : "member";
      span.textContent = m.client === this.tabId ? `${name(m)} (you)` : name(m);
      this.membersEl.append(span);
    });
  }

  #system(text) {
    const li = document.createElement("li");
    li.className = "msg system";
    li.textContent = text;
    this.#append(li);
  }

  #append(li) {
    const box = this.log;
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 40;
    box.append(li);
    while (box.childElementCount > KEEP) box.firstElementChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  async #send() {
    const name = this.nameInput.value.trim();
    const text = this.textInput.value.trim();
    if (!name || !text) return;
    this.textInput.value = "";
    this.errorEl.textContent = "";
    try {
      await this.client.publish(CHAT_CHANNEL, { name, text, from: this.tabId });
    } catch (error) {
      this.errorEl.textContent = `Not sent: ${error.message}`;
      if (!this.textInput.value) this.textInput.value = text;
    }
  }

  #status(text) {
    if (this.statusEl.textContent !== text) this.statusEl.textContent = text;
  }
}

function safeStorage(action) {
  try {
    return action();
  } catch {
    return null; // storage can be off (private mode, policies): the chat works without it
  }
}
