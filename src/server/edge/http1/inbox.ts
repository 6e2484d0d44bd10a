/**
 * The bytes a lane connection has read and not yet consumed. The usual request comes in one read and is
 * used as it came, without a copy; pieces of a request that comes in several reads are gathered in a store
 * that doubles when it is full, so gathering costs what arrives, never the square of it (a head sent a
 * byte at a time, a large batch in many reads).
 */
export class Inbox {
  /** The bytes not yet consumed: a read as it came, or a view of the store. */
  #bytes: Buffer | null = null;
  #store: Buffer | null = null;

  get bytes(): Buffer | null {
    return this.#bytes;
  }

  append(chunk: Buffer): void {
    const bytes = this.#bytes;
    if (bytes === null) {
      this.#bytes = chunk;
      return;
    }
    const length = bytes.length + chunk.length;
    const store = this.#store;
    // Room after the unconsumed bytes in the store they already live in: copy the new piece in place.
    if (store !== null && bytes.buffer === store.buffer) {
      const start = bytes.byteOffset - store.byteOffset;
      if (start + length <= store.length) {
        chunk.copy(store, start + bytes.length);
        this.#bytes = store.subarray(start, start + length);
        return;
      }
    }
    const grown = Buffer.allocUnsafe(Math.max(length * 2, 4096));
    bytes.copy(grown, 0);
    chunk.copy(grown, bytes.length);
    this.#store = grown;
    this.#bytes = grown.subarray(0, length);
  }

  /** Drops the first `n` bytes (a request handed to its handler, whose body may still view them). */
  consume(n: number): void {
    const bytes = this.#bytes!;
    if (n === bytes.length) {
      this.#bytes = null;
      // Nothing left to gather into: the next request starts afresh (and bodies still viewing the store keep it).
      this.#store = null;
    } else {
      this.#bytes = bytes.subarray(n);
    }
  }

  /** Everything not consumed, and the inbox emptied (the bytes handed to node:http). */
  take(): Buffer | null {
    const bytes = this.#bytes;
    this.#bytes = null;
    this.#store = null;
    return bytes;
  }
}
