/**
 * NATS JetStream engine: many hub nodes share one JetStream stream holding every channel's history,
 * one subject per channel, bounded per subject by count (`max_msgs_per_subject`) and by age (`max_age`).
 *
 * Ids are `<epoch>-<stream sequence>`. The epoch is the stream's creation time, written into its
 * subjects (`<prefix>.msg.<epoch>.<channel>`): a recreated stream has a larger epoch, so its ids sort
 * after every old one, an old cursor is answered with an `unknown` gap, and a node that still thinks
 * in the old epoch publishes to a subject no stream captures, gets "no responders" and looks again.
 *
 * Exact gaps need each message to name the channel's previous message. A publish carries
 * `Ladder-Prev: <seq>` and asks JetStream to store it only if that is still the subject's last sequence
 * (`Nats-Expected-Last-Subject-Sequence`); a race with another node is retried with the sequence the
 * refusal names. The first retained message after a cursor then tells whether anything between was
 * dropped (the reads are in nats-read.ts).
 *
 * Live fan-out is the stream's republish: JetStream itself sends each stored message to
 * `<prefix>.live.<epoch>.<channel>` with its sequence and the subject's previous one, and
 * {@link LiveFeeds} reads from the stream whatever a node missed. The client library is loaded on first
 * use, so importing this module costs nothing.
 */
import type { Logger } from "pino";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import type { StreamConfig, StreamInfo } from "@nats-io/jetstream";
import { formatId, LadderError, type MessageId } from "../protocol/index.js";
import { DEDUPE_WINDOW_MS, type Engine, type HistoryLimits, type MessageListener, type Published, type ReadResult } from "./engine.js";
import { LiveFeeds } from "./live-feeds.js";
import { NANOS_PER_MS, PREV_HEADER, readHistory, storedFrom, TIME_HEADER, toMessage, type HistorySource, type Nats, type Stored, type StreamState } from "./nats-read.js";
import { StartGate } from "./start-gate.js";

export interface NatsEngineOptions extends HistoryLimits {
  /**
   * `nats://[user:pass@]host:port`. Query parameters: `stream` (default `LADDER`), `prefix` (subject prefix,
   * default `ladder`), `replicas`, `max_bytes`.
   */
  readonly url: string;
  readonly stream?: string;
  readonly prefix?: string;
  readonly replicas?: number;
  /**
   * The stream's `max_bytes`: past it JetStream discards the oldest messages of any channel (discard
   * `old`), and a reader whose cursor they covered gets a `trimmed` gap. Default: no limit (-1).
   */
  readonly maxBytes?: number;
  /** A request that takes longer fails (and a publish answers 503). Default 2000 ms. */
  readonly requestTimeoutMs?: number;
  /**
   * For this long after the engine is made, a read or subscribe waits for the first connection instead
   * of failing (a hub's first requests race its broker connection). Default 5000 ms.
   */
  readonly startTimeoutMs?: number;
  /** Overrides the clock for message times and the age limit (tests move time). */
  readonly now?: () => number;
  readonly logger?: Logger;
}

const DEFAULT_STREAM = "LADDER";
const DEFAULT_PREFIX = "ladder";
/** JetStream's "wrong last sequence" refusal of an expected-last-subject-sequence publish. */
const WRONG_LAST_SEQUENCE = 10071;
/** Retries when other nodes publish to the same channel at the same moment (each retry a fair race). */
const PUBLISH_ATTEMPTS = 200;
/** Channels whose last sequence a node remembers, to publish in one round trip. */
const LAST_SEQ_CACHE = 10_000;

/** A channel name as one subject token: `.` separates tokens, so it is escaped (and `_`, the escape). */
export function subjectToken(channel: string): string {
  return channel.replace(/_/g, "__").replace(/\./g, "_d");
}

type NatsUrl = { servers: string; user?: string; pass?: string; stream?: string; prefix?: string; replicas?: number; maxBytes?: number };

export function parseNatsUrl(url: string): NatsUrl {
  const parsed = new URL(url);
  if (parsed.protocol !== "nats:") throw new TypeError(`not a nats URL: ${parsed.protocol}`);
  const out: NatsUrl = {
    servers: `${parsed.hostname}:${parsed.port || "4222"}`,
  };
  if (parsed.username) out.user = decodeURIComponent(parsed.username);
  if (parsed.password) out.pass = decodeURIComponent(parsed.password);
  const stream = parsed.searchParams.get("stream");
  const prefix = parsed.searchParams.get("prefix");
  const replicas = parsed.searchParams.get("replicas");
  if (stream) out.stream = stream;
  if (prefix) out.prefix = prefix;
  if (replicas) out.replicas = Number(replicas);
  const maxBytes = parsed.searchParams.get("max_bytes");
  if (maxBytes) {
    if (!/^[1-9]\d*$/.test(maxBytes)) throw new TypeError(`nats URL: max_bytes must be a whole number of bytes, got ${JSON.stringify(maxBytes)}`);
    out.maxBytes = Number(maxBytes);
  }
  return out;
}

