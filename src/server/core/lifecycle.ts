/**
 * The end of a connection, told once to whoever keeps it: the hub adds a connection after constructing
 * it and removes it on this one callback (engine.io's transport "close"), so no transport needs to know
 * the registry.
 */
export abstract class Lifecycle {
  #onClose: (() => void) | null = null;
  #told = false;

  /** The registry's callback, called once when the connection has closed. */
  onClose(callback: () => void): void {
    this.#onClose = callback;
  }

  /** Tells the registry the connection is gone; later calls do nothing. */
  protected told(): void {
    if (this.#told) return;
    this.#told = true;
    const callback = this.#onClose;
    this.#onClose = null;
    callback?.();
  }
}
