/** What `client.subscribe()` returns: the channel's events, and the way to leave it. */
import type { Gap, Message, MessageId } from "../protocol/index.js";
import { Emitter } from "./emitter.js";

export interface SubscriptionEvents {
  /** A message, in the channel's order, each exactly once. */
  message: Message;
  /** History no longer reaches back far enough (or the server skipped to the latest): reload state. */
  gap: Gap;
}

export class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  readonly #leave: (subscription: Subscription) => void;
  #active = true;

  /** @internal created by the client */
  constructor(channel: string, leave: (subscription: Subscription) => void) {
    super();
    this.channel = channel;
    this.#leave = leave;
  }

  get active(): boolean {
    return this.#active;
  }

  /** @internal */
  deliver(message: Message): void {
    if (this.#active) this.emit("message", message);
  }

  /** @internal */
  signalGap(gap: Gap): void {
    if (this.#active) this.emit("gap", gap);
  }

  unsubscribe(): void {
    if (!this.#active) return;
    this.#active = false;
    this.#leave(this);
    this.removeAllListeners();
  }
}

export type { MessageId };
