/**
 * The NATS engine's history reads: a channel's messages after a cursor, and the gap before them.
 *
 * A page is one direct get, then a short-lived consumer for the rest. Each stored message names the
 * channel's previous one in its `Ladder-Prev` header (see nats.ts), so the first message after a cursor
 * tells whether anything between was dropped, and a hole inside a page shows where the limits trimmed
 * the subject while it was being read.
 */
import type { Msg, MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { formatId, parseId, START_CURSOR, type Gap, type Message, type MessageId } from "../protocol/index.js";
import type { ReadResult } from "./engine.js";

/** The engine's connection: what both its publish path and its reads use. */
export interface Nats {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly headers: () => MsgHdrs;
  readonly createInbox: () => string;
}

export interface Stored {
  readonly seq: number;
  readonly prev: number;
  readonly time: number;
  readonly data: unknown;
}

export interface StreamState {
  readonly epoch: number;
  readonly first: number;
  readonly last: number;
}

export const PREV_HEADER = "Ladder-Prev";
export const TIME_HEADER = "Ladder-Time";
export const NANOS_PER_MS = 1_000_000;

/** What a read needs of the engine: the stream it reads, its clock and age limit, and its view of the stream. */
export interface HistorySource {
  readonly stream: string;
  readonly timeoutMs: number;
  readonly maxAgeMs: number;
  now(): number;
  /** The stream's epoch and sequences, read now (the engine adopts a new epoch on the way). */
  state(nats: Nats): Promise<StreamState>;
  subject(channel: string, epoch: number): string;
  lastSubjectSeq(nats: Nats, subject: string): Promise<number>;
}

export async function readHistory(source: HistorySource, nats: Nats, channel: string, since: MessageId | null, limit: number): Promise<ReadResult> {
  const state = await source.state(nats);
  const position = formatId(state.epoch, state.last);
  if (since === null) return { messages: [], gap: null, cursor: position };
  const subject = source.subject(channel, state.epoch);
  const cursor = since === START_CURSOR ? null : parseId(since);
  if (cursor !== null && (cursor.major > state.epoch || (cursor.major === state.epoch && cursor.minor > state.last))) {
    // An id this stream never issued.
    return { messages: [], gap: { channel, reason: "unknown", since, resume: position }, cursor: position };
  }
  // A cursor from an older epoch: the stream was recreated since, so what it missed cannot be told.
  const foreign = cursor !== null && cursor.major < state.epoch;
  const after = cursor === null || foreign ? 0 : cursor.minor;
  const page = await readPage(source, nats, subject, after, limit);
  const messages = page.stored.map((s) => toMessage(channel, state.epoch, s));
  const last = messages.at(-1)?.id ?? position;
  if (cursor === null) return { messages, gap: null, cursor: last };
  let gap: Gap | null = null;
  if (foreign) {
    const resume = page.found ? formatId(state.epoch, page.horizon) : position;
    gap = { channel, reason: "unknown", since, resume };
  } else if (page.horizon > after) {
    gap = { channel, reason: "trimmed", since, resume: formatId(state.epoch, page.horizon) };
  } else if (!page.found && after < state.first - 1 && (await source.lastSubjectSeq(nats, subject)) === 0) {
    // The channel holds nothing and the stream dropped everything up to first-1: whatever the channel
    // had after the cursor was among it, if it had anything.
    gap = { channel, reason: "trimmed", since, resume: formatId(state.epoch, state.first - 1) };
  }
  // With nothing returned, the position read before fetching is safe: anything newer has a larger sequence.
  return { messages, gap, cursor: last };
}

export function toMessage(channel: string, epoch: number, stored: Stored): Message {
  return { id: formatId(epoch, stored.seq), channel, data: stored.data, time: stored.time };
}

/**
 * Messages of a subject after a sequence, at most `limit`, and the horizon: the newest sequence of
 * that subject known dropped after `after` (by JetStream's limits, or past the age limit by our clock,
 * which JetStream applies only on its own timer).
 */
async function readPage(source: HistorySource, nats: Nats, subject: string, after: number, limit: number): Promise<{ stored: Stored[]; horizon: number; found: boolean }> {
  const cutoff = source.now() - source.maxAgeMs;
  const kept: Stored[] = [];
  let horizon = 0;
  let found = false;
  let from = after + 1;
  // A page takes several requests (a direct get, then a consumer), and the limits may trim the subject
  // between them. Each message names its predecessor, so a hole inside the page shows; limits drop the
  // oldest first, so whatever the page held before the hole is gone too: the gap runs up to the hole.
  let previous = 0;
  while (kept.length < limit) {
    const wanted = limit - kept.length;
    const batch = await fetchFrom(source, nats, subject, from, wanted);
    for (const stored of batch) {
      if (found && stored.prev > previous) kept.length = 0;
      if (!found || stored.prev > previous) horizon = Math.max(horizon, stored.prev);
      found = true;
      previous = stored.seq;
      if (kept.length === 0 && stored.time < cutoff) horizon = Math.max(horizon, stored.seq);
      else kept.push(stored);
    }
    if (batch.length < wanted) break;
    from = batch.at(-1)!.seq + 1;
  }
  return { stored: kept, horizon, found };
}

/** Up to `count` messages of a subject from a sequence on: one direct get, then a short-lived consumer. */
async function fetchFrom(source: HistorySource, nats: Nats, subject: string, from: number, count: number): Promise<Stored[]> {
  const first = await nats.jsm.direct.getMessage(source.stream, { seq: from, next_by_subj: subject });
  if (!first) return [];
  const out = [storedFrom(first.seq, first.header, first.data)];
  if (count > 1) out.push(...(await fetchWithConsumer(source, nats, subject, first.seq + 1, count - 1)));
  return out;
}

async function fetchWithConsumer(source: HistorySource, nats: Nats, subject: string, from: number, count: number): Promise<Stored[]> {
  const info = await nats.jsm.consumers.add(source.stream, {
    ack_policy: "none",
    deliver_policy: "by_start_sequence",
    opt_start_seq: from,
    filter_subject: subject,
    mem_storage: true,
    num_replicas: 1,
    inactive_threshold: 30_000 * NANOS_PER_MS,
  });
  const release = (): void => void nats.jsm.consumers.delete(source.stream, info.name).catch(() => {});
  const wanted = Math.min(count, info.num_pending);
  if (wanted === 0) {
    release();
    return [];
  }
  try {
    return await pull(source, nats, info.name, wanted);
  } finally {
    release();
  }
}

/** One pull request with no_wait: the consumer sends what it has, up to `count`, then a 404 status. */
async function pull(source: HistorySource, nats: Nats, consumer: string, count: number): Promise<Stored[]> {
  const inbox = nats.createInbox();
  const out: Stored[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`pull from consumer ${consumer} timed out`));
    }, source.timeoutMs);
    const sub = nats.nc.subscribe(inbox, {
      callback: (error, msg) => {
        const done = (failure?: Error): void => {
          clearTimeout(timer);
          sub.unsubscribe();
          if (failure) reject(failure);
          else resolve();
        };
        if (error) return done(error);
        if (isStatus(msg)) return done();
        const seq = ackSequence(msg.reply);
        if (seq === null) return done(new Error(`unexpected JetStream reply subject ${msg.reply}`));
        out.push(storedFrom(seq, msg.headers, msg.data));
        if (out.length >= count) done();
      },
    });
    nats.nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${source.stream}.${consumer}`, JSON.stringify({ batch: count, no_wait: true }), { reply: inbox });
  });
  return out;
}

export function storedFrom(seq: number, header: MsgHdrs | undefined, data: Uint8Array): Stored {
  const prev = Number(header?.get(PREV_HEADER) || 0);
  const time = Number(header?.get(TIME_HEADER) || 0);
  return { seq, prev: Number.isSafeInteger(prev) ? prev : 0, time, data: JSON.parse(new TextDecoder().decode(data)) as unknown };
}

/** The stream sequence in a JetStream delivery's reply subject (`$JS.ACK.<stream>.<consumer>.<n>.<sseq>…`). */
function ackSequence(reply: string | undefined): number | null {
  const tokens = (reply ?? "").split(".");
  if (tokens[0] !== "$JS" || tokens[1] !== "ACK") return null;
  // v1: $JS.ACK.stream.consumer.delivered.sseq.cseq.ts.pending; v2 adds domain and account hash.
  const seq = Number(tokens.length === 9 ? tokens[5] : tokens[7]);
  return Number.isSafeInteger(seq) ? seq : null;
}

function isStatus(msg: Msg): boolean {
  return msg.data.length === 0 && msg.headers !== undefined && msg.headers.code >= 100;
}
