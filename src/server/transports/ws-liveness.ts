/**
 * When a WebSocket peer is pinged and when it is taken for dead, decided on the hub's heartbeat tick (the
 * only clock: no timer per connection).
 *
 * A ping written on its own is a system call and Node's whole write path for two bytes: at 10,000 sockets
 * and a 15 s interval, 667 of them a second. A socket that is carrying data anyway can take its ping in the
 * same write as its next messages, for nothing. So on a tick a ping is either written at once or, for a
 * socket that wrote data within half an interval, left pending to ride on its next write; a ping still
 * pending at the next tick is written then, alone.
 *
 * What must not change:
 * - A live peer (one that answers a ping within half an interval) is never terminated. A peer is
 *   terminated only when silent for over `wsTimeoutMs` with no ping pending and its oldest unanswered ping
 *   out for at least half an interval: a ping that went out late, with data just before a tick, protects it
 *   until it has had the time to answer.
 * - A dead peer is terminated within `wsTimeoutMs` + `heartbeatMs` of when it was last heard, as when every
 *   tick pinged. A ping is left pending only while the peer has been silent for at most `wsTimeoutMs` −
 *   `heartbeatMs`: at worst it goes out at the next tick and the peer is terminated at the one after, both
 *   within the bound.
 * - An idle socket (no data within half an interval) is still pinged on every tick; an active one carries
 *   bytes at least every 1.5 intervals.
 */

/** What one heartbeat tick does to a peer. */
export type Beat = "terminate" | "ping" | "defer" | "none";

export class PeerLiveness {
  /** Date.now() when the peer was last heard from (a frame or a pong). */
  lastSeen: number;
  /** A ping is due and waits for the socket's next write of data (or the next tick). */
  pending = false;
  /** When the oldest ping the peer has not answered went out; stale once `lastSeen` has passed it. */
  #pingedAt = Number.NEGATIVE_INFINITY;

  constructor(now: number) {
    this.lastSeen = now;
  }

  /** A frame or a pong: the peer is alive, and a pending ping is no longer needed. */
  heard(now: number): void {
    this.lastSeen = now;
    this.pending = false;
  }

  /** A ping went out at `at` (on a tick, or with data). */
  pinged(at: number): void {
    this.pending = false;
    if (this.#pingedAt <= this.lastSeen) this.#pingedAt = at;
  }

  /**
   * The tick at `now`. `active`: the socket wrote data within half an interval and can carry the ping in
   * its next write. "defer" leaves the ping pending; "ping" asks for it now (with queued data, if any).
   */
  beat(now: number, heartbeatMs: number, wsTimeoutMs: number, active: boolean): Beat {
    const silent = now - this.lastSeen;
    if (silent > wsTimeoutMs && !this.pending && !(this.#pingedAt > this.lastSeen && now - this.#pingedAt < heartbeatMs / 2)) return "terminate";
    // A peer heard from within half an interval needs no ping on this tick (Ladder's client sends its own
    // every 10 s): by the next tick it has been silent at most 1.5 intervals, inside wsTimeoutMs when that
    // is two intervals or more (the default: 15 s and 30 s).
    if (wsTimeoutMs >= 2 * heartbeatMs && silent < heartbeatMs / 2) return "none";
    if (this.pending) return "ping";
    if (active && silent <= wsTimeoutMs - heartbeatMs) {
      this.pending = true;
      return "defer";
    }
    return "ping";
  }
}
