/**
 * A rung is one way of reaching the hub (WebSocket, SSE, long-poll, poll) behind one interface, so the
 * client's single reconnection policy does not care which it is driving. A rung reports what it receives
 * and how it ended; it never decides to reconnect by itself.
 */
import type { Gap, Member, Message, MessageId, PresenceEvent } from "../../protocol/index.js";
import type { ResolvedClientOptions, TransportName } from "../options.js";

export interface RungHost {
  readonly options: ResolvedClientOptions;
  /** The subscribed channels and the cursor to resume each from (null: start live). */
  cursors(): ReadonlyMap<string, MessageId | null>;
  /** The rung proved it works: its handshake or first answer arrived. */
  opened(rung: Rung): void;
  message(rung: Rung, message: Message): void;
  gap(rung: Rung, gap: Gap): void;
  /** The server told where a channel stands (a fresh subscription learns its cursor this way). */
  cursor(rung: Rung, channel: string, cursor: MessageId): void;
  /** Whether a subscription of the channel asked for its members and their joins and leaves. */
  presence(channel: string): boolean;
  /** A channel's whole member list (after a (re)connect): the client diffs it against what it had. */
  members(rung: Rung, channel: string, members: readonly Member[]): void;
  membership(rung: Rung, event: PresenceEvent): void;
  /** The rung ended by itself. `delivered` says whether it had opened; the client's policy decides what next. */
  closed(rung: Rung, info: { readonly delivered: boolean; readonly reason: string }): void;
}

export interface Rung {
  readonly name: TransportName;
  /** `open` may be called again: it reopens with the current channels and cursors. */
  open(): void;
  /** A channel was subscribed or unsubscribed while the rung is running. */
  add(channel: string): void;
  remove(channel: string): void;
  /** Rungs with an upstream of their own (WebSocket) publish over it. */
  publish?(channel: string, data: unknown, key: string): Promise<{ id: MessageId; duplicate?: true }>;
  /** Ends the rung without reporting `closed`. */
  close(): void;
}

/** One timer slot that replaces its previous timer; keeps rung code free of stray timers. */
export class TimerSlot {
  #handle: ReturnType<typeof setTimeout> | undefined;

  set(ms: number, callback: () => void): void {
    this.clear();
    this.#handle = setTimeout(() => {
      this.#handle = undefined;
      callback();
    }, ms);
  }

  clear(): void {
    if (this.#handle !== undefined) clearTimeout(this.#handle);
    this.#handle = undefined;
  }

  get pending(): boolean {
    return this.#handle !== undefined;
  }
}

export function endpoint(options: ResolvedClientOptions, path: string): URL {
  return new URL(path, options.base);
}

/**
 * A stream or poll URL that names this client (`client=`, and `info=` when set), so it is one member of a
 * presence channel across reconnects. (The WebSocket says it in each `join` frame instead.)
 */
export function namedEndpoint(options: ResolvedClientOptions, path: string): URL {
  const url = endpoint(options, path);
  url.searchParams.set("client", options.clientId);
  if (options.presenceInfo !== null) url.searchParams.set("info", options.presenceInfo);
  return url;
}

/**
 * Whether the hub answers a plain request (`/readyz`) within the open timeout: what tells a blocked rung
 * from a hub that is down, and what proves the polling path when there is nothing to poll. A 503 is an
 * answer (a draining or not-ready hub); other 5xx come from something in front of it.
 */
export async function reachable(options: ResolvedClientOptions): Promise<boolean> {
  try {
    const res = await options.fetch(endpoint(options, "/readyz"), { cache: "no-store", signal: AbortSignal.timeout(options.openTimeoutMs) });
    void res.body?.cancel().catch(() => undefined);
    return res.status < 500 || res.status === 503;
  } catch {
    return false;
  }
}

/** What every rung's lifecycle shares: it opens once (reported once), ends once (reported unless closed by the client). */
export abstract class RungBase implements Rung {
  abstract readonly name: TransportName;
  protected readonly host: RungHost;
  #delivered = false;
  #ended = false;

  constructor(host: RungHost) {
    this.host = host;
  }

  abstract open(): void;
  abstract add(channel: string): void;
  abstract remove(channel: string): void;
  /** Releases the rung's sockets, requests and timers. */
  protected abstract teardown(reason: string): void;

  protected get ended(): boolean {
    return this.#ended;
  }

  protected get delivered(): boolean {
    return this.#delivered;
  }

  /** The rung proved it works: told to the client the first time only. */
  protected opened(): void {
    if (this.#delivered) return;
    this.#delivered = true;
    this.host.opened(this);
  }

  close(): void {
    this.#ended = true;
    this.teardown("closed by the client");
  }

  /** The rung ended by itself: released, then reported with whether it had opened. */
  protected end(reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.teardown(reason);
    this.host.closed(this, { delivered: this.#delivered, reason });
  }
}
