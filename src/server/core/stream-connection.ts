/**
 * What an SSE stream and a WebSocket share: a set of channel subscriptions writing into one socket, an
 * outbound buffer with a bound, and the slow-consumer policy when the bound is passed — `disconnect`
 * (the client resumes by id) or `latest` (keep only the newest message per channel until the socket
 * drains, then send a `conflated` gap and that message).
 */
import { LadderError, type Gap, type MessageId, type PresenceEvent, type PresenceList } from "../../protocol/index.js";
import { FLUSH_BYTES, type Batched } from "./cork.js";
import type { Delivery } from "./delivery.js";
import type { TransportContext } from "./context.js";
import { presenceEnabled, slowConsumerFor } from "../options.js";
import type { Identity } from "../presence/member.js";
import { Lifecycle } from "./lifecycle.js";
import { Subscription, type SubscriptionSink } from "./subscription.js";

interface Conflated {
  /** The last id the client received on this channel before conflation began. */
  readonly since: MessageId | null;
  latest: Delivery;
  /** Id of the newest message skipped so far, or null when only `latest` is waiting. */
  skipped: MessageId | null;
}

/** Calls back once, on whichever of two events comes first, and removes both listeners. */
export function onceEither(emitter: NodeJS.EventEmitter, a: string, b: string, callback: () => void): void {
  const done = (): void => {
    emitter.off(a, done);
    emitter.off(b, done);
    callback();
  };
  emitter.on(a, done);
  emitter.on(b, done);
}

export abstract class StreamConnection extends Lifecycle implements SubscriptionSink, Batched {
  /** The write batcher's state for this connection (see WriteBatcher in cork.ts). */
  flushedAt = Number.NEGATIVE_INFINITY;
  held = false;
  /**
   * Messages' bytes queued while the batcher holds the connection, written by one socket write at the
   * flush: one Buffer as is, or several concatenated. No array until a second message, as most flushes
   * under a light load carry one.
   */
  #queue: Buffer | Buffer[] | null = null;
  #queuedBytes = 0;
  protected readonly context: TransportContext;
  protected readonly subscriptions = new Map<string, Subscription>();
  /** Last id written to the client per channel. */
  protected readonly sent = new Map<string, MessageId>();
  // The three Maps below are made on first use: most connections never conflate, join or watch presence,
  // and an empty Map still costs ~170 bytes of heap, per idle connection (docs/performance.md).
  #conflated: Map<string, Conflated> | null = null;
  #waitingForDrain = false;
  /** Who this connection is in presence lists; null for one that is never listed. */
  #identity: Identity | null;
  /** Per presence channel: how to leave it. */
  #memberships: Map<string, () => void> | null = null;
  /** Per channel whose joins and leaves this connection receives: how to stop. */
  #watches: Map<string, () => void> | null = null;

  constructor(context: TransportContext, identity: Identity | null = null) {
    super();
    this.context = context;
    this.#identity = identity;
  }

  /** Bytes written to the socket but not yet taken by the kernel. */
  protected abstract socketBytes(): number;
  /** Calls back once when the outbound buffer has drained. */
  protected abstract onceDrained(callback: () => void): void;
  protected abstract writeMessage(channel: string, delivery: Delivery): void;
  protected abstract writeGap(gap: Gap): void;
  /** One backfilled message (no id: the channel's cursor stays where it is). */
  protected abstract writeBackfill(channel: string, data: unknown): void;
  /**
   * The exact bytes `writeMessage` would put on the socket, when the transport writes to the socket itself
   * (they are then queued and written by {@link writeQueued}); null where it cannot (HTTP/2, a response
   * that does not own its socket), and `writeMessage` writes the message at once.
   */
  protected abstract messageBytes(channel: string, delivery: Delivery): Buffer | null;
  /**
   * Writes queued messages to the socket, whatever the connection's state (a stream that ends flushes
   * first), unless the socket can no longer take them.
   */
  protected abstract writeQueued(bytes: Buffer): void;
  /** Ends the connection because the client cannot keep up; must release the subscriptions at once. */
  protected abstract dropSlowConsumer(): void;
  /** A channel's members: first after a watch starts, so the joins and leaves that follow apply to it. */
  protected abstract writePresenceList(list: PresenceList): void;
  protected abstract writePresenceEvent(event: PresenceEvent): void;

  /** Subscribes the connection to a channel; resolves with the cursor once live. */
  protected async subscribe(channel: string, since: MessageId | null): Promise<MessageId> {
    this.subscriptions.get(channel)?.close();
    const subscription = new Subscription(this.context.engine, this.context.fanout, channel, since, this, this.context.backfill);
    this.subscriptions.set(channel, subscription);
    const cursor = await subscription.start();
    if (!this.sent.has(channel) && !subscription.closed) this.sent.set(channel, cursor);
    if (!subscription.closed) this.#enter(channel);
    return cursor;
  }

  /** A WebSocket names its client in its `join` frames: memberships made from then on use that name. */
  protected setIdentity(identity: Identity): void {
    this.#identity = identity;
  }

