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

/** Digits in each number of an id, at most. */
const MAX_DIGITS = 16;

/** The decimal number in `text` from `from` to `to` (at least one digit) if it is a safe integer, or -1. */
function digitsValue(text: string, from: number, to: number): number {
  if (from >= to) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return -1;
    n = n * 10 + digit;
  }
  return Number.isSafeInteger(n) ? n : -1;
}

/**
 * One number of an id a client sent: 1–16 digits. Every poll and resume checks its cursor with
 * it, so it reads the characters instead of running a regex (a match array and two substrings per call).
 */
function idNumber(text: string, from: number, to: number): number {
  return to - from > MAX_DIGITS ? -1 : digitsValue(text, from, to);
}

/** Parses an id or the start cursor; returns null when the text is not one. */
export function parseId(text: string): ParsedId | null {
  if (text === START_CURSOR) return { major: 0, minor: 0 };
  const dash = text.indexOf("-");
  const major = idNumber(text, 0, dash);
  const minor = major < 0 ? -1 : idNumber(text, dash + 1, text.length);
  return minor < 0 ? null : { major, minor };
}

export function isId(text: string): boolean {
  return parseId(text) !== null;
}

export function formatId(major: number, minor: number): MessageId {
  return `${major}-${minor}`;
}

/**
 * One number of an id (0: major, 1: minor), read digit by digit, or -1 when the text is not an id.
 * compareIds runs per message on the hot path (history searches, catch-up), where ids come from the
 * engine or were validated on the way in: no regex, and no substrings or arrays to collect afterwards.
 */
function idPart(id: MessageId, which: 0 | 1): number {
  if (id === START_CURSOR) return 0;
  const dash = id.indexOf("-");
  const from = which === 0 ? 0 : dash + 1;
  const to = which === 0 ? dash : id.length;
  return dash <= 0 ? -1 : digitsValue(id, from, to);
}

/** Compares two valid ids or cursors: negative, zero or positive like a sort comparator. */
export function compareIds(a: MessageId, b: MessageId): number {
  if (a === b) return 0;
  const a0 = idPart(a, 0);
  const b0 = idPart(b, 0);
  const a1 = idPart(a, 1);
  const b1 = idPart(b, 1);
  if (a0 < 0 || b0 < 0 || a1 < 0 || b1 < 0) throw new TypeError(`cannot compare ids ${JSON.stringify(a)} and ${JSON.stringify(b)}`);
  return a0 - b0 || a1 - b1;
}

export function maxId(a: MessageId, b: MessageId): MessageId {
  return compareIds(a, b) >= 0 ? a : b;
}
