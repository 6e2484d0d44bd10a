/**
 * The embedded default: history in process memory, fan-out by direct call. Ids are `<ms>-<seq>` from a
 * clock that never runs backwards within the process, so after a restart new ids are still larger than
 * old ones and an old cursor is recognised as "from before this process" (a gap, never a silent skip).
 *
 * The whole log has a budget (retained bytes and channels) besides each channel's count and age limits:
 * at the budget the oldest messages of the least recently used channels go first, channels without
 * subscribers before channels with them. An evicted message moves its channel's horizon like a trim, so
 * a cursor before it gets a `trimmed` gap. Recency is two intrusive doubly linked lists (idle and
 * subscribed channels), a channel moved to the newest end on use: O(1) per publish, and eviction walks
 * from the oldest end. (A Map re-inserted on use keeps the order too, but V8 leaves a hole per delete at
 * the front of its table, and each eviction's walk from the front would pass them all until a rehash.)
 */
import { compareIds, formatId, LadderError, maxId, START_CURSOR, type Gap, type Message, type MessageId } from "../protocol/index.js";
import { DedupeWindow, DEFAULT_DEDUPE_KEYS } from "./dedupe.js";
import type { Engine, EngineStats, HistoryLimits, MessageListener, Published, ReadResult } from "./engine.js";

/** How many of the newest messages a read looks through by id text before searching. */
const RECENT_SCAN = 16;
/**
 * Bytes counted per retained message besides its data's JSON length: the Message object, its id and time
 * strings, the data's own object headers and the log's array slots (measured on Node 20, x64: about
 * 150 bytes for a small object payload, rounded up).
 */
export const MESSAGE_OVERHEAD_BYTES = 192;
/**
 * Default budget, for a small machine (docs/security.md): 64 MiB of retained messages by the count above,
 * and 50,000 channels (each costs about 0.5 KB besides its messages). Together about 100 MiB of heap.
 */
export const DEFAULT_MAX_LOG_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_CHANNELS = 50_000;
/** How often age limits are applied to channels nobody reads or writes (they are applied on use too). */
const SWEEP_INTERVAL_MS = 60_000;

interface ChannelLog {
  readonly name: string;
  /** Retained messages, oldest first; `head` indexes the oldest live entry so trimming is O(1). */
  messages: Message[];
  /** Budget bytes of each message, parallel to `messages`. */
  sizes: number[];
  head: number;
  /** Budget bytes of the retained messages. */
  bytes: number;
  /** Id of the newest message that was trimmed away, or the engine's horizon when none was. */
  horizon: MessageId;
  lastId: MessageId;
  /** Made on the first subscribe: most channels of a flood never have one. */
  listeners: Set<MessageListener> | null;
  /** Neighbours in its recency list (older, newer) and which list holds it. */
  older: ChannelLog | null;
  newer: ChannelLog | null;
  list: Recency | null;
}

/** Channels from least to most recently used. */
class Recency {
  oldest: ChannelLog | null = null;
  newest: ChannelLog | null = null;

  /** Appends at the newest end (after taking it out of whichever list held it). */
  push(log: ChannelLog): void {
    if (log.list) log.list.remove(log);
    log.older = this.newest;
    log.newer = null;
    if (this.newest) this.newest.newer = log;
    else this.oldest = log;
    this.newest = log;
    log.list = this;
  }

  remove(log: ChannelLog): void {
    if (log.older) log.older.newer = log.newer;
    else this.oldest = log.newer;
    if (log.newer) log.newer.older = log.older;
    else this.newest = log.older;
    log.older = log.newer = null;
    log.list = null;
  }
}

export interface MemoryBudget {
  /** Retained bytes of all channels together: each message's data JSON length plus {@link MESSAGE_OVERHEAD_BYTES}. */
  readonly maxLogBytes?: number;
  /** Channels held at once (with retained messages or subscribers). */
  readonly maxChannels?: number;
}

export interface MemoryEngineOptions extends HistoryLimits, MemoryBudget {
  /** Clock in milliseconds; injectable so tests can move time. */
  readonly now?: () => number;
  /** Interval of the age sweep, ms (default 60 s); 0 turns it off (tests call {@link MemoryEngine.sweep}). */
  readonly sweepIntervalMs?: number;
  /** Idempotency keys remembered at once (oldest forgotten first; default 10 000). */
  readonly dedupeKeys?: number;
}

