/**
 * Presence on the wire: who is in a channel, and the joins and leaves as they happen. Members are not
 * messages: they take no id and are not kept in history.
 */

/** One client of one channel (one page, one app instance), as every rung and engine reports it. */
export interface Member {
  /** The id the client keeps across its reconnects and rung changes, or one the hub made for it. */
  readonly client: string;
  /** The token's `sub`; absent for an anonymous connection. */
  readonly user?: string;
  /** Public info: the token's `ladder.info` claim, or (anonymous only) what the client declared. */
  readonly info?: unknown;
  /** When it joined, ms since the epoch. */
  readonly since: number;
}

export interface PresenceEvent {
  readonly type: "join" | "leave";
  readonly channel: string;
  readonly member: Member;
}

/** A channel's members as `GET /api/presence` and the `presence` frame and event give them. */
export interface PresenceList {
  readonly channel: string;
  /** Oldest first, at most the hub's `maxMembers`; `count` is exact. */
  readonly members: readonly Member[];
  readonly count: number;
}

/** SSE event names on a stream opened with `presence=1`. */
export const PRESENCE_EVENT = "presence";
export const JOIN_EVENT = "join";
export const LEAVE_EVENT = "leave";

/** What a client may call itself (`client=`): short, URL- and subject-safe. */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
