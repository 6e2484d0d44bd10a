/**
 * What the hub core knows of a connection, whichever pattern it speaks. Transports (poll, SSE, WebSocket)
 * each implement it in one file; the hub counts, drains and closes them through this interface alone. A
 * transport is constructed without side effects; the hub registers it, then starts it.
 */
import type { ConnectionState } from "../core/lifecycle.js";

import type { TransportName } from "../../protocol/index.js";

export type TransportKind = TransportName;

export interface Connection {
  readonly kind: TransportKind;
  readonly state: ConnectionState;
  /** Called at every heartbeat tick: SSE writes a comment, WebSocket pings and drops a silent peer. */
  heartbeat(now: number): void;
  /** Graceful end for a shutdown: answer held polls, end streams so clients retry, close WebSockets with 1001. */
  drain(): void;
  /** Immediate release of everything the connection holds. */
  destroy(): void;
  /** The hub's one callback for the connection's end, where it leaves the registry (and frees its slot). */
  onClose(callback: () => void): void;
}
