/**
 * The soak's judge (soak/ledger.ts) on hand-made histories: each failure it exists to catch is caught, and a
 * correct history — including late acks and justified gaps — passes. The soak itself is soak.test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Ledger } from "../soak/ledger.js";

const id = (n: number): string => `1000-${n}`;

/** A ledger with `count` publishes on channel c acknowledged as 1000-1 … 1000-count, and one subscriber from 1000-0. */
function setup(count: number, options: { historySize?: number; memory?: boolean; ack?: boolean } = {}) {
  let now = 1_000_000;
  const ledger = new Ledger({ historySize: options.historySize ?? 100, memory: options.memory ?? false, now: () => now });
  const track = ledger.track("sub", "c", id(0));
  for (let n = 1; n <= count; n++) {
    ledger.attempt(`k${n}`);
    if (options.ack !== false) ledger.acked("c", `k${n}`, id(n));
  }
  return { ledger, track, tick: (ms: number) => (now += ms), data: (n: number) => ({ k: `k${n}`, t: 0 }) };
}

test("every message once and in order: no violation", () => {
  const { ledger, track, data } = setup(5);
  for (let n = 1; n <= 5; n++) ledger.message(track, id(n), data(n));
  assert.equal(ledger.violations.length, 0, JSON.stringify(ledger.violations));
  assert.equal(ledger.deliveriesChecked, 5);
});

test("a silent jump over an acknowledged message is a loss, named by id", () => {
  const { ledger, track, data } = setup(3);
  ledger.message(track, id(1), data(1));
  ledger.message(track, id(3), data(3));
  assert.deepEqual(ledger.violations.map((v) => [v.kind, v.ids[0], v.channel, v.subscriber]), [["lost", id(2), "c", "sub"]]);
});

test("a loss is found when the ack arrives after the subscriber moved past the message", () => {
  const { ledger, track, data } = setup(3, { ack: false });
  ledger.acked("c", "k1", id(1));
  ledger.acked("c", "k3", id(3));
  ledger.message(track, id(1), data(1));
  ledger.message(track, id(3), data(3));
  assert.equal(ledger.violations.length, 0, JSON.stringify(ledger.violations));
  ledger.acked("c", "k2", id(2));
  assert.deepEqual(ledger.violations.map((v) => [v.kind, v.ids[0]]), [["lost", id(2)]]);
});

test("a late ack for a message that was delivered is no loss", () => {
  const { ledger, track, data } = setup(3, { ack: false });
  for (let n = 1; n <= 3; n++) ledger.message(track, id(n), data(n));
  ledger.acked("c", "k2", id(2));
  assert.equal(ledger.violations.length, 0, JSON.stringify(ledger.violations));
});

test("a duplicate and a step back are reported", () => {
  const { ledger, track, data } = setup(3);
  ledger.message(track, id(1), data(1));
  ledger.message(track, id(2), data(2));
  ledger.message(track, id(2), data(2));
  ledger.message(track, id(1), data(1));
  assert.deepEqual(ledger.violations.map((v) => v.kind), ["duplicate", "duplicate"]);
  const { ledger: l2, track: t2, data: d2 } = setup(3, { ack: false });
  l2.message(t2, id(2), d2(2));
  l2.message(t2, id(1), d2(1));
  assert.deepEqual(l2.violations.map((v) => v.kind), ["out-of-order"]);
});

test("data nobody published, or an id bound to two publishes, is reported", () => {
  const { ledger, track, data } = setup(2);
  ledger.message(track, id(1), { k: "never-sent" });
  ledger.message(track, id(2), data(1));
  assert.deepEqual(ledger.violations.map((v) => v.kind), ["phantom", "wrong-data"]);
});

test("a trimmed gap after more than historySize messages is expected and excuses what it covers", () => {
  const { ledger, track, data } = setup(15, { historySize: 10 });
  ledger.gap(track, { reason: "trimmed", since: id(0), resume: id(5) });
  for (let n = 6; n <= 15; n++) ledger.message(track, id(n), data(n));
  assert.equal(ledger.violations.length, 0, JSON.stringify(ledger.violations));
  assert.equal(ledger.gapsExpected, 1);
});

test("a trimmed gap while history still held the cursor is a violation", () => {
  const { ledger, track } = setup(5, { historySize: 10 });
  ledger.gap(track, { reason: "trimmed", since: id(0), resume: id(3) });
  assert.deepEqual(ledger.violations.map((v) => v.kind), ["unexpected-gap"]);
});

test("a gap that starts after the subscriber's position still loses what lies before it", () => {
  const { ledger, track, data } = setup(20, { historySize: 10 });
  ledger.message(track, id(1), data(1));
  ledger.gap(track, { reason: "trimmed", since: id(3), resume: id(10) });
  assert.deepEqual(ledger.violations.map((v) => [v.kind, v.ids[0]]), [["lost", id(2)], ["lost", id(3)]]);
});

test("unknown gaps: expected after a memory-node restart, never on a broker engine or without a restart", () => {
  const memory = setup(3, { memory: true });
  memory.ledger.gap(memory.track, { reason: "unknown", since: id(0), resume: id(3) });
  assert.deepEqual(memory.ledger.violations.map((v) => v.kind), ["unexpected-gap"]);
  const restarted = setup(3, { memory: true });
  restarted.tick(100);
  restarted.ledger.noteRestart();
  restarted.ledger.gap(restarted.track, { reason: "unknown", since: id(0), resume: id(3) });
  assert.equal(restarted.ledger.violations.length, 0);
  const broker = setup(3);
  broker.ledger.noteRestart();
  broker.ledger.gap(broker.track, { reason: "unknown", since: id(0), resume: id(3) });
  assert.deepEqual(broker.ledger.violations.map((v) => v.kind), ["unexpected-gap"]);
});
