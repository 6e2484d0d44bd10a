/** The end of a long-lived connection's token: one timer per connection, re-armed past setTimeout's range. */
import type { Principal } from "./rules.js";

/** What {@link watchExpiry} returns for a principal whose token never expires: nothing to cancel. */
export const NO_EXPIRY = (): void => undefined;

/** Longest delay setTimeout honours; a later expiry is re-armed when this one fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Calls `onExpire` when the principal's token expires; returns the function that cancels it. One timer per
 * connection: a transport calls this again on refresh (after cancelling) and cancels it when it closes.
 */
export function watchExpiry(principal: Principal, onExpire: () => void): () => void {
  if (principal.expiresAt === null) return NO_EXPIRY;
  const expiresAt = principal.expiresAt;
  let timer: NodeJS.Timeout | null = null;
  // Always through a timer, never synchronously: the caller is still starting.
  const arm = (): void => {
    timer = setTimeout(fire, Math.max(0, Math.min(expiresAt - Date.now(), MAX_TIMER_MS)));
    // Expiry must not keep a process alive that is otherwise done.
    timer.unref();
  };
  const fire = (): void => {
    if (expiresAt > Date.now()) return arm();
    timer = null;
    onExpire();
  };
  arm();
  return () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
}
