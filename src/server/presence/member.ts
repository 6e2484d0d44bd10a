/**
 * Who is in a channel. A member is one client of one channel: `client` is the id Ladder's client keeps
 * across its reconnects and rung changes (or one the hub made for a connection that sent none), `user` the
 * token's `sub`, `info` the public part of the token's claims (`{"ladder":{"info":…}}`), `since` when it
 * joined (milliseconds since the epoch).
 */
import { LadderError } from "../../protocol/index.js";

export interface Member {
  readonly client: string;
  readonly user?: string;
  readonly info?: unknown;
  readonly since: number;
}

export interface PresenceEvent {
  readonly type: "join" | "leave";
  readonly channel: string;
  readonly member: Member;
}

/** What a client may call itself: short, URL- and subject-safe. */
const CLIENT_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** The largest `info` a token may carry for presence, encoded: every reader of the list receives it. */
export const MAX_INFO_BYTES = 1024;

export function checkClientId(value: unknown): string {
  if (typeof value !== "string" || !CLIENT_ID.test(value)) {
    throw new LadderError("bad_request", "client must be 1–64 characters from A-Z a-z 0-9 _ -");
  }
  return value;
}

export function randomClientId(): string {
  return `h${Math.random().toString(36).slice(2, 12)}${Date.now().toString(36).slice(-4)}`;
}

/** A token's public presence info, or undefined when it has none or one too large to share. */
export function infoFromClaim(claim: unknown): unknown {
  if (claim === undefined || claim === null) return undefined;
  const encoded = JSON.stringify(claim);
  return encoded !== undefined && Buffer.byteLength(encoded) <= MAX_INFO_BYTES ? claim : undefined;
}
