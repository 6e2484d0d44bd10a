/**
 * One lifecycle per connection, as engine.io's Transport has: `open`, then `closing` while a graceful end
 * is under way (a WebSocket close handshake), then `closed` once everything is released. The end is told
 * once to whoever keeps the connection: the hub adds a connection after constructing it and removes it on
 * this one callback, so no transport needs to know the registry.
 */
export type ConnectionState = "open" | "closing" | "closed";

export abstract class Lifecycle {
  #state: ConnectionState = "open";
  #onClose: (() => void) | null = null;

  get state(): ConnectionState {
    return this.#state;
  }

  /** The registry's callback, called once when the connection has closed. */
  onClose(callback: () => void): void {
    this.#onClose = callback;
  }

  /** open → closing. False when the connection is not open (a graceful end already began, or it is closed). */
  protected beginClose(): boolean {
    if (this.#state !== "open") return false;
    this.#state = "closing";
    return true;
  }

  /** → closed, and tells the registry. False when it was closed already: the caller has nothing left to do. */
  protected finishClose(): boolean {
    if (this.#state === "closed") return false;
    this.#state = "closed";
    const callback = this.#onClose;
    this.#onClose = null;
    callback?.();
    return true;
  }
}
