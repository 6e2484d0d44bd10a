/** What `client.subscribe()` returns: the channel's events, and the way to leave it. */
import type { Gap, Member, Message, MessageId } from "../protocol/index.js";
import { Emitter } from "./emitter.js";

export interface SubscriptionEvents<T = unknown> {
  /** A message, in the channel's order, each exactly once; `backfilled` when the app's backfill hook supplied it for a gap. */
  message: Message<T>;
  /**
   * History no longer reaches back far enough (or the server skipped to the latest): reload state — or,
   * when the app's backfill hook sent one, replace it with `gap.snapshot`.
   */
  gap: Gap;
  /** With `presence: true`: a member came in (or was found in after a reconnect). */
  join: Member;
  /** With `presence: true`: a member left (or was found gone after a reconnect). */
  leave: Member;
}

/** `T`: the type of the channel's message data, as the caller declared it (not checked at run time). */
export class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  readonly channel: string;
  readonly #leave: (subscription: Subscription<never>) => void;
  readonly #members: () => readonly Member[];
  #active = true;

  /** @internal created by the client */
  constructor(channel: string, leave: (subscription: Subscription<never>) => void, members: () => readonly Member[]) {
    super();
    this.channel = channel;
    this.#leave = leave;
    this.#members = members;
  }

  /** The channel's members as last known (with `presence: true`; oldest first). */
  presence(): Member[] {
    return [...this.#members()];
  }

  get active(): boolean {
    return this.#active;
  }

  /** @internal */
  deliver(message: Message): void {
    if (this.#active) this.emit("message", message as Message<T>);
  }

  /** @internal */
  signalGap(gap: Gap): void {
    if (this.#active) this.emit("gap", gap);
  }

  /** @internal */
  signalMember(type: "join" | "leave", member: Member): void {
    if (this.#active) this.emit(type, member);
  }

  unsubscribe(): void {
    if (!this.#active) return;
    this.#active = false;
    this.#leave(this as Subscription<never>);
    this.removeAllListeners();
  }
}

export type { MessageId };
