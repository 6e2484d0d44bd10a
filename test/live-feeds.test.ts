/**
 * LiveFeeds, the broker engines' live delivery, against a scripted history: a message whose `prev` is
 * past the last delivered id triggers a catch-up from history, a reconnect catches every feed up, and
 * listeners see each id once, in order, whatever the live path does.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ReadResult } from "../src/engines/engine.js";
import { LiveFeeds } from "../src/engines/live-feeds.js";
import { compareIds, type Message } from "../src/protocol/index.js";

/** A channel log the feeds read from, and the live path's calls. */
function harness(options: { failReads?: number } = {}) {
  const log: Message[] = [];
  let failReads = options.failReads ?? 0;
  const opened: string[] = [];
  const closed: string[] = [];
  const read = async (channel: string, since: string | null, limit: number): Promise<ReadResult> => {
    await new Promise((resolve) => setTimeout(resolve, 1));
    if (failReads > 0 && since !== null) {
      failReads--;
      throw new Error("broker down");
    }
    const last = log.at(-1)?.id ?? "1-0";
    if (since === null) return { messages: [], gap: null, cursor: last };
    const messages = log.filter((m) => m.channel === channel && compareIds(m.id, since) > 0).slice(0, limit);
    return { messages, gap: null, cursor: messages.at(-1)?.id ?? since };
  };
  const feeds = new LiveFeeds({
    read,
    live: { open: async (ch) => void opened.push(ch), close: (ch) => void closed.push(ch) },
    logger: { warn: () => {}, info: () => {} },
  });
  let seq = 1;
  const append = (channel: string): Message => {
    const message = { id: `1-${seq++}`, channel, data: seq, time: 0 };
    log.push(message);
    return message;
  };
  return { feeds, log, append, opened, closed };
}

const settle = (ms = 30): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

test("contiguous live messages pass straight through; stale ones are dropped", async () => {
  const { feeds, append } = harness();
  const got: string[] = [];
  await feeds.subscribe("a", (m) => got.push(m.id));
  const m1 = append("a");
  const m2 = append("a");
  feeds.deliver("a", m1, "1-0");
  feeds.deliver("a", m2, m1.id);
  feeds.deliver("a", m1, "1-0");
  assert.deepEqual(got, [m1.id, m2.id]);
});

test("a message whose predecessor was missed makes the feed read it from history first", async () => {
  const { feeds, append } = harness();
  const got: string[] = [];
  await feeds.subscribe("a", (m) => got.push(m.id));
  const m1 = append("a");
  const m2 = append("a");
  const m3 = append("a");
  feeds.deliver("a", m3, m2.id); // m1 and m2 never arrived live
  feeds.deliver("a", m2, m1.id); // late: already read from history
  await settle();
  assert.deepEqual(got, [m1.id, m2.id, m3.id]);
});

test("catchUpAll after a reconnect delivers what was published meanwhile, and retries failed reads", async () => {
  const { feeds, append } = harness({ failReads: 2 });
  const got: string[] = [];
  await feeds.subscribe("a", (m) => got.push(m.id));
  const missed = [append("a"), append("a")];
  feeds.catchUpAll();
  await new Promise((resolve) => setTimeout(resolve, 600));
  assert.deepEqual(got, missed.map((m) => m.id));
});

test("messages arriving while a feed opens are held, then delivered once", async () => {
  const { feeds, append } = harness();
  const got: string[] = [];
  const subscribing = feeds.subscribe("a", (m) => got.push(m.id));
  const early = append("a"); // before the position is read: dropped (published before subscribe resolved)
  feeds.deliver("a", early, "1-0");
  await subscribing;
  const later = append("a");
  feeds.deliver("a", later, early.id);
  assert.deepEqual(got, [later.id]);
});

test("the live path is opened once per channel and closed with the last listener", async () => {
  const { feeds, opened, closed } = harness();
  const off1 = await feeds.subscribe("a", () => {});
  const off2 = await feeds.subscribe("a", () => {});
  assert.deepEqual(opened, ["a"]);
  off1();
  assert.deepEqual(closed, []);
  off2();
  assert.deepEqual(closed, ["a"]);
});
