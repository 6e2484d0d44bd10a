/**
 * One subscriber's view of one channel: history after its cursor, then live messages, handed to a sink
 * in id order with nothing missed and nothing twice. The live feed is attached before history is read,
 * and live messages that arrive during the read wait in a list; after the read, those past the cursor
 * follow. This is the whole no-loss argument, so every transport goes through it.
 */
import { compareIds, START_CURSOR, type Gap, type MessageId } from "../../protocol/index.js";
import type { Engine } from "../../engines/engine.js";
import type { Delivery } from "./delivery.js";
import type { Fanout, LiveListener } from "./fanout.js";
import type { Backfiller } from "./context.js";

export interface SubscriptionSink {
  /** `live` is false for history (catch-up), which the subscription paces with {@link backlogged}. */
  message(channel: string, delivery: Delivery, live: boolean): void;
  gap(gap: Gap): void;
  /** Messages the app's backfill hook gave for the gap, before the history that is left. */
  backfill(channel: string, data: readonly unknown[]): void;
  /** True while the sink's outbound buffer is full; catch-up then waits for {@link drained}. */
  backlogged?(): boolean;
  drained?(): Promise<void>;
}

/** Live messages held during a catch-up before the subscription is considered too far behind. */
const MAX_HELD_DURING_CATCH_UP = 10_000;
const PAGE_SIZE = 500;

export class Subscription implements LiveListener {
  readonly channel: string;
  readonly #engine: Engine;
  readonly #fanout: Fanout;
  readonly #sink: SubscriptionSink;
  #cursor: MessageId | null;
  /** True until the catch-up is done (or the subscription closed); live messages are held meanwhile. */
  #catchingUp = true;
  /** Live messages seen while history is being read; made on the first one, as most catch-ups see none. */
  #held: Delivery[] | null = null;
  #overflowed = false;
  /** The cursor when the subscription went live; live messages at or below it were already emitted. */
  #fence: MessageId | null = null;
  #closed = false;
  readonly #backfill: Backfiller | null;

  constructor(engine: Engine, fanout: Fanout, channel: string, since: MessageId | null, sink: SubscriptionSink, backfill: Backfiller | null = null) {
    this.#backfill = backfill;
    this.#engine = engine;
    this.#fanout = fanout;
    this.channel = channel;
    this.#cursor = since;
    this.#sink = sink;
  }

  /** The last id handed to the sink, or the position the subscription started from. */
  get cursor(): MessageId | null {
    return this.#cursor;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * True once {@link start} has nothing left to do: live, or closed. Read right after calling start(), it
   * tells whether start finished within the call (an in-process engine, a feed already flowing).
   */
  get settled(): boolean {
    return !this.#catchingUp;
  }

  /** Attaches, catches up, and goes live. Resolves with the cursor once live. */
  async start(): Promise<MessageId> {
    const attaching = this.#fanout.attach(this.channel, this);
    if (attaching) await attaching;
    let since = this.#cursor;
    let first = true;
    // An in-process history (the memory engine) is read at once: that spares every subscriber a turn.
    const engine = this.#engine;
    const sync = engine.readSync !== undefined;
    for (;;) {
      if (this.#closed) return this.#cursor ?? START_CURSOR;
      const limit = since === null ? 0 : PAGE_SIZE;
      const result = sync ? engine.readSync!(this.channel, since, limit) : await engine.read(this.channel, since, limit);
      if (this.#closed) return this.#cursor ?? START_CURSOR;
      if (first && result.gap) {
        // Live messages are held meanwhile, as during any catch-up; the app answers within its timeout.
        const filled = this.#backfill ? await this.#backfill(result.gap) : null;
        if (this.#closed) return this.#cursor ?? START_CURSOR;
        if (filled?.kind === "messages") this.#sink.backfill(this.channel, filled.messages);
        else this.#sink.gap(filled ? { ...result.gap, snapshot: filled.snapshot } : result.gap);
      }
      first = false;
      for (const message of result.messages) {
        this.#emit(this.#fanout.deliveryFor(message));
        // History can be far larger than a socket buffer: pace it by the socket instead of dropping the reader.
        if (this.#sink.backlogged?.()) {
          await this.#sink.drained?.();
          if (this.#closed) return this.#cursor ?? START_CURSOR;
        }
      }
      this.#cursor = result.cursor;
      since = result.cursor;
      if (this.#overflowed) {
        // Too much arrived while reading: read again from where history left off, then go live.
        this.#overflowed = false;
        this.#held = null;
        continue;
      }
      if (result.messages.length < PAGE_SIZE) break;
    }
    const held = this.#held;
    this.#held = null;
    this.#catchingUp = false;
    if (held) for (const delivery of held) this.#emit(delivery);
    // A read done in this same turn cannot run ahead of the live feed: whatever was in it reached the feed
    // before the read, so every live message from here on is new and needs no fence (Engine.readSync).
    this.#fence = sync ? null : this.#cursor;
    return this.#cursor!;
  }

  onLive(delivery: Delivery): void {
    if (this.#closed) return;
    if (this.#catchingUp) {
      const held = (this.#held ??= []);
      if (held.length >= MAX_HELD_DURING_CATCH_UP) {
        this.#held = null;
        this.#overflowed = true;
      } else {
        held.push(delivery);
      }
      return;
    }
    // Live: the fan-out hands messages over in increasing id order. With a broker the catch-up read can
    // run ahead of the live feed (history already holds a message this node has not yet been told
    // about), so live messages up to where the read ended are dropped. Past that fence, order alone
    // guarantees novelty and the hot path compares nothing.
    if (this.#fence !== null) {
      if (compareIds(delivery.id, this.#fence) <= 0) return;
      this.#fence = null;
    }
    this.#cursor = delivery.id;
    this.#sink.message(this.channel, delivery, true);
  }

  /** `expectReturn`: the subscriber will likely subscribe again soon (an answered long-poll); see {@link Fanout.detach}. */
  close(expectReturn = false): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#catchingUp = false;
    this.#held = null;
    this.#fanout.detach(this.channel, this, expectReturn);
  }

  #emit(delivery: Delivery): void {
    if (this.#closed) return;
    if (this.#cursor !== null && compareIds(delivery.id, this.#cursor) <= 0) return;
    this.#cursor = delivery.id;
    this.#sink.message(this.channel, delivery, false);
  }
}
