// The demo page: starts the three examples, the network conditions panel, the built-in publisher and the
// measured comparison.
import { Chat } from "./chat.js";
import { LadderPanel } from "./ladder.js";
import { Feed } from "./poll.js";
import { Ticker } from "./sse.js";
import { renderStats } from "./stats.js";
import { formatBytes, formatMs, WireView } from "./wire.js";

const $ = (id) => document.getElementById(id);
const PUBLISHER = "/demo/publisher";
const RENEW_MS = 4 * 60_000;

/** Hub time minus this browser's time, so a latency is publish → arrival on one clock. */
const clock = {
  offset: 0,
  rtt: null,
  latency(serverTime) {
    return Date.now() + this.offset - serverTime;
  },
};

const wires = {
  "poll-wire": new WireView($("poll-wire")),
  "sse-wire": new WireView($("sse-wire")),
  "ws-wire": new WireView($("ws-wire")),
  "ladder-wire": new WireView($("ladder-wire")),
};

const feed = new Feed({ wire: wires["poll-wire"], list: $("feed-list"), status: $("poll-status"), clock });
const ticker = new Ticker({ wire: wires["sse-wire"], status: $("sse-status"), clock, onPrice: renderPrice });
const chat = new Chat({
  wire: wires["ws-wire"],
  log: $("chat-log"),
  members: $("chat-members"),
  status: $("ws-status"),
  form: $("chat-form"),
  nameInput: $("chat-name"),
  textInput: $("chat-text"),
  error: $("chat-error"),
  clock,
});
const ladder = new LadderPanel({ wire: wires["ladder-wire"], root: $("ladder") });

// ---- the publisher ----

const publisher = { running: false, wanted: false, status: null, renewTimer: null };

function showPublisher(status) {
  publisher.status = status;
  publisher.running = status.running;
  const button = $("publisher-toggle");
  button.disabled = false;
  button.textContent = status.running ? "Stop publisher" : "Start publisher";
  $("publisher-dot").classList.toggle("on", status.running);
  const [state, detail] = status.running
    ? ["Publisher on", ` · a price every ${formatMs(status.priceIntervalMs)}, news every ${status.feedIntervalMs.map((ms) => ms / 1000).join("–")} s`]
    : ["Publisher off", " · the channels are quiet"];
  const element = $("publisher-status");
  if (element.textContent !== state + detail) {
    const more = document.createElement("span");
    more.className = "pub-detail";
    more.textContent = detail;
    element.replaceChildren(state, more);
  }
}

async function publisherCall(init) {
  const t0 = Date.now();
  const res = await fetch(PUBLISHER, { cache: "no-store", ...init });
  const t1 = Date.now();
  if (!res.ok) throw new Error(`${PUBLISHER} answered ${res.status}`);
  const status = await res.json();
  // NTP-style: the hub read its clock about halfway through the round trip. Keep the tightest sample.
  if (clock.rtt === null || t1 - t0 <= clock.rtt) {
    clock.rtt = t1 - t0;
    clock.offset = status.now - (t0 + t1) / 2;
  }
  showPublisher(status);
  return status;
}

async function setPublisher(running) {
  publisher.wanted = running;
  $("publisher-toggle").disabled = true;
  try {
    await publisherCall({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ running }) });
  } catch (error) {
    $("publisher-status").textContent = `Publisher unavailable (${error.message})`;
    $("publisher-toggle").disabled = false;
  }
}

$("publisher-toggle").addEventListener("click", () => void setPublisher(!publisher.running));

// The publisher stops by itself ten minutes after the last start; an open, visible page keeps it going.
function scheduleRenewal() {
  clearTimeout(publisher.renewTimer);
  publisher.renewTimer = setTimeout(() => {
    if (publisher.wanted && publisher.running && document.visibilityState === "visible") void setPublisher(true);
    scheduleRenewal();
  }, RENEW_MS);
}

document.addEventListener("visibilitychange", () => {
  // Another tab may have stopped or started it meanwhile.
  if (document.visibilityState === "visible") void publisherCall({}).catch(() => undefined);
});

// ---- controls ----

$("cut-all").addEventListener("click", () => {
  feed.cut();
  ticker.cut();
  chat.cut();
});
for (const button of document.querySelectorAll("[data-cut]")) {
  button.addEventListener("click", () => ({ poll: feed, sse: ticker, ws: chat })[button.dataset.cut].cut());
}
for (const box of document.querySelectorAll("[data-headers]")) {
  box.addEventListener("change", () => wires[box.dataset.headers].showHeaders(box.checked));
}
for (const button of document.querySelectorAll("[data-clear]")) {
  button.addEventListener("click", () => wires[button.dataset.clear].clear());
}
for (const radio of document.querySelectorAll('input[name="poll-mode"]')) {
  radio.addEventListener("change", () => {
    if (!radio.checked) return;
    $("poll-interval").disabled = radio.value !== "poll";
    feed.start(radio.value);
  });
}
$("poll-interval").addEventListener("change", (event) => feed.setIntervalMs(Number(event.target.value)));

// ---- the ticker ----

const prices = [];
let announced = "";

