/**
 * Ladder's own client in a real browser (the rig: test/helpers/client-rig.ts), down the ladder: auto picks
 * WebSocket; refused upgrades, refused or buffered SSE step down; a cut heals with nothing lost or repeated;
 * frozen peers are noticed by heartbeats; a black-holed network ends back on the best rung.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { publish, sleep } from "./helpers/server.js";
import { setupClientRig, TEST_TIMEOUT, HEARTBEAT_TIMEOUT_MS, LIVE, short, cutPublishHeal, timeline, pageBehind } from "./helpers/client-rig.js";

setupClientRig();

// ---------------------------------------------------------------------------------------------------------
// a. auto picks WebSocket.

test("auto picks WebSocket first, with reason \"initial\", and delivers and publishes over it", { timeout: TEST_TIMEOUT }, async (t) => {
  const rig = await pageBehind(t);
  if (!rig) return;
  const { env, s, ch } = rig;
  await s.start("a", ch, { transport: "auto" });
  await s.until("a", LIVE, "connected and live");
  let view = await s.view("a");
  assert.equal(view.transport, "websocket");
  assert.deepEqual(
    view.transports.map((e) => [e.transport, e.reason]),
    [["websocket", "initial"]],
  );
  assert.deepEqual(view.failed, []);
  const fromNode = await publish(env.hub.url, { from: "node" }, ch);
  const fromPage = (await s.page.evaluate(`ladder.clients.a.client.publish(${JSON.stringify(ch)}, { from: "page" })`)) as { id: string; channel: string };
  assert.equal(fromPage.channel, ch);
  await s.until("a", `c.messages.length >= 2`, "both messages");
  await sleep(200);
  view = await s.view("a");
  assert.deepEqual(view.messages, [
    { id: fromNode.id, data: { from: "node" } },
    { id: fromPage.id, data: { from: "page" } },
  ]);
  // The publish went over the socket: the only things the client opened were one WebSocket.
  const calls = (await s.page.evaluate("__ladderProbe.calls.map((c) => c.kind + ' ' + new URL(c.url).pathname)")) as string[];
  assert.deepEqual(calls, ["websocket /api/ws"], `only one WebSocket; client: ${JSON.stringify(view)}; calls: ${JSON.stringify(await s.page.evaluate("__ladderProbe.calls"))}`);
  await s.page.evaluate("ladder.clients.a.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

// ---------------------------------------------------------------------------------------------------------
// b. Down the ladder, and nothing lost or repeated across a cut on the rung it landed on.

test("upgrades refused → SSE; a cut heals with the missed messages exactly once, in order", { timeout: TEST_TIMEOUT }, async (t) => {
  const rig = await pageBehind(t, { refuseUpgrades: true });
  if (!rig) return;
  const { env, s, ch } = rig;
  await s.start("b", ch);
  await s.until("b", `${LIVE} && c.client.transport === "sse"`, "live on SSE");
  let view = await s.view("b");
  assert.deepEqual(
    view.transports.map((e) => `${e.transport}:${short(e.reason)}`),
    ["websocket:initial", "sse:fallback"],
  );
  assert.match(view.transports[1]!.reason, /^fallback: websocket /);
  assert.deepEqual(view.failed, ["websocket"]);
  view = await cutPublishHeal(s, env.proxy, env.hub, "b", ch);
  t.diagnostic(`rungs: ${timeline(view)}`);
  // Where it lands depends on when the heal falls in its walk down the ladder (see the climbing test below).
  assert.ok(["sse", "long-poll", "poll"].includes(view.transport!), `on a rung the proxy lets through: ${view.transport}`);
  await s.page.evaluate("ladder.clients.b.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

test("upgrades and SSE refused → long-poll; a cut heals with the missed messages exactly once, in order", { timeout: TEST_TIMEOUT }, async (t) => {
  const rig = await pageBehind(t, { refuseUpgrades: true, sse: "refuse" });
  if (!rig) return;
  const { env, s, ch } = rig;
  await s.start("b", ch);
  await s.until("b", `${LIVE} && c.client.transport === "long-poll"`, "live on long-poll");
  let view = await s.view("b");
  assert.deepEqual(
    view.transports.map((e) => `${e.transport}:${short(e.reason)}`),
    ["websocket:initial", "sse:fallback", "long-poll:fallback"],
  );
  assert.match(view.transports[2]!.reason, /^fallback: sse stream answered 502/);
  assert.deepEqual([...view.failed].sort(), ["sse", "websocket"]);
  view = await cutPublishHeal(s, env.proxy, env.hub, "b", ch);
  t.diagnostic(`rungs: ${timeline(view)}`);
  assert.ok(["long-poll", "poll"].includes(view.transport!), `on a rung the proxy lets through: ${view.transport}`);
  await s.page.evaluate("ladder.clients.b.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

test("upgrades refused and SSE buffered → the open timeout steps over SSE to long-poll; a cut heals exactly once, in order", { timeout: TEST_TIMEOUT }, async (t) => {
  const rig = await pageBehind(t, { refuseUpgrades: true, sse: "buffer" });
  if (!rig) return;
  const { env, s, ch } = rig;
  const openTimeoutMs = 1000;
  await s.start("b", ch, { openTimeoutMs });
  await s.until("b", `${LIVE} && c.client.transport === "long-poll"`, "live on long-poll");
  let view = await s.view("b");
  assert.deepEqual(
    view.transports.map((e) => `${e.transport}:${short(e.reason)}`),
    ["websocket:initial", "sse:fallback", "long-poll:fallback"],
  );
  assert.match(view.transports[2]!.reason, /^fallback: sse no ready event within the open timeout/);
  // The buffered stream was given up after two open timeouts (a rung is blocked after two strikes while the
  // hub answers), not before and not much later.
  const buffered = view.transports[2]!.at - view.transports[1]!.at;
  assert.ok(buffered >= 2 * openTimeoutMs - 50 && buffered < 2 * openTimeoutMs + 1500, `SSE given up after ${buffered} ms (open timeout ${openTimeoutMs} ms)`);
  view = await cutPublishHeal(s, env.proxy, env.hub, "b", ch);
  t.diagnostic(`rungs: ${timeline(view)}`);
  assert.ok(["long-poll", "poll"].includes(view.transport!), `on a rung the proxy lets through: ${view.transport}`);
  await s.page.evaluate("ladder.clients.b.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

// ---------------------------------------------------------------------------------------------------------
// c. Frozen peers.

for (const rung of ["websocket", "sse"] as const) {
  test(`a frozen ${rung} peer is detected by heartbeats within the bound and replaced; the message from the freeze arrives once`, { timeout: TEST_TIMEOUT }, async (t) => {
    const rig = await pageBehind(t, rung === "sse" ? { refuseUpgrades: true } : {});
    if (!rig) return;
    const { env, s, ch } = rig;
    await s.start("c", ch);
    await s.until("c", `${LIVE} && c.client.transport === ${JSON.stringify(rung)}`, `live on ${rung}`);
    if (rung === "sse") env.proxy.rules.refuseUpgrades = false; // the probe is a minute away; only the freeze matters
    const endedBefore = (await s.view("c")).errors.length; // the refused upgrade, on the way to SSE
    // A quiet channel is not a dead connection: heartbeats keep it up for twice the timeout.
    await sleep(2 * HEARTBEAT_TIMEOUT_MS);
    let view = await s.view("c");
    assert.equal(view.state, "connected", `a quiet ${rung} stayed up: ${JSON.stringify(view)}`);
    assert.deepEqual(view.errors.slice(endedBefore), [], "no rung ended while the channel was merely quiet");
    const before = await publish(env.hub.url, "before the freeze", ch);
    await s.until("c", `c.messages.length >= 1`, "the message before the freeze");

    env.proxy.rules.frozen = true;
    const frozenAt = Date.now();
    const during = await publish(env.hub.url, "during the freeze", ch);
    await s.until("c", `c.client.state !== "connected"`, "the freeze noticed", 5000);
    const noticed = Date.now() - frozenAt;
    // WebSocket: an application ping every third of the timeout, so at most timeout + timeout/3; SSE: the
    // timeout after the last heartbeat comment. Plus slack for polling and a loaded machine.
    const bound = Math.ceil((HEARTBEAT_TIMEOUT_MS * 4) / 3) + 600;
    t.diagnostic(`${rung} freeze noticed after ${noticed} ms (bound ${bound} ms)`);
    assert.ok(noticed <= bound, `freeze noticed after ${noticed} ms, bound ${bound} ms`);
    view = await s.view("c");
    const ended = view.errors[endedBefore];
    assert.equal(ended?.transport, rung);
    assert.match(ended!.reason, /heartbeat/, `ended for its heartbeat: ${JSON.stringify(view.errors)}`);
    assert.equal(view.messages.length, 1, "nothing crossed the frozen proxy");

    // Thaw; the frozen connections (whose bytes the proxy dropped) are gone for good.
    env.proxy.rules.frozen = false;
    env.proxy.cutAll();
    await s.until("c", `c.messages.length >= 2 && c.client.state === "connected"`, "the message from the freeze, after the replacement", 12_000);
    const afterwards = await publish(env.hub.url, "after the freeze", ch);
    await s.until("c", `c.messages.length >= 3`, "a live message after the replacement");
    await sleep(300);
    view = await s.view("c");
    t.diagnostic(`rungs: ${timeline(view)}`);
    assert.deepEqual(
      view.messages.map((m) => m.id),
      [before.id, during.id, afterwards.id],
      "each message once, in order",
    );
    assert.ok(view.states.filter((x) => x.startsWith("connecting@")).length >= 2, "a new connection replaced the frozen one");
    await s.page.evaluate("ladder.clients.c.client.close()");
    assert.deepEqual(s.pageErrors, []);
  });
}

test("a network that black-holes for a while: once it works again the client gets back to SSE, not stuck below it", { timeout: TEST_TIMEOUT }, async (t) => {
  // Behind a proxy that refuses upgrades, the best rung is SSE. While the network swallows everything, each
  // attempt fails before delivering; the hub does not answer a plain request either, so the client must take
  // it for an outage (back off and retry SSE), not for SSE being blocked — and be on SSE when it heals.
  const rig = await pageBehind(t, { refuseUpgrades: true });
  if (!rig) return;
  const { env, s, ch } = rig;
  await s.start("bh", ch, { openTimeoutMs: 1000, probe: { minMs: 300, maxMs: 600 } });
  await s.until("bh", `${LIVE} && c.client.transport === "sse"`, "live on SSE");
  const first = await publish(env.hub.url, "before", ch);
  await s.until("bh", `c.messages.length >= 1`, "the first message");
  env.proxy.rules.frozen = true;
  const during = await publish(env.hub.url, "while black-holed", ch);
  await s.until("bh", `c.client.state !== "connected"`, "the silence noticed", 8000);
  await sleep(3000);
  const walked = (await s.view("bh")).transports.map((x: { transport: string }) => x.transport);
  assert.ok(!walked.includes("long-poll") && !walked.includes("poll"), `an outage is not a blocked rung: ${walked.join(" → ")}`);
  env.proxy.rules.frozen = false;
  env.proxy.cutAll(); // what was swallowed is gone
  await s.until("bh", `c.messages.length >= 2 && c.client.state === "connected"`, "the message from the outage", 8000);
  const healedAt = (await s.view("bh")).now;
  try {
    await s.until("bh", `c.client.transport === "sse"`, "back on SSE within 4 s of the network working again", 4000);
  } finally {
    const view = await s.view("bh");
    t.diagnostic(`rungs: ${timeline(view)}`);
    const calls = (await s.page.evaluate(
      `__ladderProbe.calls.filter((c) => c.at > ${healedAt} && !c.url.includes("/api/messages")).map((c) => c.kind + " " + new URL(c.url).pathname)`,
    )) as string[];
    t.diagnostic(`non-poll requests after the heal: ${JSON.stringify(calls)}`);
  }
  const last = await publish(env.hub.url, "after", ch);
  await s.until("bh", `c.messages.length >= 3`, "a live message on SSE");
  await sleep(300);
  assert.deepEqual(
    (await s.view("bh")).messages.map((m) => m.id),
    [first.id, during.id, last.id],
  );
  await s.page.evaluate("ladder.clients.bh.client.close()");
  assert.deepEqual(s.pageErrors, []);
});