export class MemoryEngine implements Engine {
  readonly name = "memory";
  readonly #limits: HistoryLimits;
  readonly #maxBytes: number;
  readonly #maxChannels: number;
  readonly #now: () => number;
  readonly #channels = new Map<string, ChannelLog>();
  /** Channels without listeners, least recently used first. */
  readonly #idle = new Recency();
  /** Channels with listeners; evicted from only when the idle ones hold nothing. */
  readonly #live = new Recency();
  #bytes = 0;
  #evictedMessages = 0;
  #evictedChannels = 0;
  /** Every cursor at or below this may have had messages this process never saw or has forgotten. */
  #horizon: MessageId;
  readonly #boot: MessageId;
  #last: { major: number; minor: number };
  readonly #sweeper: NodeJS.Timeout | null;
  #closed = false;
  readonly #dedupe: DedupeWindow;

  constructor(options: MemoryEngineOptions) {
    this.#dedupe = new DedupeWindow(options.dedupeKeys ?? DEFAULT_DEDUPE_KEYS);
    this.#limits = { maxCount: options.maxCount, maxAgeMs: options.maxAgeMs };
    this.#maxBytes = budget("maxLogBytes", options.maxLogBytes, DEFAULT_MAX_LOG_BYTES);
    this.#maxChannels = budget("maxChannels", options.maxChannels, DEFAULT_MAX_CHANNELS);
    this.#now = options.now ?? Date.now;
    const boot = this.#now();
    this.#boot = formatId(boot, 0);
    this.#horizon = this.#boot;
    this.#last = { major: boot, minor: 0 };
    const interval = options.sweepIntervalMs ?? SWEEP_INTERVAL_MS;
    this.#sweeper = interval > 0 ? setInterval(() => this.sweep(), interval) : null;
    this.#sweeper?.unref();
  }

  ready(): boolean {
    return !this.#closed;
  }

  /** `encodedBytes`: the data's JSON length when the caller measured it already (the hub does), else measured here. */
  async publish(channel: string, data: unknown, encodedBytes?: number, key?: string): Promise<Published> {
    return this.publishSync(channel, data, encodedBytes, key);
  }

