/**
 * The floor's streaming half (bench/floor.ts parses the HTTP requests and hands these connections over):
 * SSE streams and WebSockets, per channel, fed by every publish. Like floor.ts it is deliberately NOT a
 * correct or safe server; it shows the lowest CPU a Node process pays per streamed delivery, so Ladder's,
 * the baseline's and Nchan's `sse` and `websocket` figures have a floor to be read against.
 *
 * It speaks Ladder's dialect as far as the bench's clients need it:
 *
 * - `GET /api/stream?channel=<ch>`: a raw `HTTP/1.1 200` head (`text/event-stream`, `no-cache`, chunked),
 *   then one chunk per message: `id: <n>\ndata: <data>\n\n` in HTTP/1.1 chunked framing;
 * - `GET /api/ws` with `Sec-WebSocket-Key`: `101` with `Sec-WebSocket-Accept`, then client text frames
 *   `{"type":"join","room"}` (answered `{"type":"joined","room","cursor"}`; the socket then gets
 *   `{"type":"message","room","id","data","time"}` frames) and `{"type":"publish","room","ref","data"}`
 *   (published as a POST is, answered `{"type":"ack","ref","id","room"}`); pings are answered with pongs,
 *   a close with a close.
 *
 * Per publish the message is serialised once, the SSE chunk built once (size line, event and CRLF in one
 * Buffer) and the WebSocket frame built once (unmasked header and payload in one Buffer), each only if the
 * channel has a subscriber of that kind, and that same Buffer goes to each subscriber in one
 * `socket.write`: no per-subscriber encoding, no write callbacks, no corking a lone write.
 *
 * What it leaves out on purpose: no heartbeats (SSE comments, server pings), no `retry:`, no resume
 * (`Last-Event-ID`, `join` with `since`: every stream starts live), no history replay, no `leave`, no
 * batches, no idempotency keys, no validation of the upgrade headers beyond the key (no `Upgrade`,
 * `Connection` or `Sec-WebSocket-Version` check, no origin check), no subprotocols, no permessage-deflate,
 * no fragmented or binary frames (either closes the connection), no UTF-8 validation, no slow-consumer
 * policy and no backpressure (a subscriber that does not read grows its socket's buffer without bound),
 * no limits beyond a cap on a frame's size, no timeouts, no error frames except for a publish without a room.
 */
import { createHash } from "node:crypto";
import type { Socket } from "node:net";

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Client frames larger than this close the connection. */
const MAX_FRAME = 64 * 1024;
const SSE_HEAD = Buffer.from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n");
const KEY_HEADER = /\r\nsec-websocket-key:[ \t]*([^\r\n]*?)[ \t]*(?:\r\n|$)/i;

/** A published message, as the floor assigned it. */
export interface Accepted {
  readonly id: number;
  /** The channel as a JSON string (quotes included). */
  readonly channelJson: string;
}

/** The floor's publish: store the message, answer held polls, fan it out here. */
export type Publish = (channel: string, data: unknown) => Accepted;

/** Takes bytes that arrive on a handed-over connection. */
export type OnData = (chunk: Buffer) => void;

/** An unmasked server frame: `fin` + opcode byte, length, payload, in one Buffer. */
function frame(first: number, payload: string | Buffer): Buffer {
  const length = typeof payload === "string" ? Buffer.byteLength(payload) : payload.length;
  const head = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(head + length);
  out[0] = first;
  if (head === 2) {
    out[1] = length;
  } else if (head === 4) {
    out[1] = 126;
    out.writeUInt16BE(length, 2);
  } else {
    out[1] = 127;
    out.writeUInt32BE(0, 2);
    out.writeUInt32BE(length, 6);
  }
  if (typeof payload === "string") out.write(payload, head, "utf8");
  else payload.copy(out, head);
  return out;
}

const TEXT = 0x81;
const CLOSE = 0x88;
const PONG = 0x8a;
/** Close 1002 (protocol error): a frame this floor does not take. */
const CLOSE_PROTOCOL = frame(CLOSE, Buffer.from([0x03, 0xea]));
const ignore: OnData = () => {};

export class FloorStreams {
  readonly #publish: Publish;
  readonly #lastId: () => number;
  readonly #sse = new Map<string, Set<Socket>>();
  readonly #ws = new Map<string, Set<Socket>>();
  #held = 0;

  constructor(publish: Publish, lastId: () => number) {
    this.#publish = publish;
    this.#lastId = lastId;
  }

  /** SSE streams plus joined rooms of WebSockets. */
  held(): number {
    return this.#held;
  }