  /** Listed as a member of a presence channel while subscribed (and a leave delay after). */
  #enter(channel: string): void {
    const presence = this.context.presence;
    if (!presence || !this.#identity || this.state !== "open" || this.#memberships?.has(channel) || !presenceEnabled(this.context.options, channel)) return;
    (this.#memberships ??= new Map()).set(channel, presence.join(channel, { ...this.#identity, since: Date.now() }));
  }

  /**
   * Sends the channel's members, then its joins and leaves as they happen, until unsubscribed. Refused
   * with `not_found` for a channel without presence.
   */
  protected async watchPresence(channel: string): Promise<void> {
    const presence = this.context.presence;
    if (!presence || !presenceEnabled(this.context.options, channel)) throw new LadderError("not_found", `presence is not enabled for channel ${channel}`);
    const watches = (this.#watches ??= new Map());
    if (watches.has(channel)) return;
    watches.set(channel, () => {});
    const { members, stop } = await presence.watch(channel, (event) => {
      if (this.state === "open") this.writePresenceEvent(event);
    });
    if (this.state !== "open" || !this.#watches?.has(channel)) return stop();
    this.#watches.set(channel, stop);
    this.writePresenceList({ channel, members: members.slice(0, this.context.options.presence!.maxMembers), count: members.length });
  }

  #leave(channel: string): void {
    this.#memberships?.get(channel)?.();
    this.#memberships?.delete(channel);
    this.#watches?.get(channel)?.();
    this.#watches?.delete(channel);
  }

  protected unsubscribe(channel: string): boolean {
    const subscription = this.subscriptions.get(channel);
    if (!subscription) return false;
    subscription.close();
    this.subscriptions.delete(channel);
    this.#conflated?.delete(channel);
    this.sent.delete(channel);
    this.#leave(channel);
    return true;
  }

  /** Releases every subscription (again, harmlessly, on a later call); the subclass closes its socket. */
  protected releaseSubscriptions(): void {
    for (const subscription of this.subscriptions.values()) subscription.close();
    this.subscriptions.clear();
    this.#conflated = null;
    for (const channel of [...(this.#memberships?.keys() ?? []), ...(this.#watches?.keys() ?? [])]) this.#leave(channel);
  }

  message(channel: string, delivery: Delivery, live: boolean): void {
    if (this.state !== "open") return;
    const pending = this.#conflated?.get(channel);
    if (pending) {
      pending.skipped = pending.latest.id;
      pending.latest = delivery;
      return;
    }
    if (live && this.bufferedBytes() > this.context.options.maxBufferedBytes) {
      if (slowConsumerFor(this.context.options, channel) === "disconnect") {
        this.dropSlowConsumer();
        return;
      }
      (this.#conflated ??= new Map()).set(channel, { since: this.sent.get(channel) ?? null, latest: delivery, skipped: null });
      this.#waitForDrain();
      return;
    }
    this.sent.set(channel, delivery.id);
    const bytes = this.messageBytes(channel, delivery);
    if (bytes === null) {
      this.flushQueue();
      this.writeMessage(channel, delivery);
      return;
    }
    this.queueBytes(bytes);
  }

  /** Bytes to go out with this connection's next batch: held by the batcher with the messages queued around them. */
  protected queueBytes(bytes: Buffer): void {
    const queue = this.#queue;
    if (queue === null) {
      this.#queue = bytes;
      this.context.batcher.hold(this);
    } else if (Array.isArray(queue)) queue.push(bytes);
    else this.#queue = [queue, bytes];
    if ((this.#queuedBytes += bytes.length) >= FLUSH_BYTES) this.context.batcher.flush(this);
  }

  /**
   * Bytes a peer waits on (an ack): they go out at the end of this turn, with whatever is queued before
   * them, and with the answers to other frames read in the same turn.
   */
  protected queueAnswer(bytes: Buffer): void {
    this.queueBytes(bytes);
    if (this.#queue !== null) this.context.batcher.holdForTurn(this);
  }

  /** The batcher's flush (Batched). */
  flushHeld(): void {
    this.flushQueue();
  }

  /**
   * Writes the queued messages now. Every other write to the socket (gaps, backfill, presence, comments,
   * control frames, the end) calls this first, so nothing overtakes a queued message.
   */
  protected flushQueue(): void {
    const queue = this.#queue;
    if (queue === null) return;
    const length = this.#queuedBytes;
    this.#queue = null;
    this.#queuedBytes = 0;
    this.writeQueued(Array.isArray(queue) ? Buffer.concat(queue, length) : queue);
  }

  /** The outbound buffer the slow-consumer bound counts: queued by the batcher, or written and not yet sent. */
  protected bufferedBytes(): number {
    return this.#queuedBytes + this.socketBytes();
  }

  backlogged(): boolean {
    return this.state === "open" && this.bufferedBytes() > this.context.options.maxBufferedBytes;
  }

  drained(): Promise<void> {
    return new Promise((resolve) => this.onceDrained(resolve));
  }

  gap(gap: Gap): void {
    if (this.state !== "open") return;
    this.sent.set(gap.channel, gap.resume);
    this.writeGap(gap);
  }

  backfill(channel: string, data: readonly unknown[]): void {
    if (this.state !== "open") return;
    for (const item of data) this.writeBackfill(channel, item);
  }

  #waitForDrain(): void {
    if (this.#waitingForDrain) return;
    this.#waitingForDrain = true;
    this.onceDrained(() => {
      this.#waitingForDrain = false;
      if (this.state !== "open") return;
      const pending = [...(this.#conflated ?? [])];
      this.#conflated = null;
      for (const [channel, { since, latest, skipped }] of pending) {
        if (skipped !== null) this.gap({ channel, reason: "conflated", since: since ?? skipped, resume: skipped });
        this.message(channel, latest, true);
      }
    });
  }
}
