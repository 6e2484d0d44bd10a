import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { channelMatches, compareIds, decodeCursor, encodeCursorMap, formatId, isId, isValidChannel, parseId } from "../src/protocol/index.js";

test("ids: parse, compare numerically (not as text)", () => {
  assert.deepEqual(parseId("12-3"), { major: 12, minor: 3 });
  assert.deepEqual(parseId("0"), { major: 0, minor: 0 });
  for (const bad of ["", "1", "-1-0", "1-", "a-1", "1-0-0", " 1-0", "1-0 ", "99999999999999999-0", "1.5-0"]) assert.equal(isId(bad), false, bad);
  assert.ok(compareIds("9-0", "10-0") < 0);
  assert.ok(compareIds("10-2", "10-10") < 0);
  assert.ok(compareIds("10-0", "0") > 0);
  assert.equal(compareIds("5-5", "5-5"), 0);
  assert.throws(() => compareIds("x", "1-0"), TypeError);
  for (const bad of ["1-", "-1", "1-a", "1e3-0", "0x1-0", " 1-0", "1-0-0", "99999999999999999-0"]) {
    assert.throws(() => compareIds(bad, "1-0"), TypeError, bad);
  }
});

test("ids: parseId and isId take exactly what the id pattern /^(\\d{1,16})-(\\d{1,16})$/ with safe integers takes (property)", () => {
  const pattern = /^(\d{1,16})-(\d{1,16})$/;
  const reference = (text: string): { major: number; minor: number } | null => {
    if (text === "0") return { major: 0, minor: 0 };
    const match = pattern.exec(text);
    if (!match) return null;
    const major = Number(match[1]);
    const minor = Number(match[2]);
    return Number.isSafeInteger(major) && Number.isSafeInteger(minor) ? { major, minor } : null;
  };
  // Mostly digits and dashes, so that near-ids (17 digits, two dashes, a dash at either end) come up often.
  const near = fc.string({ unit: fc.constantFrom("0", "1", "9", "-", "-", "a", " ", "٣", "+", "."), maxLength: 36 });
  const digits = (min: number, max: number) => fc.string({ unit: fc.constantFrom("0", "1", "5", "9"), minLength: min, maxLength: max });
  const shaped = fc.tuple(digits(0, 18), digits(0, 18)).map(([a, b]) => `${a}-${b}`);
  fc.assert(
    fc.property(fc.oneof(near, shaped, fc.string()), (text) => {
      assert.deepEqual(parseId(text), reference(text), JSON.stringify(text));
      assert.equal(isId(text), reference(text) !== null, JSON.stringify(text));
    }),
    { numRuns: 5000 },
  );
  for (const edge of ["9007199254740991-0", "9007199254740992-0", "0-9007199254740991", "0000000000000000-1", "00000000000000000-1"]) {
    assert.deepEqual(parseId(edge), reference(edge), edge);
  }
});

test("ids: compareIds orders any two valid ids as their numbers do (property)", () => {
  const safe = fc.maxSafeNat();
  const id = fc.oneof(fc.constant("0"), fc.tuple(safe, safe).map(([major, minor]) => formatId(major, minor)));
  fc.assert(
    fc.property(id, id, (a, b) => {
      const pa = parseId(a)!;
      const pb = parseId(b)!;
      const expected = Math.sign(pa.major - pb.major || pa.minor - pb.minor);
      assert.equal(Math.sign(compareIds(a, b)), expected);
      assert.equal(Math.sign(compareIds(b, a)) + expected, 0, "antisymmetric");
    }),
    { numRuns: 2000 },
  );
});

test("channels: allowed characters and length", () => {
  for (const ok of ["general", "a", "prices.BTC-USD", "user:42", "a_b", "x".repeat(128)]) assert.ok(isValidChannel(ok), ok);
  for (const bad of ["", "x".repeat(129), "a b", "a/b", "é", "a=b", "a;b", 5, null]) assert.equal(isValidChannel(bad), false, String(bad));
});

test("channel patterns", () => {
  assert.ok(channelMatches("*", "anything"));
  assert.ok(channelMatches("prices.*", "prices.BTC"));
  assert.ok(!channelMatches("prices.*", "pricesXBTC"));
  assert.ok(!channelMatches("prices.*", "chat.prices.x"));
  assert.ok(channelMatches("chat", "chat"));
  assert.ok(!channelMatches("chat", "chat2"));
});

test("cursors: plain id applies to every channel, maps round-trip", () => {
  assert.deepEqual([...decodeCursor("5-1", ["a", "b"])!], [["a", "5-1"], ["b", "5-1"]]);
  const map = new Map([["a", "1-0"], ["b.c:d", "2-3"]]);
  assert.equal(encodeCursorMap(map), "a=1-0;b.c:d=2-3");
  assert.deepEqual(decodeCursor(encodeCursorMap(map), ["a", "b.c:d"]), map);
  assert.deepEqual([...decodeCursor("a=1-0;zzz=2-0", ["a"])!], [["a", "1-0"]]);
  for (const bad of ["a=", "=1-0", "a=x", "a b=1-0", "a=1-0;;", "junk"]) assert.equal(decodeCursor(bad, ["a"]), null, bad);
});
