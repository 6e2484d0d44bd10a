/** Table-driven tests of the SSE encoder, checked against an independent parser (eventsource-parser). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { encodeComment, encodeEvent, type SseEvent } from "../src/protocol/index.js";

function parse(text: string): { events: EventSourceMessage[]; retry: number[]; comments: string[] } {
  const events: EventSourceMessage[] = [];
  const retry: number[] = [];
  const comments: string[] = [];
  const parser = createParser({ onEvent: (e) => events.push(e), onRetry: (r) => retry.push(r), onComment: (c) => comments.push(c) });
  parser.feed(text);
  return { events, retry, comments };
}

const cases: Array<{ name: string; event: SseEvent; wire: string; parsed?: Partial<EventSourceMessage> | null }> = [
  { name: "data only", event: { data: '{"price":142.1}' }, wire: 'data: {"price":142.1}\n\n', parsed: { data: '{"price":142.1}' } },
  { name: "id and data", event: { id: "48", data: "x" }, wire: "id: 48\ndata: x\n\n", parsed: { id: "48", data: "x" } },
  { name: "named event", event: { event: "gap", id: "1-0", data: "{}" }, wire: "event: gap\nid: 1-0\ndata: {}\n\n", parsed: { event: "gap", id: "1-0", data: "{}" } },
  { name: "multi-line data (LF)", event: { data: "a\nb" }, wire: "data: a\ndata: b\n\n", parsed: { data: "a\nb" } },
  { name: "multi-line data (CRLF and CR)", event: { data: "a\r\nb\rc" }, wire: "data: a\ndata: b\ndata: c\n\n", parsed: { data: "a\nb\nc" } },
  { name: "empty data line", event: { data: "" }, wire: "data: \n\n", parsed: { data: "" } },
  { name: "data with leading space keeps it", event: { data: " x" }, wire: "data:  x\n\n", parsed: { data: " x" } },
  { name: "data with colon", event: { data: "a: b" }, wire: "data: a: b\n\n", parsed: { data: "a: b" } },
  { name: "unicode", event: { data: "héllo ✓ \u2028" }, wire: "data: héllo ✓ \u2028\n\n", parsed: { data: "héllo ✓ \u2028" } },
  { name: "retry only", event: { retry: 2000 }, wire: "retry: 2000\n\n", parsed: null },
  { name: "id only sets lastEventId without an event", event: { id: "5-0" }, wire: "id: 5-0\n\n", parsed: null },
  { name: "composite id", event: { id: "a=1-0;b=2-3", data: "{}" }, wire: "id: a=1-0;b=2-3\ndata: {}\n\n", parsed: { id: "a=1-0;b=2-3" } },
];

for (const c of cases) {
  test(`encodeEvent: ${c.name}`, () => {
    const wire = encodeEvent(c.event);
    assert.equal(wire, c.wire);
    const { events, retry } = parse(wire);
    if (c.parsed === null) assert.equal(events.length, 0);
    else {
      assert.equal(events.length, 1);
      for (const [k, v] of Object.entries(c.parsed ?? {})) assert.equal(events[0]![k as keyof EventSourceMessage], v, k);
    }
    if (c.event.retry !== undefined) assert.deepEqual(retry, [c.event.retry]);
  });
}

const invalid: Array<{ name: string; event: SseEvent }> = [
  { name: "id with LF", event: { id: "a\nb" } },
  { name: "id with CR", event: { id: "a\rb" } },
  { name: "id with NUL", event: { id: "a\0b" } },
  { name: "event with LF", event: { event: "x\ny" } },
  { name: "negative retry", event: { retry: -1 } },
  { name: "fractional retry", event: { retry: 1.5 } },
];
for (const c of invalid) {
  test(`encodeEvent rejects ${c.name}`, () => assert.throws(() => encodeEvent(c.event), TypeError));
}

test("encodeComment is ignored by parsers and ends the block", () => {
  assert.equal(encodeComment(), ":\n\n");
  assert.equal(encodeComment("hb"), ": hb\n\n");
  const { events, comments } = parse(encodeComment("hb") + encodeEvent({ data: "x" }));
  assert.equal(events.length, 1);
  assert.equal(events[0]!.data, "x");
  assert.deepEqual(comments, ["hb"]);
});

test("a stream of events split at every byte parses to the same events", () => {
  const wire = encodeEvent({ retry: 10 }) + encodeEvent({ id: "1-0", data: "a\nb" }) + encodeComment() + encodeEvent({ event: "gap", data: "{}" });
  const whole = parse(wire).events;
  const events: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (e) => events.push(e) });
  for (const ch of wire) parser.feed(ch);
  assert.deepEqual(events, whole);
  assert.equal(events.length, 2);
});
