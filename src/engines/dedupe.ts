/**
 * The memory engine's idempotency keys: what a publish with a key returned, kept for
 * {@link DEDUPE_WINDOW_MS} and at most `capacity` keys. Every entry lives equally long, so insertion order
 * is expiry order: expired and surplus keys are dropped from the front of one Map, O(1) per publish.
 */
import type { MessageId } from "../protocol/index.js";
import { DEDUPE_WINDOW_MS } from "./engine.js";

export const DEFAULT_DEDUPE_KEYS = 10_000;

interface Seen {
  readonly id: MessageId;
  readonly time: number;
}

export class DedupeWindow {
  readonly #capacity: number;
  readonly #seen = new Map<string, Seen & { readonly expires: number }>();

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError("dedupeKeys must be an integer ≥ 0");
    this.#capacity = capacity;
  }

  get(channel: string, key: string, now: number): Seen | undefined {
    this.#expire(now);
    return this.#seen.get(`${channel}\n${key}`);
  }

  set(channel: string, key: string, seen: Seen, now: number): void {
    if (this.#capacity === 0) return;
    this.#seen.set(`${channel}\n${key}`, { ...seen, expires: now + DEDUPE_WINDOW_MS });
    if (this.#seen.size > this.#capacity) this.#seen.delete(this.#seen.keys().next().value!);
  }

  clear(): void {
    this.#seen.clear();
  }

  #expire(now: number): void {
    for (const [key, seen] of this.#seen) {
      if (seen.expires > now) return;
      this.#seen.delete(key);
    }
  }
}
