/**
 * Local fan-out: one engine subscription per channel that has subscribers on this node, however many
 * there are, and one {@link Delivery} per message shared by all of them. Messages that do not advance the
 * channel (a broker redelivering after a reconnect) are dropped here once instead of per subscriber.
 */
import { compareIds, type Message, type MessageId } from "../protocol/index.js";
import type { Engine } from "../engines/engine.js";
import { Delivery } from "./delivery.js";

export interface LiveListener {
  onLive(delivery: Delivery): void;
}

interface ChannelEntry {
  readonly listeners: Set<LiveListener>;
  /** Resolves once the engine delivers this channel; attaching waits for it so a read after misses nothing. */
  readonly ready: Promise<void>;
  unsubscribe: (() => void) | null;
  lastId: MessageId | null;
  closed: boolean;
}

export class Fanout {
  readonly #engine: Engine;
  readonly #channels = new Map<string, ChannelEntry>();

  constructor(engine: Engine) {
    this.#engine = engine;
  }

  /** Adds a listener; resolves when the channel's live feed is flowing. */
  async attach(channel: string, listener: LiveListener): Promise<void> {
    let entry = this.#channels.get(channel);
    if (!entry) {
      const created: ChannelEntry = { listeners: new Set(), ready: Promise.resolve(), unsubscribe: null, lastId: null, closed: false };
      entry = created;
      (created as { ready: Promise<void> }).ready = this.#engine
        .subscribe(channel, (message) => this.#onMessage(created, message))
        .then((unsubscribe) => {
          if (created.closed) unsubscribe();
          else created.unsubscribe = unsubscribe;
        });
      this.#channels.set(channel, entry);
    }
    entry.listeners.add(listener);
    try {
      await entry.ready;
    } catch (error) {
      this.detach(channel, listener);
      throw error;
    }
  }

  detach(channel: string, listener: LiveListener): void {
    const entry = this.#channels.get(channel);
    if (!entry || !entry.listeners.delete(listener) || entry.listeners.size > 0) return;
    entry.closed = true;
    entry.unsubscribe?.();
    this.#channels.delete(channel);
  }

  get channelCount(): number {
    return this.#channels.size;
  }

  #onMessage(entry: ChannelEntry, message: Message): void {
    if (entry.lastId !== null && compareIds(message.id, entry.lastId) <= 0) return;
    entry.lastId = message.id;
    const delivery = new Delivery(message);
    for (const listener of entry.listeners) listener.onLive(delivery);
  }
}