  publishSync(channel: string, data: unknown, encodedBytes?: number, key?: string): Published {
    const seen = key === undefined ? undefined : this.#dedupe.get(channel, key, this.#now());
    if (seen) return { ...seen, channel, data, duplicate: true };
    const size = (encodedBytes ?? Buffer.byteLength(JSON.stringify(data) ?? "")) + MESSAGE_OVERHEAD_BYTES;
    if (size > this.#maxBytes) throw new LadderError("payload_too_large", `a message of ${size} bytes does not fit the log's budget of ${this.#maxBytes} bytes`);
    const time = this.#now();
    const id = this.#nextId(time);
    const message: Message = { id, channel, data, time };
    let log = this.#find(channel);
    if (log) {
      this.#touch(log);
      log.messages.push(message);
      log.sizes.push(size);
    } else {
      // Arrays made with their first element are sized for it; a push into [] reserves room for 17.
      log = this.#create(channel, [message], [size]);
    }
    log.bytes += size;
    this.#bytes += size;
    log.lastId = id;
    this.#trim(log, time);
    if (this.#bytes > this.#maxBytes || this.#channels.size > this.#maxChannels) this.#evict(log);
    if (key !== undefined) this.#dedupe.set(channel, key, { id, time }, time);
    if (log.listeners) for (const listener of log.listeners) listener(message);
    return message;
  }

  async read(channel: string, since: MessageId | null, limit: number): Promise<ReadResult> {
    return this.readSync(channel, since, limit);
  }

  /** {@link read} within the current turn: the history is in this process, so a caller need not wait a tick per reader. */
  readSync(channel: string, since: MessageId | null, limit: number): ReadResult {
    let log = this.#find(channel);
    if (log) {
      this.#trim(log, this.#now());
      // Aged out entirely: free it now rather than at the next sweep (its horizon passes to the engine's).
      if (this.#forgetIfIdle(log)) log = undefined;
      else this.#touch(log);
    }
    const horizon = log ? log.horizon : this.#horizon;
    const lastId = log ? log.lastId : this.#horizon;
    if (since === null) return { messages: [], gap: null, cursor: lastId };
    if (log) {
      const next = this.#afterRecent(log, since);
      if (next >= 0) {
        // A retained id: past the horizon and issued here, so no gap.
        const messages = log.messages.slice(next, Math.min(log.messages.length, next + Math.max(0, limit)));
        return { messages, gap: null, cursor: messages.length > 0 ? messages[messages.length - 1]!.id : since };
      }
    }

    let after = since;
    let gap: Gap | null = null;
    if (since !== START_CURSOR) {
      if (compareIds(since, horizon) < 0) {
        const reason = compareIds(since, this.#boot) < 0 ? "unknown" : "trimmed";
        gap = { channel, reason, since, resume: horizon };
        after = horizon;
      } else if (compareIds(since, lastId) > 0) {
        // An id this engine never issued: it cannot say what the client missed.
        gap = { channel, reason: "unknown", since, resume: lastId };
        after = lastId;
      }
    }
    const messages = log ? this.#after(log, after, limit) : [];
    const cursor = messages.length > 0 ? messages[messages.length - 1]!.id : after;
    return { messages, gap, cursor };
  }

  async subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    const log = this.#find(channel) ?? this.#create(channel);
    (log.listeners ??= new Set()).add(listener);
    this.#live.push(log);
    // A new channel may take the count over the budget; an idle one makes room.
    if (this.#channels.size > this.#maxChannels) this.#evict(log);
    return () => {
      if (!log.listeners?.delete(listener) || log.listeners.size > 0 || log.list !== this.#live) return;
      this.#idle.push(log);
      this.#forgetIfIdle(log);
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#sweeper) clearInterval(this.#sweeper);
    for (const log of this.#channels.values()) {
      log.listeners?.clear();
      log.older = log.newer = null;
      log.list = null;
    }
    this.#channels.clear();
    this.#dedupe.clear();
    this.#idle.oldest = this.#idle.newest = this.#live.oldest = this.#live.newest = null;
    this.#bytes = 0;
  }

  /** Applies the age limit to every channel and forgets channels with nothing retained and no listener. */
  sweep(): void {
    const now = this.#now();
    for (const log of this.#channels.values()) {
      this.#trim(log, now);
      this.#forgetIfIdle(log);
    }
  }

  stats(): EngineStats {
    return {
      channels: this.#channels.size,
      retainedBytes: this.#bytes,
      maxLogBytes: this.#maxBytes,
      maxChannels: this.#maxChannels,
      evictedMessages: this.#evictedMessages,
      evictedChannels: this.#evictedChannels,
    };
  }

  /** Number of channels held in memory (for tests of bounded memory). */
  get channelCount(): number {
    return this.#channels.size;
  }

  #nextId(time: number): MessageId {
    const last = this.#last;
    this.#last = time > last.major ? { major: time, minor: 0 } : { major: last.major, minor: last.minor + 1 };
    return formatId(this.#last.major, this.#last.minor);
  }

  #find(channel: string): ChannelLog | undefined {
    return this.#channels.get(channel);
  }

  #create(channel: string, messages: Message[] = [], sizes: number[] = []): ChannelLog {
    const log: ChannelLog = {
      name: channel,
      messages,
      sizes,
      head: 0,
      bytes: 0,
      horizon: this.#horizon,
      lastId: this.#horizon,
      listeners: null,
      older: null,
      newer: null,
      list: null,
    };
    this.#channels.set(channel, log);
    this.#idle.push(log);
    return log;
  }

  /** Marks the channel as used now: it moves to the newest end of its list. */
  #touch(log: ChannelLog): void {
    const list = log.list;
    if (list && list.newest !== log) list.push(log);
  }

  #trim(log: ChannelLog, now: number): void {
    const { maxCount, maxAgeMs } = this.#limits;
    const oldestAllowed = now - maxAgeMs;
    while (log.head < log.messages.length) {
      const oldest = log.messages[log.head]!;
      const retained = log.messages.length - log.head;
      if (retained <= maxCount && oldest.time >= oldestAllowed) break;
      this.#dropOldest(log);
    }
    this.#compact(log);
  }

  /** Drops the channel's oldest retained message; its id becomes the horizon, so cursors before it get a gap. */
  #dropOldest(log: ChannelLog): void {
    const size = log.sizes[log.head]!;
    log.horizon = log.messages[log.head]!.id;
    // Release the message for the collector now; compaction may come much later.
    (log.messages as Array<Message | undefined>)[log.head] = undefined;
    log.head++;
    log.bytes -= size;
    this.#bytes -= size;
  }

  /** Compacts once the dead prefix is as large as the live part, keeping trimming amortised O(1). */
  #compact(log: ChannelLog): void {
    if (log.head === log.messages.length) {
      if (log.head > 0) {
        log.messages = [];
        log.sizes = [];
        log.head = 0;
      }
    } else if (log.head > 64 && log.head * 2 >= log.messages.length) {
      log.messages = log.messages.slice(log.head);
      log.sizes = log.sizes.slice(log.head);
      log.head = 0;
    }
  }

