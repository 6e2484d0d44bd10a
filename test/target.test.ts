/** Request targets (src/server/edge/target.ts): the pathname and query the hub reads are what WHATWG URL parsing gives. */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { parseTarget, targetPathname } from "../src/server/edge/target.js";

const TARGETS = [
  "/",
  "/api/messages",
  "/api/messages?",
  "/api/messages?channel=a&since=0&wait=20",
  "/api/messages?channel=a&channel=b",
  "/api/messages?channel=%61%2Fb&x=1+2&y=%zz&=v&k",
  '/api/messages?q="<>`{}|^\'',
  "/api/messages?channel=a#fragment?x=1",
  "/api/messages#x",
  "/api/messages/?channel=a",
  "/a/../api/messages?channel=a",
  "/api/./messages",
  "//api/messages?x=1",
  "/api/%6Dessages?x=1",
  "/api/messages?x=\u00e9&y=%C3%A9",
  "/api/messages?access_token=abc.def-ghi_jkl",
  "/api/messages??channel=a&?since=1",
  "/api/messages??channel=%61",
  "/api/messages?&&channel=a&&channel=&channel&=&since=0=1&since=2",
  "/api/messages?channel=a&limit=5&channel=b+c",
  "/api/messages?=x&channel=a",
  "/api/messages?%aa\u00e9",
];

for (const target of TARGETS) {
  test(`reads ${JSON.stringify(target)} as URL does`, () => {
    const url = new URL(target, "http://hub.invalid");
    const read = parseTarget(target);
    assert.equal(read.pathname, url.pathname);
    assert.equal(targetPathname(target), url.pathname);
    assert.deepEqual([...read.searchParams], [...url.searchParams]);
  });
}

test("queries of any shape read as URL reads them (property)", () => {
  // No spaces or control characters: a request line cannot carry them in its target (and URL trims them at the ends).
  const query = fc.string({ unit: fc.constantFrom("a", "b", "c", "=", "&", "&", "?", "%", "4", "1", "+", "é", '"', "#", "/"), maxLength: 24 });
  fc.assert(
    fc.property(query, (q) => {
      const target = `/api/messages?${q}`;
      const url = new URL(target, "http://hub.invalid");
      const read = parseTarget(target);
      assert.deepEqual([...read.searchParams], [...url.searchParams], target);
    }),
    { numRuns: 3000 },
  );
});