export class NatsEngine implements Engine {
  readonly name = "nats";
  readonly #options: NatsEngineOptions;
  readonly #url: ReturnType<typeof parseNatsUrl>;
  readonly #stream: string;
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #logger: Pick<Logger, "info" | "warn">;
  readonly #feeds: LiveFeeds;
  readonly #liveSubs = new Map<string, Subscription>();
  /** Last known sequence per channel subject, so a publish can state it without asking first. */
  readonly #lastSeq = new Map<string, number>();
  readonly #onDisconnect = new Set<(error: Error) => void>();
  readonly #queues = new Map<string, Promise<void>>();
  readonly #gate: StartGate;
  readonly #history: HistorySource;
  #nats: Nats | null = null;
  #epoch = 0;
  #connected = false;
  /** The stream was found (or made) since the last (re)connect. */
  #streamOk = false;
  #closed = false;

  constructor(options: NatsEngineOptions) {
    this.#options = options;
    this.#url = parseNatsUrl(options.url);
    this.#stream = options.stream ?? this.#url.stream ?? DEFAULT_STREAM;
    this.#prefix = options.prefix ?? this.#url.prefix ?? DEFAULT_PREFIX;
    if (!/^[A-Za-z0-9_-]+$/.test(this.#stream)) throw new TypeError("NATS stream name must be letters, digits, _ or -");
    if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(this.#prefix)) throw new TypeError("NATS subject prefix must be dot-separated tokens of letters, digits, _ or -");
    this.#timeoutMs = options.requestTimeoutMs ?? 2000;
    this.#logger = options.logger ?? { info: () => {}, warn: () => {} };
    this.#feeds = new LiveFeeds({
      read: (channel, since, limit) => this.read(channel, since, limit),
      live: { open: (channel) => this.#openLive(channel), close: (channel) => this.#closeLive(channel) },
      logger: this.#logger,
    });
    this.#gate = new StartGate(() => this.#start(), options.startTimeoutMs ?? 5000);
    this.#history = {
      stream: this.#stream,
      timeoutMs: this.#timeoutMs,
      maxAgeMs: options.maxAgeMs,
      now: () => this.#now(),
      state: (nats) => this.#state(nats),
      subject: (channel, epoch) => this.#subject(channel, epoch),
      lastSubjectSeq: (nats, subject) => this.#lastSubjectSeq(nats, subject),
    };
  }

  ready(): boolean {
    return !this.#closed && this.#connected && this.#streamOk && this.#nats !== null;
  }

  /** Resolves once connected and the stream is known (for callers that want to wait). */
  async whenReady(timeoutMs = this.#options.startTimeoutMs ?? 5000): Promise<void> {
    await this.#whenStarted(timeoutMs);
  }

  async publish(channel: string, data: unknown, _encodedBytes?: number, key?: string): Promise<Published> {
    const nats = this.#readyNats();
    const time = this.#now();
    const payload = JSON.stringify(data);
    const { seq, duplicate } = await this.#failFast(() => this.#serialized(channel, () => this.#append(nats, channel, payload, time, key)));
    const message = { id: formatId(this.#epoch, seq), channel, data, time };
    // JetStream's ack of a duplicate names the first copy's sequence (its time is not read back: this one's is given).
    return duplicate ? { ...message, duplicate: true } : message;
  }

  async read(channel: string, since: MessageId | null, limit: number): Promise<ReadResult> {
    const nats = await this.#whenStarted();
    try {
      return await readHistory(this.#history, nats, channel, since, limit);
    } catch (error) {
      throw this.#unavailable(error);
    }
  }

  async subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    await this.#whenStarted();
    return this.#feeds.subscribe(channel, listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#feeds.close();
    const nats = this.#nats;
    this.#nats = null;
    await nats?.nc.close().catch(() => {});
    // A connection still being made (broker down at start) is closed by #start when it returns.
  }

  // ---- subjects and time

  #subject(channel: string, epoch = this.#epoch): string {
    return `${this.#prefix}.msg.${epoch}.${subjectToken(channel)}`;
  }

  #now(): number {
    return Math.floor(this.#options.now ? this.#options.now() : Date.now());
  }

  // ---- connection

  async #start(): Promise<void> {
    const { connect, headers, createInbox } = await import("@nats-io/transport-node");
    const { jetstream, jetstreamManager } = await import("@nats-io/jetstream");
    let nc: NatsConnection | null = null;
    // Keep trying until the broker answers, so a node can start before it (a loop of our own rather
    // than waitOnFirstConnect, so that close() also ends the waiting).
    for (let delay = 100; !nc; delay = Math.min(delay * 2, 2000)) {
      if (this.#closed) return;
      try {
        nc = await connect({
          servers: this.#url.servers,
          name: "ladder",
          ...(this.#url.user !== undefined ? { user: this.#url.user } : {}),
          ...(this.#url.pass !== undefined ? { pass: this.#url.pass } : {}),
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
          timeout: 2000,
          pingInterval: 5000,
        });
      } catch (error) {
        if (delay === 100) this.#logger.warn({ engine: "nats", err: error }, "nats not reachable yet; retrying");
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
      }
    }
    if (this.#closed) {
      await nc.close();
      return;
    }
    // No API check here: JetStream may still be starting; #findStream retries until the stream answers.
    const jsm = await jetstreamManager(nc, { timeout: this.#timeoutMs, checkAPI: false });
    const nats: Nats = { nc, js: jetstream(nc, { timeout: this.#timeoutMs }), jsm, headers, createInbox };
    this.#nats = nats;
    this.#connected = true;
    void this.#watch(nats);
    await this.#findStream(nats);
  }

  /** The connection once started; waits for the first start only, afterwards an outage fails at once. */
  async #whenStarted(timeoutMs?: number): Promise<Nats> {
    await this.#gate.wait(this.ready() || this.#closed, timeoutMs);
    return this.#readyNats();
  }

  #readyNats(): Nats {
    if (this.#closed) throw new LadderError("unavailable", "nats engine is closed");
    if (!this.ready()) throw new LadderError("unavailable", "nats is unreachable; not accepting publishes");
    return this.#nats!;
  }

  async #watch(nats: Nats): Promise<void> {
    for await (const status of nats.nc.status()) {
      if (this.#closed) return;
      if (status.type === "disconnect") {
        this.#connected = false;
        this.#streamOk = false;
        this.#logger.warn({ engine: "nats" }, "nats connection lost; publishes answer 503 until it is back");
        const error = new LadderError("unavailable", "nats connection lost");
        for (const reject of this.#onDisconnect) reject(error);
      } else if (status.type === "reconnect") {
        this.#connected = true;
        void this.#findStream(nats);
      }
    }
  }

  /**
   * At start and after each reconnect: find the stream (JetStream may need a moment after a broker
   * restart), then catch every feed up from where it was.
   */
  async #findStream(nats: Nats): Promise<void> {
    for (let delay = 100; this.#connected && !this.#closed; delay = Math.min(delay * 2, 2000)) {
      try {
        await this.#verifyStream(nats);
        this.#logger.info({ engine: "nats", stream: this.#stream, epoch: this.#epoch }, "nats engine ready");
        this.#feeds.catchUpAll();
        return;
      } catch (error) {
        this.#logger.warn({ engine: "nats", err: error }, "nats stream not available yet; retrying");
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
      }
    }
  }

  /** Rejects an in-flight request as soon as the connection drops instead of when it times out. */
  async #failFast<T>(work: () => Promise<T>): Promise<T> {
    let reject: (error: Error) => void = () => {};
    const dropped = new Promise<never>((_, r) => (reject = r));
    this.#onDisconnect.add(reject);
    try {
      return await Promise.race([work(), dropped]);
    } catch (error) {
      throw this.#unavailable(error);
    } finally {
      this.#onDisconnect.delete(reject);
    }
  }

  #unavailable(error: unknown): LadderError {
    if (error instanceof LadderError) return error;
    return new LadderError("unavailable", `nats: ${(error as Error).message}`);
  }

  // ---- the stream

  /** Finds the stream (or creates it), adopting its epoch and bringing its limits to ours. */
  async #verifyStream(nats: Nats): Promise<StreamState> {
    let info: StreamInfo;
    try {
      info = await nats.jsm.streams.info(this.#stream);
    } catch (error) {
      if (!isStreamNotFound(error)) throw error;
      info = await this.#createStream(nats);
    }
    const state = this.#adopt(info);
    const limits = this.#limits();
    if (info.config.max_msgs_per_subject !== limits.max_msgs_per_subject || info.config.max_age !== limits.max_age || info.config.max_bytes !== limits.max_bytes) {
      this.#logger.warn({ engine: "nats", stream: this.#stream }, "stream limits differ from this node's history settings; updating the stream");
      await nats.jsm.streams.update(this.#stream, limits);
    }
    this.#streamOk = true;
    return state;
  }

  async #createStream(nats: Nats): Promise<StreamInfo> {
    const epoch = Date.now();
    const config: Partial<StreamConfig> & { name: string } = {
      name: this.#stream,
      description: `Ladder channel log, epoch ${epoch}`,
      subjects: [`${this.#prefix}.msg.${epoch}.*`],
      retention: "limits",
      storage: "file",
      discard: "old",
      num_replicas: this.#options.replicas ?? this.#url.replicas ?? 1,
      allow_direct: true,
      republish: { src: `${this.#prefix}.msg.${epoch}.*`, dest: `${this.#prefix}.live.${epoch}.{{wildcard(1)}}` },
      ...this.#limits(),
    };
    try {
      return await nats.jsm.streams.add(config);
    } catch (error) {
      // Another node created it first (with its own epoch): use theirs.
      this.#logger.info({ engine: "nats", err: error }, "stream create raced; using the existing stream");
      return nats.jsm.streams.info(this.#stream);
    }
  }

  #limits(): { max_msgs_per_subject: number; max_age: number; max_bytes: number; duplicate_window: number } {
    const maxAge = this.#options.maxAgeMs * NANOS_PER_MS;
    const maxBytes = this.#options.maxBytes ?? this.#url.maxBytes ?? -1;
    // JetStream refuses a duplicate window longer than max_age.
    return { max_msgs_per_subject: this.#options.maxCount, max_age: maxAge, max_bytes: maxBytes, duplicate_window: Math.min(maxAge, DEDUPE_WINDOW_MS * NANOS_PER_MS) };
  }

  /** Reads the epoch from the stream's subject; a new epoch means the stream was recreated. */
  #adopt(info: StreamInfo): StreamState {
    const subject = info.config.subjects?.[0] ?? "";
    const match = new RegExp(`^${this.#prefix.replace(/\./g, "\\.")}\\.msg\\.(\\d+)\\.\\*$`).exec(subject);
    if (!match) throw new Error(`stream ${this.#stream} is not a Ladder stream for prefix ${this.#prefix} (subjects ${subject})`);
    const epoch = Number(match[1]);
    if (epoch !== this.#epoch) {
      if (this.#epoch !== 0) this.#logger.warn({ engine: "nats", from: this.#epoch, to: epoch }, "stream was recreated; old cursors get an unknown gap");
      this.#epoch = epoch;
      this.#lastSeq.clear();
    }
    return { epoch, first: info.state.first_seq, last: info.state.last_seq };
  }

  async #state(nats: Nats): Promise<StreamState> {
    try {
      return this.#adopt(await nats.jsm.streams.info(this.#stream));
    } catch (error) {
      if (!isStreamNotFound(error)) throw error;
      return this.#verifyStream(nats);
    }
  }

  // ---- publish

  /**
   * Appends with the channel's previous sequence as both an expectation and a header, so each stored
   * message names its predecessor. Retries when another node got there first or the epoch moved.
   */
  async #append(nats: Nats, channel: string, payload: string, time: number, key: string | undefined): Promise<{ seq: number; duplicate: boolean }> {
    let refreshed = false;
    for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
      // Queued behind other publishes of the channel: the broker may have gone away meanwhile.
      if (!this.ready()) throw new LadderError("unavailable", "nats is unreachable; not accepting publishes");
      const subject = this.#subject(channel);
      try {
        const prev = this.#lastSeq.get(subject) ?? (await this.#lastSubjectSeq(nats, subject));
        const h = nats.headers();
        h.set(PREV_HEADER, String(prev > 0 ? prev : await this.#emptySubjectBound(nats)));
        h.set(TIME_HEADER, String(time));
        // The idempotency key is JetStream's own dedupe id (the stream's duplicate_window), per channel.
        const msgID = key === undefined ? undefined : `${key}:${channel}`;
        const ack = await nats.js.publish(subject, payload, { headers: h, msgID, expect: { lastSubjectSequence: prev }, timeout: this.#timeoutMs });
        if (ack.duplicate) return { seq: ack.seq, duplicate: true };
        this.#remember(subject, ack.seq);
        return { seq: ack.seq, duplicate: false };
      } catch (error) {
        if (isWrongLastSequence(error)) {
          // Another node published to the channel meanwhile; the refusal usually says what is last now.
          const actual = /wrong last sequence: (\d+)/.exec(String((error as Error).message));
          if (actual) this.#remember(subject, Number(actual[1]));
          else this.#lastSeq.delete(subject);
          // Retried at once at first: the node that won goes straight on with its next publish, so waiting
          // would only lose the next race too. After a run of losses (a busy peer, a loaded machine) a short
          // random pause breaks the lockstep instead of failing the publish.
          if (attempt >= 5) await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, attempt)));
          continue;
        }
        if (!refreshed && (isNoResponders(error) || isStreamNotFound(error))) {
          // No stream captures the subject: the stream was recreated (new epoch) or deleted.
          refreshed = true;
          await this.#verifyStream(nats);
          continue;
        }
        throw error;
      }
    }
    throw new LadderError("unavailable", `nats: channel ${channel} is too contended; try again`);
  }

  /**
   * Runs one channel's publishes from this node one after another: each must name the one before it,
   * so concurrent ones would only refuse each other.
   */
  #serialized<T>(channel: string, work: () => Promise<T>): Promise<T> {
    const before = this.#queues.get(channel) ?? Promise.resolve();
    const run = before.then(work, work);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.#queues.set(channel, tail);
    void tail.then(() => {
      if (this.#queues.get(channel) === tail) this.#queues.delete(channel);
    });
    return run;
  }

  #remember(subject: string, seq: number): void {
    this.#lastSeq.delete(subject);
    this.#lastSeq.set(subject, seq);
    if (this.#lastSeq.size > LAST_SEQ_CACHE) this.#lastSeq.delete(this.#lastSeq.keys().next().value!);
  }

  async #lastSubjectSeq(nats: Nats, subject: string): Promise<number> {
    // The stream API rather than a direct get: it answers "stream not found" at once where a direct get
    // to a deleted stream only times out.
    const last = await nats.jsm.streams.getMessage(this.#stream, { last_by_subj: subject });
    return last?.seq ?? 0;
  }

  /**
   * The channel holds nothing (never did, or all aged out). Everything it ever held is older than the
   * stream's first retained message, so the sequence before that bounds what was dropped.
   */
  async #emptySubjectBound(nats: Nats): Promise<number> {
    const { first } = await this.#state(nats);
    return Math.max(0, first - 1);
  }

  // ---- live

  async #openLive(channel: string): Promise<void> {
    const nats = this.#readyNats();
    // Any epoch: a message from a recreated stream shows up here and makes the feed catch up.
    const sub = nats.nc.subscribe(`${this.#prefix}.live.*.${subjectToken(channel)}`, { callback: (_error, msg) => this.#onLive(channel, msg) });
    this.#liveSubs.set(channel, sub);
    try {
      // Once flushed, the server has the subscription: nothing published from here on is missed.
      await nats.nc.flush();
    } catch (error) {
      throw this.#unavailable(error);
    }
  }

  #closeLive(channel: string): void {
    const sub = this.#liveSubs.get(channel);
    this.#liveSubs.delete(channel);
    if (sub && !sub.isClosed()) sub.unsubscribe();
  }

  #onLive(channel: string, msg: Msg): void {
    const epoch = Number(msg.subject.split(".").at(-2));
    const seq = Number(msg.headers?.get("Nats-Sequence"));
    const prev = Number(msg.headers?.get("Nats-Last-Sequence") || 0);
    if (!Number.isSafeInteger(epoch) || !Number.isSafeInteger(seq) || seq <= 0) return;
    let stored: Stored;
    try {
      stored = storedFrom(seq, msg.headers, msg.data);
    } catch {
      return;
    }
    if (epoch === this.#epoch) this.#remember(this.#subject(channel, epoch), seq);
    this.#feeds.deliver(channel, toMessage(channel, epoch, stored), formatId(epoch, prev));
  }
}

function isStreamNotFound(error: unknown): boolean {
  return (error as { name?: string }).name === "StreamNotFoundError" || /stream not found/i.test(String((error as Error).message));
}

function isNoResponders(error: unknown): boolean {
  return (error as { name?: string }).name === "JetStreamNotEnabled" || /no responders|not enabled/i.test(String((error as Error).message));
}

function isWrongLastSequence(error: unknown): boolean {
  return (error as { code?: unknown }).code === WRONG_LAST_SEQUENCE || /wrong last sequence/.test(String((error as Error).message));
}
