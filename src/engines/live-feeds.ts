/**
 * Live delivery for the broker engines (Redis, NATS), one feed per channel this node listens to.
 *
 * A broker's live path (Redis sharded pub/sub, NATS republished core messages) is cheap but can miss
 * messages: while the node is disconnected, or when two publishers' notices cross. Each live message
 * therefore carries the id of the channel's previous message (`prev`). A feed remembers the last id it
 * handed to its listeners; a message whose `prev` is beyond that id means something was missed, and the
 * feed catches up from the broker's history before going on. After a reconnect the engine asks every
 * feed to catch up. Listeners thus see each channel in id order, with nothing skipped that history still
 * holds and nothing twice.
 */
import type { Logger } from "pino";
import { compareIds, START_CURSOR, type Message, type MessageId } from "../protocol/index.js";
import type { MessageListener, ReadResult } from "./engine.js";

/** Reads history after a cursor (the engine's own `read`). */
export type ReadHistory = (channel: string, since: MessageId | null, limit: number) => Promise<ReadResult>;

export interface LivePath {
  /** Starts the broker's live feed of a channel; resolves once the broker will deliver to it. */
  open(channel: string): Promise<void>;
  /** Stops it, once the channel has no listener left. */
  close(channel: string): void;
}

export interface LiveFeedsOptions {
  readonly read: ReadHistory;
  readonly live: LivePath;
  /** warn: a catch-up failed (it is retried) or skipped a gap history no longer covers; info: it recovered missed messages. */
  readonly logger: Pick<Logger, "info" | "warn">;
}

interface Held {
  readonly message: Message;
  readonly prev: MessageId;
}

interface Feed {
  readonly channel: string;
  readonly listeners: Set<MessageListener>;
  /** Resolves when the feed is open: its live path subscribed and its starting position known. */
  opening: Promise<void> | null;
  /** The last id handed to the listeners, or the channel's position when the feed opened. */
  lastId: MessageId;
  /** Live messages that arrived while the feed was opening or catching up; null otherwise. */
  held: Held[] | null;
  /** A catch-up was asked for while one was running (or while opening): run another after it. */
  again: boolean;
  retryTimer: NodeJS.Timeout | null;
  retryDelayMs: number;
  closed: boolean;
}

const PAGE_SIZE = 500;
/** Live messages kept while catching up; past this they are dropped and read from history instead. */
const MAX_HELD = 10_000;
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2000;

export class LiveFeeds {
  readonly #options: LiveFeedsOptions;
  readonly #feeds = new Map<string, Feed>();
  #closed = false;

  constructor(options: LiveFeedsOptions) {
    this.#options = options;
  }

  /** Channels with at least one listener on this node. */
  get channels(): IterableIterator<string> {
    return this.#feeds.keys();
  }

  /** Adds a listener; resolves once messages published from now on will reach it. */
  async subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    if (this.#closed) throw new Error("engine is closed");
    let feed = this.#feeds.get(channel);
    if (!feed) {
      feed = this.#create(channel);
      this.#feeds.set(channel, feed);
      feed.opening = this.#open(feed);
    }
    feed.listeners.add(listener);
    const opened = feed;
    try {
      await opened.opening;
    } catch (error) {
      this.#remove(opened, listener);
      throw error;
    }
    return () => this.#remove(opened, listener);
  }

  /**
   * A message from the live path. `prev` is the id of the channel's message before it (or any id at or
   * below that, e.g. "0-0" when the broker kept nothing before it).
   */
  deliver(channel: string, message: Message, prev: MessageId): void {
    const feed = this.#feeds.get(channel);
    if (!feed || feed.closed) return;
    if (feed.held) {
      this.#hold(feed, { message, prev });
      return;
    }
    if (compareIds(message.id, feed.lastId) <= 0) return;
    if (compareIds(prev, feed.lastId) > 0) {
      // The message before this one never reached us: read what is missing from history first.
      feed.held = [{ message, prev }];
      void this.#catchUp(feed);
      return;
    }
    this.#emit(feed, message);
  }