function renderPrice(data, id) {
  if (typeof data?.price !== "number") return;
  const previous = prices.at(-1);
  prices.push(data.price);
  if (prices.length > 60) prices.shift();
  $("price").textContent = data.price.toFixed(2);
  const change = $("price-change");
  if (previous !== undefined) {
    const delta = data.price - previous;
    change.textContent = `${delta > 0 ? "▲" : delta < 0 ? "▼" : "■"} ${Math.abs(delta).toFixed(2)}`;
    change.className = `change ${delta > 0 ? "up" : delta < 0 ? "down" : ""}`;
  }
  const latency = ticker.stats.lastLatency;
  $("ticker-meta").textContent = `Last event id ${id} · ${latency === null ? "" : `${formatMs(latency)} after publish`}`;
  drawSpark();
}

function drawSpark() {
  const svg = $("spark");
  if (prices.length < 2) return;
  const min = Math.min(...prices);
  const max = Math.max(...prices);
  const span = max - min || 1;
  const points = prices.map((p, i) => `${((i / (prices.length - 1)) * 300).toFixed(1)},${(60 - ((p - min) / span) * 56).toFixed(1)}`).join(" ");
  svg.firstElementChild.setAttribute("points", points);
  svg.setAttribute("aria-label", `Price trend over the last ${prices.length} events: from ${prices[0].toFixed(2)} to ${prices.at(-1).toFixed(2)}, low ${min.toFixed(2)}, high ${max.toFixed(2)}`);
}

setInterval(() => {
  if (!$("announce-price").checked || prices.length === 0) return;
  const text = `LDR ${prices.at(-1).toFixed(2)}`;
  if (text !== announced) $("price-announcer").textContent = announced = text;
}, 10_000);

// ---- counters and the measured comparison ----

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

const PATTERNS = [
  ["poll", () => feed.stats.poll],
  ["long-poll", () => feed.stats["long-poll"]],
  ["sse", () => ticker.stats],
  ["ws", () => chat.stats],
];

const MEASURES = [
  ["Latency, median (worst)", (s) => (s.median === null ? "—" : `${formatMs(s.median)} (${formatMs(s.worst)})`)],
  ["Requests for messages", (s) => `${s.requests} req → ${s.messages} msg`],
  ["Bytes per message", (s) => (s.messages ? formatBytes(Math.round(s.bytes / s.messages)) : s.bytes ? `${formatBytes(s.bytes)}, no message yet` : "—")],
  ["Empty answers", (s, key) => (key === "sse" ? `none (${plural(s.overhead, "heartbeat")})` : key === "ws" ? `none (${plural(s.overhead, "ping")})` : `${s.empty}${s.requests ? ` of ${s.requests} (${Math.round((100 * s.empty) / s.requests)} %)` : ""}`)],
  ["Reconnects · lost", (s) => `${s.reconnects} · ${s.lost + s.duplicates === 0 ? "nothing lost" : `${s.lost} lost, ${s.duplicates} repeated`}`],
];

const measuredCells = MEASURES.map(([label]) => {
  const tr = document.createElement("tr");
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = label;
  tr.append(th);
  const cells = PATTERNS.map(() => tr.appendChild(document.createElement("td")));
  $("measured").append(tr);
  return cells;
});

function render() {
  ladder.render();
  renderStats($("poll-stats"), feed.current);
  $("poll-stats-mode").textContent = feed.mode === "poll" ? "interval polling" : "long-polling";
  renderStats($("sse-stats"), ticker.stats, { emptyLabel: "Heartbeats", emptyValue: String(ticker.stats.overhead), emptyHint: "“:” lines keeping it open" });
  renderStats($("ws-stats"), chat.stats, { emptyLabel: "Pings", emptyValue: String(chat.stats.overhead), emptyHint: "the client’s heartbeats" });
  MEASURES.forEach(([, measure], row) => {
    PATTERNS.forEach(([key, get], column) => {
      const s = get();
      const text = s.active ? measure(s, key) : "not run yet";
      const cell = measuredCells[row][column];
      if (cell.textContent !== text) cell.textContent = text;
      cell.classList.toggle("idle", !s.active);
    });
  });
}
setInterval(render, 500);

// ---- start ----

async function boot() {
  // The publisher's state and a first sample of the hub's clock; two more samples once the examples run
  // (the tightest round trip wins).
  let status = await publisherCall({}).catch(() => null);
  feed.start("poll");
  ticker.start();
  chat.start();
  await ladder.start();
  render();
  for (let i = 0; i < 2; i++) status = await publisherCall({}).catch(() => status);
  if (!status) $("publisher-status").textContent = "Publisher unavailable (this hub runs without the demo publisher)";
  // Start it for a newcomer; it is one click to stop.
  if (status && !status.running) await setPublisher(true);
  else if (status) publisher.wanted = true;
  scheduleRenewal();
}

// For the curious (and the tests): window.demo in the console.
window.demo = {
  feed,
  ticker,
  chat,
  ladder,
  clock,
  publisher,
  setPublisher,
  stats: () => Object.fromEntries(PATTERNS.map(([key, get]) => [key, get().toJSON()])),
};

void boot();
