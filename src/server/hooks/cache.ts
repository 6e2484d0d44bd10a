/**
 * A small TTL cache with a size bound, oldest entry evicted first (a Map keeps insertion order). It holds
 * promises, so concurrent requests with the same credentials share one call to the app.
 */
export class TtlCache<V> {
  readonly #entries = new Map<string, { readonly expires: number; readonly value: V }>();
  readonly #ttlMs: number;
  readonly #size: number;

  constructor(ttlMs: number, size: number) {
    this.#ttlMs = ttlMs;
    this.#size = size;
  }

  get(key: string): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  /** `ttlMs` shortens the entry's life (an identity that expires sooner). */
  set(key: string, value: V, ttlMs = this.#ttlMs): void {
    if (this.#ttlMs <= 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, { expires: Date.now() + Math.min(ttlMs, this.#ttlMs), value });
    if (this.#entries.size > this.#size) this.#entries.delete(this.#entries.keys().next().value!);
  }

  delete(key: string, value: V): void {
    if (this.#entries.get(key)?.value === value) this.#entries.delete(key);
  }

  get size(): number {
    return this.#entries.size;
  }
}