  /**
   * Brings the log back within its budget. Idle channels first, least recently used first: their oldest
   * messages, then (once empty) the channel itself; channels with subscribers only when the idle ones
   * hold nothing more. `keep` (the channel being published to or subscribed) keeps its newest message.
   */
  #evict(keep: ChannelLog): void {
    for (let log = this.#idle.oldest; log; ) {
      if (this.#bytes <= this.#maxBytes && this.#channels.size <= this.#maxChannels) return;
      const newer: ChannelLog | null = log.newer;
      if (log === keep) {
        this.#evictMessages(log, 1);
      } else {
        if (this.#channels.size > this.#maxChannels) while (log.head < log.messages.length) this.#evictOne(log);
        else this.#evictMessages(log, 0);
        this.#compact(log);
        if (this.#forgetIfIdle(log)) this.#evictedChannels++;
      }
      log = newer;
    }
    if (this.#bytes <= this.#maxBytes) return;
    // Only channels with subscribers hold more: the least recently used lose their oldest messages. An
    // emptied one goes to the newest end so the next eviction does not walk past it again.
    const stop = this.#live.newest;
    for (let log = this.#live.oldest; log && this.#bytes > this.#maxBytes; ) {
      const newer: ChannelLog | null = log === stop ? null : log.newer;
      this.#evictMessages(log, log === keep ? 1 : 0);
      this.#compact(log);
      if (log.head === log.messages.length && log !== keep) this.#live.push(log);
      log = newer;
    }
  }

  /** Evicts the channel's oldest messages until the log is within its byte budget, keeping the newest `spare`. */
  #evictMessages(log: ChannelLog, spare: number): void {
    while (this.#bytes > this.#maxBytes && log.messages.length - log.head > spare) this.#evictOne(log);
  }

  #evictOne(log: ChannelLog): void {
    this.#dropOldest(log);
    this.#evictedMessages++;
  }

  /** Frees a channel with nothing retained and no listener. Returns true when it did. */
  #forgetIfIdle(log: ChannelLog): boolean {
    if ((log.listeners && log.listeners.size > 0) || log.head < log.messages.length) return false;
    // Dropping the log loses its horizon; raising the engine-wide one keeps old cursors answered with a gap.
    this.#horizon = maxId(this.#horizon, log.lastId);
    log.list?.remove(log);
    this.#channels.delete(log.name);
    return true;
  }

  /**
   * Index after `since` when it is one of the newest retained ids, else -1. Pollers nearly always resume
   * from the last message or one just before it: matching the id text from the end answers them without
   * the id comparisons of a search.
   */
  #afterRecent(log: ChannelLog, since: MessageId): number {
    const { messages, head } = log;
    const stop = Math.max(head, messages.length - RECENT_SCAN);
    for (let i = messages.length - 1; i >= stop; i--) if (messages[i]!.id === since) return i + 1;
    return -1;
  }

  #after(log: ChannelLog, after: MessageId, limit: number): Message[] {
    const { messages, head } = log;
    // Binary search for the first message with id > after.
    let lo = head;
    let hi = messages.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareIds(messages[mid]!.id, after) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return messages.slice(lo, Math.min(messages.length, lo + Math.max(0, limit)));
  }
}

function budget(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value >= 1)) throw new TypeError(`memory engine ${name} must be a number ≥ 1, got ${String(value)}`);
  return value;
}
