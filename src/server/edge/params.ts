/** Validation of the query parameters every HTTP rung shares; each failure is a documented 400. */
import { CHANNEL_RULE, DEFAULT_CHANNEL, isId, isValidChannel, LadderError, NOW_CURSOR, START_CURSOR, type MessageId } from "../../protocol/index.js";

/** A channel name from a request (`what` names it in the refusal: a `channel`, a WebSocket `room`); throws 400 bad_channel. */
export function checkChannel(value: unknown, what = "channel"): string {
  if (!isValidChannel(value)) throw new LadderError("bad_channel", `${what} must be ${CHANNEL_RULE}`);
  return value;
}

export function parseChannel(value: string | null | undefined): string {
  if (value === null || value === undefined) return DEFAULT_CHANNEL;
  return checkChannel(value);
}

export function parseChannels(values: readonly string[], max: number): string[] {
  if (values.length === 0) return [DEFAULT_CHANNEL];
  const unique = [...new Set(values.map((v) => parseChannel(v)))];
  if (unique.length > max) throw new LadderError("too_many_channels", `at most ${max} channels per connection`);
  return unique;
}

/** A poll's `since`: absent, empty or `0` is the start of retained history; `now` (null) is "only what comes next". */
export function parseSince(value: string | null | undefined): MessageId | null {
  if (value === null || value === undefined || value === "") return START_CURSOR;
  if (value === NOW_CURSOR) return null;
  if (!isId(value)) throw new LadderError("bad_since", "since must be a message id such as 1732540000000-0, 0 or now");
  return value;
}

export function parseWait(value: string | null, cap: number): number {
  if (value === null || value === "") return 0;
  const seconds = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || !Number.isFinite(seconds)) {
    throw new LadderError("bad_wait", "wait must be a non-negative number of seconds");
  }
  return Math.min(seconds, cap);
}

export function parseLimit(value: string | null, fallback: number, max: number): number {
  if (value === null || value === "") return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new LadderError("bad_limit", "limit must be a whole number ≥ 1");
  return Math.min(Number(value), max);
}
