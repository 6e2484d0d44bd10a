/**
 * Who a connection is in a presence list: its client id (the one Ladder's client sends as `client=`, kept
 * across reconnects and rungs, or one made here), the token's `sub` and `info`, or — where the hub allows
 * it — what an anonymous client declared about itself.
 */
import { CLIENT_ID_PATTERN, LadderError, type Member } from "../../protocol/index.js";
import type { Principal } from "../auth/rules.js";

/** What an anonymous client may declare about itself (`info=`), encoded: unverified, so kept small. */
export const MAX_ANONYMOUS_INFO_BYTES = 256;

export type Identity = Omit<Member, "since">;

export function checkClientId(value: unknown): string {
  if (typeof value !== "string" || !CLIENT_ID_PATTERN.test(value)) throw new LadderError("bad_request", "client must be 1–64 characters from A-Z a-z 0-9 _ -");
  return value;
}

export function randomClientId(): string {
  return `h${Math.random().toString(36).slice(2, 12)}`;
}

/**
 * The identity a connection shows in presence lists. `client` and `info` come from the request (query
 * `client=`, `info=`); an `info` is taken only from anonymous clients and only when `anonymousInfo` is on:
 * a token's own `ladder.info` always wins, and a user cannot be impersonated by a declared one.
 */
export function identityFor(principal: Principal, client: string | null, declaredInfo: string | null, anonymousInfo: boolean): Identity {
  const id = client === null ? randomClientId() : checkClientId(client);
  if (principal.sub !== null) return principal.info !== undefined ? { client: id, user: principal.sub, info: principal.info } : { client: id, user: principal.sub };
  if (declaredInfo === null || !anonymousInfo) return { client: id };
  if (Buffer.byteLength(declaredInfo) > MAX_ANONYMOUS_INFO_BYTES) throw new LadderError("bad_request", `info must be at most ${MAX_ANONYMOUS_INFO_BYTES} bytes of JSON`);
  try {
    return { client: id, info: JSON.parse(declaredInfo) as unknown };
  } catch {
    throw new LadderError("bad_request", "info must be JSON");
  }
}
