/**
 * The part of the SSE format the client reads from its own hub: `event` and `data` fields, events ended by
 * a blank line, any of CRLF, LF or CR as line ends, comments and other fields (`id`, `retry`) skipped (the
 * JSON envelope carries the id; heartbeats count as traffic before parsing). Hand-written instead of
 * eventsource-parser (3.4 KB of the 8 KB bundle) to keep the browser client in budget; a property test
 * (test/sse-lines.test.ts) checks it against eventsource-parser on random streams cut at random points.
 */
export interface SseEvent {
  readonly event: string | undefined;
  readonly data: string;
}

/** Returns `feed(text)`: call it with each decoded chunk; `onEvent` gets every complete event with data. */
export function sseLines(onEvent: (event: SseEvent) => void): (chunk: string) => void {
  let rest = "";
  let event: string | undefined;
  let data: string[] = [];
  return (chunk) => {
    const text = rest + chunk;
    // A CR at the end may be the first half of a CRLF: wait for the next chunk to know.
    const held = text.endsWith("\r") ? 1 : 0;
    const lines = text.slice(0, text.length - held).split(/\r\n|\r|\n/);
    rest = lines.pop()! + (held ? "\r" : "");
    for (const line of lines) {
      if (line === "") {
        if (data.length > 0) onEvent({ event, data: data.join("\n") });
        event = undefined;
        data = [];
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(line[colon + 1] === " " ? colon + 2 : colon + 1);
      if (field === "event") event = value || undefined;
      else if (field === "data") data.push(value);
    }
  };
}
