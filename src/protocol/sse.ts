/**
 * The `text/event-stream` wire format as a pure encoder (HTML Living Standard, "Server-sent events").
 * Every field is one line; a value with line breaks becomes several `data:` lines, which the parser joins
 * back with "\n". `id` and `event` must not contain line breaks or NUL, and `retry` is a whole number.
 */

export interface SseEvent {
  readonly id?: string;
  readonly event?: string;
  readonly data?: string;
  readonly retry?: number;
}

const LINE_BREAK = /\r\n|\r|\n/;

function assertSingleLine(field: string, value: string): void {
  if (/[\r\n\0]/.test(value)) throw new TypeError(`SSE ${field} must not contain CR, LF or NUL`);
}

/** Encodes one event, ending with the blank line that dispatches it. */
export function encodeEvent(event: SseEvent): string {
  let out = "";
  if (event.retry !== undefined) {
    if (!Number.isInteger(event.retry) || event.retry < 0) throw new TypeError("SSE retry must be a non-negative integer");
    out += `retry: ${event.retry}\n`;
  }
  if (event.event !== undefined) {
    assertSingleLine("event", event.event);
    out += `event: ${event.event}\n`;
  }
  if (event.id !== undefined) {
    assertSingleLine("id", event.id);
    out += `id: ${event.id}\n`;
  }
  if (event.data !== undefined) {
    for (const line of event.data.split(LINE_BREAK)) out += `data: ${line}\n`;
  }
  return `${out}\n`;
}

/** A comment line: ignored by parsers, used as a heartbeat to keep proxies from closing an idle stream. */
export function encodeComment(text = ""): string {
  const lines = text.split(LINE_BREAK);
  return `${lines.map((line) => (line ? `: ${line}` : ":")).join("\n")}\n\n`;
}
