/**
 * Ladder's own client in a real browser (the rig: test/helpers/client-rig.ts), back up the ladder and
 * after: the probe climbs back when a better rung works again, `online` and `visibilitychange` cut a
 * backoff short, and close() leaves no work behind.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { publish, sleep } from "./helpers/server.js";
import { setupClientRig, TEST_TIMEOUT, channel, LIVE, short, pageBehind } from "./helpers/client-rig.js";

setupClientRig();

// ---------------------------------------------------------------------------------------------------------
// d. Climbing back.

test("after falling back to SSE, a probe climbs back to WebSocket once upgrades work, losing and repeating nothing", { timeout: TEST_TIMEOUT }, async (t) => {
  const rig = await pageBehind(t, { refuseUpgrades: true });
  if (!rig) return;
  const { env, s, ch } = rig;
  await s.start("d", ch, { probe: { minMs: 200, maxMs: 400 } });
  await s.until("d", `${LIVE} && c.client.transport === "sse"`, "live on SSE");
  // Publish steadily across the handover.
  const published: string[] = [];
  let publishing = true;
  let upgradedAfter = -1;
  const publisher = (async () => {
    for (let i = 0; publishing && i < 400; i++) {
      published.push((await publish(env.hub.url, i, ch)).id);
      await sleep(10);
    }
  })();
  try {
    await sleep(400);
    env.proxy.rules.refuseUpgrades = false;
    const allowedAt = Date.now();
    await s.until("d", `c.client.transport === "websocket"`, "climbed back to WebSocket", 10_000);
    upgradedAfter = Date.now() - allowedAt;
    await sleep(400);
  } finally {
    publishing = false;
    await publisher;
  }
  t.diagnostic(`climbed back ${upgradedAfter} ms after upgrades were allowed; ${published.length} messages published across the handover`);
  await s.until("d", `c.messages.length >= ${published.length}`, `all ${published.length} messages`);
  await sleep(300);
  const view = await s.view("d");
  const ids = view.messages.map((m) => m.id);
  const repeated = ids.filter((id, i) => ids.indexOf(id) !== i);
  assert.deepEqual(repeated, [], "no message twice");
  assert.deepEqual(ids, published, "every message once, in order, across the handover");
  assert.deepEqual(
    view.transports.map((e) => `${e.transport}:${short(e.reason)}`),
    ["websocket:initial", "sse:fallback", "websocket:upgrade from sse"],
  );
  assert.equal(view.state, "connected");
  assert.deepEqual(view.failed, [], "a successful probe clears the failure");
  // The SSE rung was closed, not left running beside the socket: no stream is reopened after the upgrade.
  const upgradeAt = view.transports[2]!.at;
  const late = (await s.page.evaluate(`__ladderProbe.calls.filter((c) => c.at > ${upgradeAt} && c.url.includes("/api/stream")).length`)) as number;
  assert.equal(late, 0, "no SSE request after the upgrade");
  await s.page.evaluate("ladder.clients.d.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

test("after stepping down to long-poll, the probe climbs to SSE when SSE works again and upgrades stay refused", { timeout: TEST_TIMEOUT }, async (t) => {
  // The same situation arises whenever an outage heals while the client is partway down the ladder: every
  // rung it tried while the hub was unreachable counts as blocked, so it can land on long-poll or poll
  // behind a proxy that only refuses upgrades. The probe must be able to bring it back to SSE.
  const rig = await pageBehind(t, { refuseUpgrades: true, sse: "refuse" });
  if (!rig) return;
  const { env, s, ch } = rig;
  await s.start("d2", ch, { probe: { minMs: 200, maxMs: 400 } });
  await s.until("d2", `${LIVE} && c.client.transport === "long-poll"`, "live on long-poll");
  const first = await publish(env.hub.url, "on long-poll", ch);
  await s.until("d2", `c.messages.length >= 1`, "a message over long-poll");
  env.proxy.rules.sse = "pass";
  const passAt = (await s.view("d2")).now;
  try {
    await s.until("d2", `c.client.transport === "sse"`, "climbed to SSE (upgrades are still refused)", 4000);
  } finally {
    const probes = (await s.page.evaluate(
      `__ladderProbe.calls.filter((c) => c.at > ${passAt}).map((c) => c.kind + " " + new URL(c.url).pathname)`,
    )) as string[];
    t.diagnostic(`requests the client started after SSE was let through: ${JSON.stringify(probes.filter((p) => !p.includes("/api/messages")))}`);
  }
  const second = await publish(env.hub.url, "on SSE", ch);
  await s.until("d2", `c.messages.length >= 2`, "a message over SSE");
  await sleep(300);
  const view = await s.view("d2");
  assert.deepEqual(
    view.messages.map((m) => m.id),
    [first.id, second.id],
  );
  await s.page.evaluate("ladder.clients.d2.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

// ---------------------------------------------------------------------------------------------------------
// e. online / visibilitychange cut a pending backoff short.

test("`online` and `visibilitychange` to visible cut a pending 20 s backoff short", { timeout: TEST_TIMEOUT }, async (t) => {
  const rig = await pageBehind(t);
  if (!rig) return;
  const { env, s, ch } = rig;
  // Full jitter with random() = 0.99: every backoff is 19.8 s.
  await s.start("e", ch, { backoff: { minMs: 20_000, maxMs: 20_000 }, fixedRandom: 0.99 });
  await s.until("e", `${LIVE} && c.client.transport === "websocket"`, "live on WebSocket");
  const ids: string[] = [];

  const cutAndWait = async (what: string): Promise<void> => {
    env.proxy.cutAll();
    await s.until("e", `c.client.state === "disconnected"`, `disconnected after the cut (${what})`, 5000);
    ids.push((await publish(env.hub.url, `published while waiting out the backoff (${what})`, ch)).id);
    // The backoff really is pending: nothing reconnects by itself in the next 800 ms.
    await sleep(800);
    const view = await s.view("e");
    assert.equal(view.state, "disconnected", `still waiting out the backoff before ${what}: ${JSON.stringify(view.states)}`);
  };

  // online
  await cutAndWait("online");
  let at = Date.now();
  await s.page.evaluate(`window.dispatchEvent(new Event("online"))`);
  await s.until("e", `c.client.state === "connected" && c.messages.length >= 1`, "reconnected after online", 1000);
  t.diagnostic(`online → connected in ${Date.now() - at} ms`);

  // visibilitychange while hidden does not hurry; to visible does.
  await cutAndWait("visibilitychange");
  await s.page.evaluate(`Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" }); document.dispatchEvent(new Event("visibilitychange"))`);
  await sleep(300);
  assert.equal((await s.view("e")).state, "disconnected", "a page going hidden does not reconnect early");
  await s.page.evaluate(`delete document.visibilityState; document.visibilityState`);
  assert.equal(await s.page.evaluate("document.visibilityState"), "visible");
  at = Date.now();
  await s.page.evaluate(`document.dispatchEvent(new Event("visibilitychange"))`);
  await s.until("e", `c.client.state === "connected" && c.messages.length >= 2`, "reconnected after visibilitychange", 1000);
  t.diagnostic(`visibilitychange → connected in ${Date.now() - at} ms`);

  await sleep(200);
  const view = await s.view("e");
  assert.deepEqual(
    view.messages.map((m) => m.id),
    ids,
    "what was published while waiting arrived once, in order",
  );
  assert.equal(view.transport, "websocket", "a cut after delivering does not step down");
  await s.page.evaluate("ladder.clients.e.client.close()");
  assert.deepEqual(s.pageErrors, []);
});

// ---------------------------------------------------------------------------------------------------------
// f. close() leaves nothing behind.

test("close() leaves no pending client work: no requests for 2 s, no timers, sockets closed, state closed", { timeout: TEST_TIMEOUT }, async (t) => {
  // Upgrades refused, so the clients below are caught in every kind of pending work at once.
  const rig = await pageBehind(t, { refuseUpgrades: true });
  if (!rig) return;
  const { s } = rig;
  const requests: Array<{ url: string; at: number }> = [];
  s.page.on("request", (r) => requests.push({ url: r.url(), at: Date.now() }));
  s.page.on("websocket", (w) => requests.push({ url: w.url(), at: Date.now() }));
  // On SSE with a probe (back to WebSocket) due 1.5 s after connecting.
  await s.start("sse", channel(), { probe: { minMs: 1500, maxMs: 1500 }, fixedRandom: 0 });
  // A long-poll held by the hub.
  await s.start("longpoll", channel(), { transport: "long-poll" });
  // Polling every 200 ms.
  await s.start("poll", channel(), { transport: "poll" });
  // WebSocket only, refused: waiting out a ~1 s backoff before the next try.
  await s.start("retry", channel(), { transport: "websocket", backoff: { minMs: 1000, maxMs: 1000 }, fixedRandom: 0.99 });
  await s.until("sse", `${LIVE} && c.client.transport === "sse"`, "sse live");
  await s.until("longpoll", LIVE, "long-poll live");
  await s.until("poll", LIVE, "poll live");
  await s.until("retry", `c.client.state === "disconnected" && c.errors.length >= 1`, "websocket refused, backoff pending");
  await sleep(300); // the long-poll is parked, the poll timer armed
  const pending = (await s.page.evaluate("__ladderProbe.timers.size")) as number;
  assert.ok(pending >= 4, `the clients had work pending before close (${pending} timers)`);

  const closedAt = (await s.page.evaluate(`(() => {
    for (const rec of Object.values(ladder.clients)) rec.client.close();
    return performance.now();
  })()`)) as number;
  const closedAtNode = Date.now();
  const states = (await s.page.evaluate("Object.values(ladder.clients).map((rec) => rec.client.state)")) as string[];
  assert.deepEqual(states, ["closed", "closed", "closed", "closed"]);
  const left = (await s.page.evaluate(`[...__ladderProbe.timers.values()]`)) as unknown[];
  assert.deepEqual(left, [], "close() cleared every timer the clients had set");

  await sleep(2000);
  const calls = (await s.page.evaluate(`__ladderProbe.calls.filter((c) => c.at > ${closedAt}).map((c) => c.kind + " " + c.url)`)) as string[];
  assert.deepEqual(calls, [], "the clients made no fetch and opened no WebSocket after close()");
  // Seen from outside the page too (allowing for the CDP event of a request started just before close).
  const late = requests.filter((r) => r.at > closedAtNode + 250).map((r) => r.url);
  assert.deepEqual(late, [], "the browser saw no request after close()");
  const timers = (await s.page.evaluate(`[...__ladderProbe.timers.values()]`)) as unknown[];
  assert.deepEqual(timers, [], "no client timer was set after close()");
  const open = (await s.page.evaluate("__ladderProbe.sockets.filter((w) => w.readyState !== WebSocket.CLOSED).length")) as number;
  assert.equal(open, 0, "every WebSocket the clients opened is closed");
  // Listeners are gone too: `online` no longer wakes a closed client.
  await s.page.evaluate(`window.dispatchEvent(new Event("online")); document.dispatchEvent(new Event("visibilitychange"))`);
  await sleep(200);
  assert.equal(await s.page.evaluate(`__ladderProbe.calls.filter((c) => c.at > ${closedAt}).length`), 0);
  assert.deepEqual(s.pageErrors, []);
});