  #add(map: Map<string, Set<Socket>>, channel: string, socket: Socket): boolean {
    let set = map.get(channel);
    if (!set) map.set(channel, (set = new Set()));
    if (set.has(socket)) return false;
    set.add(socket);
    this.#held++;
    return true;
  }

  #remove(map: Map<string, Set<Socket>>, channel: string, socket: Socket): void {
    const set = map.get(channel);
    if (!set?.delete(socket)) return;
    this.#held--;
    if (set.size === 0) map.delete(channel);
  }

  /** Takes over a connection that asked `GET /api/stream?channel=<channel>`; later bytes are ignored. */
  sse(socket: Socket, channel: string): OnData {
    socket.write(SSE_HEAD);
    this.#add(this.#sse, channel, socket);
    socket.once("close", () => this.#remove(this.#sse, channel, socket));
    return ignore;
  }

  /**
   * Takes over a connection that asked `GET /api/ws` with this request head (`rest`: bytes after it),
   * answering the handshake; null when there is no key (the caller refuses it).
   */
  webSocket(socket: Socket, head: string, rest: Buffer | null): OnData | null {
    const key = KEY_HEADER.exec(head)?.[1];
    if (!key) return null;
    const accept = createHash("sha1").update(key + WS_GUID).digest("base64");
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`);
    const rooms: string[] = [];
    let buffer: Buffer | null = null;
    let closed = false;
    socket.once("close", () => {
      closed = true;
      for (const room of rooms) this.#remove(this.#ws, room, socket);
      rooms.length = 0;
    });
    const end = (last: Buffer): void => {
      closed = true;
      buffer = null;
      socket.end(last);
    };

    const text = (payload: string): void => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(payload);
      } catch {
        return end(CLOSE_PROTOCOL);
      }
      if (typeof parsed !== "object" || parsed === null) return end(CLOSE_PROTOCOL);
      const { type, room, ref, data } = parsed as { type?: unknown; room?: unknown; ref?: unknown; data?: unknown };
      const refPart = ref === undefined ? "" : `,"ref":${JSON.stringify(ref)}`;
      if (type === "publish") {
        if (typeof room !== "string") {
          socket.write(frame(TEXT, `{"type":"error","code":"bad_channel"${refPart}}`));
          return;
        }
        const { id, channelJson } = this.#publish(room, data);
        socket.write(frame(TEXT, `{"type":"ack"${refPart},"id":"${id}","room":${channelJson}}`));
      } else if (type === "join" && typeof room === "string") {
        if (this.#add(this.#ws, room, socket)) rooms.push(room);
        socket.write(frame(TEXT, `{"type":"joined","room":${JSON.stringify(room)},"cursor":"${this.#lastId()}"}`));
      }
      // Anything else is ignored.
    };

    const onData: OnData = (chunk) => {
      if (closed) return;
      const buf: Buffer = buffer ? Buffer.concat([buffer, chunk]) : chunk;
      let at = 0;
      while (!closed && buf.length - at >= 2) {
        const first = buf[at]!;
        const second = buf[at + 1]!;
        // Client frames are masked; fragments (no fin, or continuation), binary and reserved bits are not taken.
        if ((second & 0x80) === 0 || (first & 0xf0) !== 0x80) return end(CLOSE_PROTOCOL);
        let length = second & 0x7f;
        let head = 2;
        if (length === 126) {
          if (buf.length - at < 4) break;
          length = buf.readUInt16BE(at + 2);
          head = 4;
        } else if (length === 127) {
          if (buf.length - at < 10) break;
          if (buf.readUInt32BE(at + 2) !== 0) return end(CLOSE_PROTOCOL);
          length = buf.readUInt32BE(at + 6);
          head = 10;
        }
        if (length > MAX_FRAME) return end(CLOSE_PROTOCOL);
        const start = at + head + 4;
        if (buf.length < start + length) break;
        const mask = at + head;
        for (let i = 0; i < length; i++) buf[start + i]! ^= buf[mask + (i & 3)]!;
        at = start + length;
        const opcode = first & 0x0f;
        if (opcode === 0x1) text(buf.toString("utf8", start, at));
        else if (opcode === 0x9) socket.write(frame(PONG, buf.subarray(start, at)));
        else if (opcode === 0x8) return end(frame(CLOSE, buf.subarray(start, Math.min(at, start + 2))));
        else if (opcode !== 0xa) return end(CLOSE_PROTOCOL);
      }
      if (closed) return;
      buffer = at >= buf.length ? null : buf.subarray(at);
      if (buffer && buffer.length > MAX_FRAME + 14) end(CLOSE_PROTOCOL);
    };
    if (rest) onData(rest);
    return onData;
  }

  /** Writes a message just published to every subscriber of its channel: each form built once, one write each. */
  fanOut(channel: string, id: number, channelJson: string, dataJson: string, time: number): void {
    const sse = this.#sse.get(channel);
    if (sse) {
      const event = `id: ${id}\ndata: ${dataJson}\n\n`;
      const chunk = Buffer.from(`${Buffer.byteLength(event).toString(16)}\r\n${event}\r\n`);
      for (const socket of sse) socket.write(chunk);
    }
    const ws = this.#ws.get(channel);
    if (ws) {
      const message = frame(TEXT, `{"type":"message","room":${channelJson},"id":"${id}","data":${dataJson},"time":${time}}`);
      for (const socket of ws) socket.write(message);
    }
  }
}
