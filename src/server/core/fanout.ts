/**
 * Local fan-out: one engine subscription per channel that has subscribers on this node, however many
 * there are (kept a moment longer for long-pollers about to ask again), and one {@link Delivery} per
 * message shared by all of them. Messages that do not advance the
 * channel (a broker redelivering after a reconnect) are dropped here once instead of per subscriber.
 */
import { compareIds, type Message, type MessageId } from "../../protocol/index.js";
import type { Engine } from "../../engines/engine.js";
import { Delivery } from "./delivery.js";

export interface LiveListener {
  onLive(delivery: Delivery): void;
}

/**
 * Told when a channel gets its first subscriber on this node and when it loses its last (after the
 * linger, so a long-poll loop does not flap). Each node reports its own occupancy (docs/hooks.md).
 */
export type OccupancyListener = (channel: string, occupied: boolean) => void;

/**
 * How long a channel's engine subscription outlives a last listener that expects to be back: a long-poll
 * just answered asks again one round trip later. When one message answers every held poll of a channel,
 * the channel would otherwise be unsubscribed and subscribed again every round (through a broker, with a
 * network trip each time).
 */
const LINGER_MS = 500;

/**
 * Deliveries kept per channel for history reads: long-pollers that fell behind, and streams resuming after
 * a drop, read the same recent messages many times over, and share one encoding of each this way. Bounded,
 * since a delivery may hold several encodings of a message as large as `maxMessageBytes`.
 */
const READ_DELIVERIES = 64;

interface ChannelEntry {
  readonly listeners: Set<LiveListener>;
  /**
   * Resolves once the engine delivers this channel; attaching waits for it so a read after misses nothing.
   * Set right after the entry is made, as the engine's listener refers to the entry.
   */
  ready: Promise<void>;
  /** Set when `ready` has resolved, so later attaches can skip waiting on it. */
  flowing: boolean;
  unsubscribe: (() => void) | null;
  lastId: MessageId | null;
  closed: boolean;
  /** Deliveries made for history reads, by id, oldest first (a Map keeps insertion order). */
  readonly read: Map<MessageId, Delivery>;
  /** When the last listener left (Date.now()), while the entry lingers. */
  idleSince: number;
}

export class Fanout {
  readonly #engine: Engine;
  readonly #channels = new Map<string, ChannelEntry>();
  /** Lingering entries, oldest first. */
  readonly #idle = new Map<string, ChannelEntry>();
  #sweepTimer: NodeJS.Timeout | null = null;
  /** Live messages handed to listeners so far, one per listener per message (for metrics). */
  liveDeliveries = 0;

  readonly #occupancy: OccupancyListener | null;

  constructor(engine: Engine, occupancy: OccupancyListener | null = null) {
    this.#engine = engine;
    this.#occupancy = occupancy;
  }

  /**
   * Adds a listener. Returns null when the channel's live feed is already flowing (the usual case, where
   * waiting would only cost a turn per subscriber), else a promise that resolves once it flows.
   */
  attach(channel: string, listener: LiveListener): Promise<void> | null {
    let entry = this.#channels.get(channel);
    if (!entry) {
      const created: ChannelEntry = {
        listeners: new Set(),
        ready: Promise.resolve(),
        flowing: false,
        unsubscribe: null,
        lastId: null,
        closed: false,
        read: new Map(),
        idleSince: 0,
      };
      entry = created;
      created.ready = this.#engine
        .subscribe(channel, (message) => this.#onMessage(created, message))
        .then((unsubscribe) => {
          created.flowing = true;
          if (created.closed) unsubscribe();
          else created.unsubscribe = unsubscribe;
        });
      this.#channels.set(channel, entry);
      this.#occupancy?.(channel, true);
    } else if (entry.listeners.size === 0) {
      this.#idle.delete(channel);
    }
    entry.listeners.add(listener);
    if (entry.flowing) return null;
    return entry.ready.catch((error: unknown) => {
      this.detach(channel, listener);
      throw error;
    });
  }

  /**
   * Removes a listener. With `linger` (a long-poll that was answered and will likely ask again), a channel
   * left without listeners keeps its engine subscription for {@link LINGER_MS}; otherwise it goes at once.
   */
  detach(channel: string, listener: LiveListener, linger = false): void {
    const entry = this.#channels.get(channel);
    if (!entry || !entry.listeners.delete(listener) || entry.listeners.size > 0) return;
    // A subscription still opening (or one that failed) goes at once, so that the next attach starts afresh.
    if (!linger || !entry.flowing) {
      this.#close(channel, entry);
      return;
    }
    entry.idleSince = Date.now();
    this.#idle.set(channel, entry);
    if (!this.#sweepTimer) this.#scheduleSweep(LINGER_MS);
  }

  /** The delivery of a message read from history, shared with the channel's other readers of it. */
  deliveryFor(message: Message): Delivery {
    const read = this.#channels.get(message.channel)?.read;
    if (!read) return new Delivery(message);
    let delivery = read.get(message.id);
    if (delivery === undefined) {
      delivery = new Delivery(message);
      read.set(message.id, delivery);
      if (read.size > READ_DELIVERIES) read.delete(read.keys().next().value!);
    }
    return delivery;
  }

  /** Channels with subscribers on this node (a lingering engine subscription has none). */
  get channelCount(): number {
    return this.#channels.size - this.#idle.size;
  }

  #close(channel: string, entry: ChannelEntry): void {
    entry.closed = true;
    entry.unsubscribe?.();
    this.#channels.delete(channel);
    this.#idle.delete(channel);
    this.#occupancy?.(channel, false);
  }

  #scheduleSweep(delayMs: number): void {
    this.#sweepTimer = setTimeout(this.#sweep, delayMs);
    // Lingering is an optimisation: it must not keep a process alive that is otherwise done.
    this.#sweepTimer.unref();
  }

  readonly #sweep = (): void => {
    this.#sweepTimer = null;
    const now = Date.now();
    for (const [channel, entry] of this.#idle) {
      const due = entry.idleSince + LINGER_MS;
      if (due > now) {
        this.#scheduleSweep(due - now);
        return;
      }
      this.#close(channel, entry);
    }
  };

  #onMessage(entry: ChannelEntry, message: Message): void {
    if (entry.lastId !== null && compareIds(message.id, entry.lastId) <= 0) return;
    entry.lastId = message.id;
    const delivery = new Delivery(message);
    this.liveDeliveries += entry.listeners.size;
    for (const listener of entry.listeners) listener.onLive(delivery);
  }
}