  /** After a reconnect: every feed reads what it may have missed from history. */
  catchUpAll(): void {
    for (const feed of this.#feeds.values()) this.catchUp(feed.channel);
  }

  catchUp(channel: string): void {
    const feed = this.#feeds.get(channel);
    if (!feed || feed.closed) return;
    if (feed.held) {
      feed.again = true;
      return;
    }
    feed.held = [];
    void this.#catchUp(feed);
  }

  close(): void {
    this.#closed = true;
    for (const feed of this.#feeds.values()) this.#shut(feed);
    this.#feeds.clear();
  }

  #create(channel: string): Feed {
    return {
      channel,
      listeners: new Set(),
      opening: null,
      lastId: START_CURSOR,
      held: [],
      again: false,
      retryTimer: null,
      retryDelayMs: RETRY_MIN_MS,
      closed: false,
    };
  }

  /** Subscribes the live path first, then takes the position: a message in between is held, not lost. */
  async #open(feed: Feed): Promise<void> {
    await this.#options.live.open(feed.channel);
    const { cursor } = await this.#options.read(feed.channel, null, 0);
    if (feed.closed) return;
    feed.lastId = cursor;
    feed.opening = null;
    this.#release(feed);
  }

  async #catchUp(feed: Feed): Promise<void> {
    let recovered = 0;
    try {
      for (;;) {
        const result = await this.#options.read(feed.channel, feed.lastId, PAGE_SIZE);
        if (feed.closed) return;
        if (result.gap) {
          this.#options.logger.warn({ channel: feed.channel, gap: result.gap }, "live feed skipped messages history no longer holds");
        }
        for (const message of result.messages) recovered += this.#emit(feed, message) ? 1 : 0;
        if (compareIds(result.cursor, feed.lastId) > 0 && result.messages.length === 0) feed.lastId = result.cursor;
        if (result.messages.length < PAGE_SIZE) break;
      }
    } catch (error) {
      if (feed.closed) return;
      this.#options.logger.warn({ channel: feed.channel, err: error }, "live feed catch-up failed; retrying");
      this.#retryLater(feed);
      return;
    }
    feed.retryDelayMs = RETRY_MIN_MS;
    if (recovered > 0) this.#options.logger.info({ channel: feed.channel, messages: recovered }, "live feed caught up from history");
    this.#release(feed);
  }

  /** Hands over the messages held during an opening or catch-up, then runs a catch-up asked for meanwhile. */
  #release(feed: Feed): void {
    const held = feed.held ?? [];
    feed.held = null;
    const again = feed.again;
    feed.again = false;
    for (const { message, prev } of held) this.deliver(feed.channel, message, prev);
    if (again) this.catchUp(feed.channel);
  }

  #hold(feed: Feed, held: Held): void {
    const list = feed.held!;
    if (list.length < MAX_HELD) {
      list.push(held);
      return;
    }
    // Too many: forget them and read them from history once the current catch-up is done.
    list.length = 0;
    feed.again = true;
  }

  #retryLater(feed: Feed): void {
    if (feed.retryTimer) return;
    const delay = feed.retryDelayMs;
    feed.retryDelayMs = Math.min(RETRY_MAX_MS, delay * 2);
    feed.retryTimer = setTimeout(() => {
      feed.retryTimer = null;
      if (feed.closed) return;
      void this.#catchUp(feed);
    }, delay);
    feed.retryTimer.unref();
  }

  #emit(feed: Feed, message: Message): boolean {
    if (compareIds(message.id, feed.lastId) <= 0) return false;
    feed.lastId = message.id;
    for (const listener of feed.listeners) listener(message);
    return true;
  }

  #remove(feed: Feed, listener: MessageListener): void {
    feed.listeners.delete(listener);
    if (feed.listeners.size > 0 || this.#feeds.get(feed.channel) !== feed) return;
    this.#feeds.delete(feed.channel);
    this.#shut(feed);
  }

  #shut(feed: Feed): void {
    if (feed.closed) return;
    feed.closed = true;
    feed.held = null;
    if (feed.retryTimer) clearTimeout(feed.retryTimer);
    feed.retryTimer = null;
    this.#options.live.close(feed.channel);
  }
}
