/**
 * The client's SSE reader (src/client/rungs/sse-lines.ts) against eventsource-parser, the reference: random
 * streams of events, comments and other fields, with LF, CRLF or CR line ends, fed in random pieces, give
 * the same events (type and data) in the same order.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { createParser } from "eventsource-parser";
import { sseLines } from "../src/client/rungs/sse-lines.js";

const text = fc.array(fc.constantFrom("a", "b", " ", ":", "{", "}", '"', "é", "1"), { maxLength: 12 }).map((a) => a.join(""));
const field = fc.oneof(
  text.map((v) => `data: ${v}`),
  text.map((v) => `data:${v}`),
  fc.constant("data"),
  fc.constantFrom("event: message", "event: gap", "event:ready", "event:", "event"),
  text.map((v) => `: ${v}`),
  text.map((v) => `id: ${v.replace(/\0/g, "")}`),
  fc.constant("retry: 1000"),
  fc.constant(""),
);

test("sseLines gives the events eventsource-parser gives, however the stream is cut", () => {
  fc.assert(
    fc.property(fc.array(field, { maxLength: 40 }), fc.constantFrom("\n", "\r\n", "\r"), fc.array(fc.nat(), { maxLength: 10 }), (lines, eol, cuts) => {
      const stream = lines.map((l) => l + eol).join("");
      const expected: Array<[string | undefined, string]> = [];
      const reference = createParser({ onEvent: (e) => expected.push([e.event, e.data]) });
      reference.feed(stream);
      const got: Array<[string | undefined, string]> = [];
      const feed = sseLines((e) => got.push([e.event, e.data]));
      const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      let at = 0;
      for (const point of [...points, stream.length]) {
        feed(stream.slice(at, point));
        at = point;
      }
      assert.deepEqual(got, expected);
    }),
    { numRuns: 2000 },
  );
});
