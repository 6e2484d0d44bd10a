/**
 * Message ids and cursors.
 *
 * An id is `"<major>-<minor>"`, two non-negative decimal integers, compared numerically major first.
 * It is the shape of a Redis Streams id, so the Redis engine can use its own ids unchanged, and it lets
 * the memory engine put a clock in `major` so that ids never repeat after a restart. Clients treat ids
 * as opaque strings and only echo them back.
 *
 * The cursor `"0"` means "nothing seen yet": from the start of retained history.
 */

export type MessageId = string;

export interface ParsedId {
  readonly major: number;
  readonly minor: number;
}

/** The cursor that stands before every id. */
export const START_CURSOR = "0";

const ID_PATTERN = /^(\d{1,16})-(\d{1,16})$/;

/** Parses an id or the start cursor; returns null when the text is not one. */
export function parseId(text: string): ParsedId | null {
  if (text === START_CURSOR) return { major: 0, minor: 0 };
  const match = ID_PATTERN.exec(text);
  if (!match) return null;
  const major = Number(match[1]);
  const minor = Number(match[2]);
  if (!Number.isSafeInteger(major) || !Number.isSafeInteger(minor)) return null;
  return { major, minor };
}

export function isId(text: string): boolean {
  return parseId(text) !== null;
}

export function formatId(major: number, minor: number): MessageId {
  return `${major}-${minor}`;
}

/**
 * The two numbers of an id without the validating regex: compareIds runs per message on the hot path
 * (history searches, catch-up fences), where ids come from the engine or were validated on the way in.
 */
function parts(id: MessageId): [number, number] | null {
  if (id === START_CURSOR) return [0, 0];
  const dash = id.indexOf("-");
  if (dash <= 0 || dash === id.length - 1) return null;
  const major = Number(id.slice(0, dash));
  const minor = Number(id.slice(dash + 1));
  return Number.isSafeInteger(major) && Number.isSafeInteger(minor) && major >= 0 && minor >= 0 ? [major, minor] : null;
}

/** Compares two valid ids or cursors: negative, zero or positive like a sort comparator. */
export function compareIds(a: MessageId, b: MessageId): number {
  if (a === b) return 0;
  const pa = parts(a);
  const pb = parts(b);
  if (!pa || !pb) throw new TypeError(`cannot compare ids ${JSON.stringify(a)} and ${JSON.stringify(b)}`);
  return pa[0] - pb[0] || pa[1] - pb[1];
}

export function maxId(a: MessageId, b: MessageId): MessageId {
  return compareIds(a, b) >= 0 ? a : b;
}
