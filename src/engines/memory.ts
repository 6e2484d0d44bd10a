/**
 * The embedded default: history in process memory, fan-out by direct call. Ids are `<ms>-<seq>` from a
 * clock that never runs backwards within the process, so after a restart new ids are still larger than
 * old ones and an old cursor is recognised as "from before this process" (a gap, never a silent skip).
 */
import { compareIds, formatId, maxId, START_CURSOR, type Gap, type Message, type MessageId } from "../protocol/index.js";
import type { Engine, HistoryLimits, MessageListener, ReadResult } from "./engine.js";

/** How many of the newest messages a read looks through by id text before searching. */
const RECENT_SCAN = 16;

interface ChannelLog {
  /** Retained messages, oldest first; `head` indexes the oldest live entry so trimming is O(1). */
  messages: Message[];
  head: number;
  /** Id of the newest message that was trimmed away, or the engine's horizon when none was. */
  horizon: MessageId;
  lastId: MessageId;
  listeners: Set<MessageListener>;
}

export interface MemoryEngineOptions extends HistoryLimits {
  /** Clock in milliseconds; injectable so tests can move time. */
  readonly now?: () => number;
}

export class MemoryEngine implements Engine {
  readonly name = "memory";
  readonly #limits: HistoryLimits;
  readonly #now: () => number;
  readonly #channels = new Map<string, ChannelLog>();
  /** Every cursor at or below this may have had messages this process never saw or has forgotten. */
  #horizon: MessageId;
  readonly #boot: MessageId;
  #last: { major: number; minor: number };
  #closed = false;

  constructor(options: MemoryEngineOptions) {
    this.#limits = { maxCount: options.maxCount, maxAgeMs: options.maxAgeMs };
    this.#now = options.now ?? Date.now;
    const boot = this.#now();
    this.#boot = formatId(boot, 0);
    this.#horizon = this.#boot;
    this.#last = { major: boot, minor: 0 };
  }

  ready(): boolean {
    return !this.#closed;
  }

  async publish(channel: string, data: unknown): Promise<Message> {
    const log = this.#log(channel, true)!;
    const time = this.#now();
    const id = this.#nextId(time);
    const message: Message = { id, channel, data, time };
    log.messages.push(message);
    log.lastId = id;
    this.#trim(log, time);
    for (const listener of log.listeners) listener(message);
    return message;
  }

  async read(channel: string, since: MessageId | null, limit: number): Promise<ReadResult> {
    return this.readSync(channel, since, limit);
  }

  /** {@link read} within the current turn: the history is in this process, so a caller need not wait a tick per reader. */
  readSync(channel: string, since: MessageId | null, limit: number): ReadResult {
    const log = this.#log(channel, false);
    if (log) this.#trim(log, this.#now());
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
    const log = this.#log(channel, true)!;
    log.listeners.add(listener);
    return () => {
      log.listeners.delete(listener);
      this.#forgetIfIdle(channel, log);
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const log of this.#channels.values()) log.listeners.clear();
    this.#channels.clear();
  }

  /** Applies the age limit to every channel and forgets channels with nothing retained and no listener. */
  sweep(): void {
    const now = this.#now();
    for (const [channel, log] of this.#channels) {
      this.#trim(log, now);
      this.#forgetIfIdle(channel, log);
    }
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

  #log(channel: string, create: boolean): ChannelLog | undefined {
    let log = this.#channels.get(channel);
    if (!log && create) {
      log = { messages: [], head: 0, horizon: this.#horizon, lastId: this.#horizon, listeners: new Set() };
      this.#channels.set(channel, log);
    }
    return log;
  }

  #trim(log: ChannelLog, now: number): void {
    const { maxCount, maxAgeMs } = this.#limits;
    const oldestAllowed = now - maxAgeMs;
    while (log.head < log.messages.length) {
      const oldest = log.messages[log.head]!;
      const retained = log.messages.length - log.head;
      if (retained <= maxCount && oldest.time >= oldestAllowed) break;
      log.horizon = oldest.id;
      log.head++;
    }
    // Compact once the dead prefix is as large as the live part, keeping trimming amortised O(1).
    if (log.head > 64 && log.head * 2 >= log.messages.length) {
      log.messages = log.messages.slice(log.head);
      log.head = 0;
    }
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

  #forgetIfIdle(channel: string, log: ChannelLog): void {
    if (log.listeners.size > 0 || log.head < log.messages.length) return;
    // Dropping the log loses its horizon; raising the engine-wide one keeps old cursors answered with a gap.
    this.#horizon = maxId(this.#horizon, log.lastId);
    this.#channels.delete(channel);
  }
}
