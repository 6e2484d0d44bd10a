/**
 * Batch publish: many messages in one HTTP request or one WebSocket frame, each answered on its own — its
 * id, or its own error (bad channel, too large, forbidden, rate-limited, engine unavailable) — so one bad
 * message never costs the others, and every good one is published exactly once, in the batch's order.
 * The transports differ only in how an item names its channel and how the answer is framed.
 */
import { LadderError, type ErrorCode, type Message } from "../../protocol/index.js";

export interface BatchError {
  readonly error: { readonly code: ErrorCode; readonly message: string };
}

/** What each message of a batch came to: its message, or the error that refused it. */
export type BatchOutcome = Message | BatchError;

/**
 * The `messages` list of a batch, or a refusal of the whole batch: not a non-empty list (400), or more
 * than `maxMessages` (413 `too_many_messages`, so a client knows to split it).
 */
export function batchItems(value: unknown, maxMessages: number): readonly unknown[] {
  if (!Array.isArray(value) || value.length === 0) throw new LadderError("bad_request", '"messages" must be a non-empty list of {"channel"?, "data"}');
  if (value.length > maxMessages) throw new LadderError("too_many_messages", `a batch holds at most ${maxMessages} messages; got ${value.length}`);
  return value;
}

export function batchError(error: unknown): BatchError {
  const ladder = error instanceof LadderError ? error : new LadderError("internal", "internal error");
  return { error: { code: ladder.code, message: ladder.message } };
}

export function isBatchError(outcome: BatchOutcome): outcome is BatchError {
  return "error" in outcome;
}

/**
 * Publishes each item with `one` — which validates it and may throw at once — in the items' order within
 * this turn, so an engine that keeps the order of publishes it is handed (all of them do, per channel)
 * stores them in batch order. Resolves when every item is settled; never rejects.
 */
export function publishEach(items: readonly unknown[], one: (item: unknown) => Message | Promise<Message>): Promise<BatchOutcome[]> {
  const outcomes = new Array<BatchOutcome>(items.length);
  let pending = items.length;
  return new Promise((resolve) => {
    const settle = (index: number, outcome: BatchOutcome): void => {
      outcomes[index] = outcome;
      if (--pending === 0) resolve(outcomes);
    };
    for (let i = 0; i < items.length; i++) {
      let published: Message | Promise<Message>;
      try {
        published = one(items[i]);
      } catch (error) {
        settle(i, batchError(error));
        continue;
      }
      if (!(published instanceof Promise)) {
        settle(i, published);
        continue;
      }
      published.then(
        (message) => settle(i, message),
        (error: unknown) => settle(i, batchError(error)),
      );
    }
  });
}

/** An item of a batch as an object, or a `bad_request` for anything else. */
export function batchItem(item: unknown): Record<string, unknown> {
  if (typeof item !== "object" || item === null || Array.isArray(item)) throw new LadderError("bad_request", 'each message must be an object {"channel"?, "data"}');
  const fields = item as Record<string, unknown>;
  if (!("data" in fields)) throw new LadderError("bad_request", 'each message needs a "data" field');
  return fields;
}
