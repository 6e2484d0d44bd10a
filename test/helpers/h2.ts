/** Test helpers: a node:http2 client session with request, poll and SSE helpers, and a few raw HTTP/2 frames. */
import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http2";
import { createParser, type EventSourceMessage } from "eventsource-parser";

export interface H2Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export interface H2Sse {
  readonly stream: ClientHttp2Stream;
  readonly headers: Promise<IncomingHttpHeaders>;
  readonly events: EventSourceMessage[];
  readonly raw: () => string;
  waitFor(count: number, timeoutMs?: number): Promise<EventSourceMessage[]>;
  waitForText(needle: string, timeoutMs?: number): Promise<void>;
  /** Resolves when the server ended the stream (END_STREAM) or reset it; with the RST code (0 for an end). */
  readonly ended: Promise<number>;
  /** Resets the stream (RST_STREAM CANCEL), as a browser does when a page closes its EventSource. */
  cancel(): void;
}

export interface H2Client {
  readonly session: ClientHttp2Session;
  request(path: string, options?: { method?: string; headers?: OutgoingHttpHeaders; body?: string }): Promise<H2Answer>;
  publish(data: unknown, channel?: string): Promise<{ id: string; channel: string }>;
  sse(path: string, headers?: OutgoingHttpHeaders): H2Sse;
  close(): Promise<void>;
}

export async function connectH2(url: string, options: { ca?: string; settings?: Record<string, number> } = {}): Promise<H2Client> {
  const session = connect(url, {
    ...(options.ca ? { ca: options.ca } : { rejectUnauthorized: false }),
    ...(options.settings ? { settings: options.settings } : {}),
  });
  // Errors surface on the streams that use the session; a listener keeps a dropped session from throwing.
  session.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  const client: H2Client = {
    session,
    request(path, { method = "GET", headers = {}, body } = {}) {
      return new Promise((resolve, reject) => {
        const stream = session.request({ ":method": method, ":path": path, ...headers });
        let text = "";
        let head: IncomingHttpHeaders = {};
        stream.setEncoding("utf8");
        stream.on("response", (h) => (head = h));
        stream.on("data", (chunk: string) => (text += chunk));
        stream.on("end", () => resolve({ status: Number(head[":status"]), headers: head, body: text }));
        stream.on("error", reject);
        stream.end(body);
      });
    },
    async publish(data, channel) {
      const answer = await client.request("/api/messages", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(channel === undefined ? { data } : { channel, data }),
      });
      if (answer.status !== 201) throw new Error(`publish failed: ${answer.status} ${answer.body}`);
      return JSON.parse(answer.body) as { id: string; channel: string };
    },
    sse(path, headers = {}) {
      return openH2Sse(session, path, headers);
    },
    async close() {
      if (session.closed || session.destroyed) return;
      await new Promise<void>((resolve) => {
        session.close(() => resolve());
        // Streams the test left open would keep a graceful close waiting.
        setTimeout(() => session.destroy(), 500).unref();
      });
    },
  };
  return client;
}

function openH2Sse(session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders): H2Sse {
  const stream = session.request({ ":path": path, accept: "text/event-stream", ...headers });
  const events: EventSourceMessage[] = [];
  let raw = "";
  const parser = createParser({ onEvent: (event) => events.push(event) });
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    raw += chunk;
    parser.feed(chunk);
  });
  stream.on("error", () => {});
  const ended = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? 0)));
  const headersPromise = new Promise<IncomingHttpHeaders>((resolve, reject) => {
    stream.once("response", resolve);
    stream.once("close", () => reject(new Error("stream closed before its response")));
  });
  headersPromise.catch(() => {});
  const until = async (done: () => boolean, timeoutMs: number, what: () => string): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  return {
    stream,
    headers: headersPromise,
    events,
    raw: () => raw,
    async waitFor(count, timeoutMs = 5000) {
      await until(() => events.filter((e) => e.event !== "ready").length >= count, timeoutMs, () => `${count} SSE events in ${JSON.stringify(raw)}`);
      return events.filter((e) => e.event !== "ready").slice(0, count);
    },
    async waitForText(needle, timeoutMs = 5000) {
      await until(() => raw.includes(needle), timeoutMs, () => `${JSON.stringify(needle)} in ${JSON.stringify(raw)}`);
    },
    ended,
    cancel() {
      if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Raw frames, for clients that misbehave on purpose (RFC 9113 §4.1 and §6; HPACK of RFC 7541 §6.2.2).

export const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
export const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, GOAWAY: 0x7 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/** A string literal, not Huffman-coded (short strings only: the length must fit the 7-bit prefix). */
function literal(text: string): Buffer {
  const bytes = Buffer.from(text, "latin1");
  if (bytes.length > 126) throw new Error("literal too long for this encoder");
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

/** A complete GET request: HEADERS with END_HEADERS and END_STREAM; :method GET and :scheme https from the static table. */
export function getRequestFrame(streamId: number, path: string, authority: string): Buffer {
  const block = Buffer.concat([Buffer.from([0x82, 0x87]), Buffer.from([0x04]), literal(path), Buffer.from([0x01]), literal(authority)]);
  return frame(FRAME.HEADERS, 0x4 | 0x1, streamId, block);
}

export interface ParsedFrame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  /** RST_STREAM's error code, or GOAWAY's. */
  readonly errorCode?: number;
}

/** Parses whole frames from the start of `buffer`; returns them and the bytes left over. */
export function parseFrames(buffer: Buffer): { frames: ParsedFrame[]; rest: Buffer } {
  const frames: ParsedFrame[] = [];
  let offset = 0;
  while (buffer.length - offset >= 9) {
    const length = buffer.readUIntBE(offset, 3);
    if (buffer.length - offset < 9 + length) break;
    const type = buffer[offset + 3]!;
    const flags = buffer[offset + 4]!;
    const streamId = buffer.readUInt32BE(offset + 5) & 0x7fffffff;
    const payload = buffer.subarray(offset + 9, offset + 9 + length);
    const errorCode = type === FRAME.RST_STREAM ? payload.readUInt32BE(0) : type === FRAME.GOAWAY ? payload.readUInt32BE(4) : undefined;
    frames.push(errorCode === undefined ? { type, flags, streamId } : { type, flags, streamId, errorCode });
    offset += 9 + length;
  }
  return { frames, rest: buffer.subarray(offset) };
}
