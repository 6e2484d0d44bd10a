/**
 * Cursors for streams that carry several channels. A single SSE `id:` has to bring back where the
 * client was on every channel, so a multi-channel stream's id is `channel=id;channel=id` — `=` and `;`
 * are not allowed in channel names, so the text splits without escapes.
 */
import { isValidChannel } from "./channel.js";
import { isId, type MessageId } from "./ids.js";

export type CursorMap = ReadonlyMap<string, MessageId>;

export function encodeCursorMap(cursors: CursorMap): string {
  const parts: string[] = [];
  for (const [channel, id] of cursors) parts.push(`${channel}=${id}`);
  return parts.join(";");
}

/**
 * Reads a cursor for the given channels: either a plain id (it applies to every channel, which is the
 * single-channel case) or a `channel=id;…` map. Channels missing from a map get no cursor (live only).
 * Returns null when the text is malformed.
 */
export function decodeCursor(text: string, channels: readonly string[]): Map<string, MessageId> | null {
  const result = new Map<string, MessageId>();
  if (isId(text)) {
    for (const channel of channels) result.set(channel, text);
    return result;
  }
  for (const part of text.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) return null;
    const channel = part.slice(0, eq);
    const id = part.slice(eq + 1);
    if (!isValidChannel(channel) || !isId(id)) return null;
    if (channels.includes(channel)) result.set(channel, id);
  }
  return result;
}

