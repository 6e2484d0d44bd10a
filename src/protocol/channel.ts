/** Channel names: 1–128 characters from `[A-Za-z0-9_.:-]`. */

export const DEFAULT_CHANNEL = "general";
export const MAX_CHANNEL_LENGTH = 128;

/** What a valid name is, for the messages that refuse one ("channel must be …", "room must be …"). */
export const CHANNEL_RULE = "1–128 characters from A-Z a-z 0-9 _ . : -";

const CHANNEL_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;

export function isValidChannel(name: unknown): name is string {
  return typeof name === "string" && CHANNEL_PATTERN.test(name);
}

/**
 * Matches a channel against a pattern where `*` stands for any run of characters (possibly empty),
 * e.g. `prices.*` or `*`. Used for per-channel policies.
 */
export function channelMatches(pattern: string, channel: string): boolean {
  if (pattern === "*" || pattern === channel) return true;
  if (!pattern.includes("*")) return false;
  const parts = pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${parts.join(".*")}$`).test(channel);
}
