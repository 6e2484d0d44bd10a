import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffCeiling, backoffDelay, DEFAULT_BACKOFF } from "../src/client/backoff.js";

test("the ceiling grows exponentially and is capped", () => {
  const o = { minMs: 100, maxMs: 1000, factor: 2 };
  assert.deepEqual([0, 1, 2, 3, 4, 5, 50].map((n) => backoffCeiling(n, o)), [100, 200, 400, 800, 1000, 1000, 1000]);
  assert.equal(backoffCeiling(-3, o), 100);
});

test("full jitter: delays lie in [0, ceiling) and follow the random source", () => {
  const o = { minMs: 100, maxMs: 1000, factor: 2 };
  assert.equal(backoffDelay(3, o, () => 0), 0);
  assert.equal(backoffDelay(3, o, () => 0.5), 400);
  assert.equal(backoffDelay(3, o, () => 0.999999), 799);
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(i % 8, DEFAULT_BACKOFF);
    assert.ok(d >= 0 && d < backoffCeiling(i % 8, DEFAULT_BACKOFF));
  }
});

test("many clients at the same attempt spread over the window (no 100 ms slot holds a crowd)", () => {
  let state = 42;
  const random = (): number => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const delays = Array.from({ length: 10_000 }, () => backoffDelay(4, DEFAULT_BACKOFF, random));
  const buckets = new Array(Math.ceil(backoffCeiling(4) / 100)).fill(0) as number[];
  for (const d of delays) buckets[Math.floor(d / 100)]!++;
  const expected = delays.length / buckets.length;
  assert.ok(Math.max(...buckets) < expected * 1.5, `busiest slot ${Math.max(...buckets)} vs mean ${expected}`);
});
