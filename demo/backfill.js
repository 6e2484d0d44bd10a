// Example 4: a gap that repairs itself. A board on demo.board (a count and the last items); the page keeps
// it from the channel's messages. Cut the connection, publish more than the hub's history keeps, reconnect:
// the cursor is older than history, so the hub asks the app's backfill hook (here the demo's own) and the
// gap arrives with a snapshot of the board, which replaces the page's state. Self-contained: it adds its own
// section to the page.
import { createClient } from "/ladder-client.js";

const CHANNEL = "demo.board";
const BOARD = "/demo/board";

const section = document.createElement("section");
section.id = "backfill";
section.className = "pattern";
section.setAttribute("aria-labelledby", "backfill-title");
section.innerHTML = `
  <div class="pattern-head">
    <h2 id="backfill-title"><span class="step" aria-hidden="true">4</span>Backfill <span class="h2-sub">a gap that repairs itself</span></h2>
    <p>The hub keeps only the last <span id="board-history">…</span> messages of a channel. Cut this board’s
      connection, publish more than that, and reconnect: its cursor is older than history, so the hub asks the
      app’s <code>backfill</code> hook, and the gap signal brings a snapshot of the board instead of a bare “gap”.</p>
  </div>
  <div class="pattern-body">
    <div class="card example">
      <div class="conn-line">
        <p class="conn" id="board-status" role="status">Starting…</p>
      </div>
      <div class="example-bar">
        <button type="button" class="btn btn-small" id="board-add">Add an item</button>
        <button type="button" class="btn btn-small btn-cut" id="board-cut"><span aria-hidden="true">✂</span> 1. Cut</button>
        <button type="button" class="btn btn-small" id="board-past" disabled>2. Publish past history</button>
        <button type="button" class="btn btn-small" id="board-reconnect" disabled>3. Reconnect</button>
      </div>
      <p>On this page: <strong id="board-total">0</strong> items · on the hub: <span id="board-server">…</span></p>
      <ol id="board-recent" class="feed" aria-label="Last items, newest first"></ol>
      <p id="board-note" class="conn" role="log" aria-live="polite"></p>
    </div>
  </div>`;
const main = document.getElementById("main");
main.insertBefore(section, document.getElementById("compare"));

const $ = (id) => document.getElementById(id);
let state = { total: 0, recent: [] };
let client = null;
let cursor = null;

function render() {
  $("board-total").textContent = String(state.total);
  $("board-recent").replaceChildren(...state.recent.map((item) => Object.assign(document.createElement("li"), { textContent: item })));
  $("board-cut").disabled = client === null || cursor === null;
  $("board-reconnect").disabled = client !== null;
  $("board-past").disabled = client !== null;
}

function note(text) {
  $("board-note").textContent = text;
}

async function board(init) {
  const res = await fetch(BOARD, { cache: "no-store", ...init });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error?.message ?? `${BOARD} answered ${res.status}`);
  $("board-history").textContent = String(body.historySize);
  $("board-server").textContent = `${body.state.total} items`;
  return body;
}

/** A message counts once: history the hub still sends after a snapshot is already in it. */
function apply({ n, item }) {
  if (n <= state.total) return;
  state = { total: n, recent: [item, ...state.recent].slice(0, 5) };
}

function connect(since) {
  client = createClient({ backoff: { minMs: 300, maxMs: 3000 } });
  client.on("state", ({ newState }) => ($("board-status").textContent = newState === "connected" ? `Connected (${client.transport})` : newState));
  const sub = client.subscribe(CHANNEL, since ? { since } : {});
  sub.on("message", (message) => {
    cursor = message.id;
    apply(message.data);
    render();
  });
  sub.on("gap", (gap) => {
    if (gap.snapshot !== undefined) {
      state = { total: gap.snapshot.total, recent: gap.snapshot.recent };
      note(`Gap (${gap.reason}): history no longer reached back to ${gap.since}. Repaired from the app’s snapshot: ${state.total} items.`);
    } else {
      note(`Gap (${gap.reason}) without a snapshot: this page’s board may be behind.`);
    }
    render();
  });
  render();
}

$("board-add").addEventListener("click", () => void board({ method: "POST", headers: { "content-type": "application/json" }, body: '{"add":1}' }).catch((e) => note(e.message)));
$("board-cut").addEventListener("click", () => {
  cursor = client?.cursor(CHANNEL) ?? cursor;
  client?.close();
  client = null;
  $("board-status").textContent = "Cut: not connected";
  note(`Cut after message ${cursor}. Now publish past history, then reconnect.`);
  render();
});
$("board-past").addEventListener("click", () => {
  $("board-past").disabled = true;
  note("Publishing past history…");
  board({ method: "POST", headers: { "content-type": "application/json" }, body: '{"pastHistory":true}' }).then(
    (body) => note(`The hub took ${body.state.total} items in all; this page still shows ${state.total}. Reconnect.`),
    (e) => note(e.message),
  ).finally(render);
});
$("board-reconnect").addEventListener("click", () => {
  note(`Reconnecting with since=${cursor}…`);
  connect(cursor);
});

// Load the state with its cursor, then subscribe from that cursor: nothing in between is missed.
board().then(
  (body) => {
    state = { total: body.state.total, recent: body.state.recent };
    cursor = body.state.lastId;
    connect(cursor);
  },
  (e) => note(e.message),
);
