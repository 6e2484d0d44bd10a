/**
 * One published message, encoded once for every subscriber of this node. With a thousand subscribers on
 * a channel, serialising per subscriber would dominate the cost of a delivery; each encoding here is made
 * on first use and shared by every connection that sends the same bytes.
 */
import { encodeEvent, type Message } from "../../protocol/index.js";

const CRLF = Buffer.from("\r\n", "latin1");

export class Delivery {
  readonly message: Message;
  #dataJson: string | undefined;
  #json: string | undefined;
  #pollBody: string | undefined;
  #sse: Buffer | undefined;
  #sseChunk: Buffer | undefined;
  #ws: Buffer | undefined;
  #wsWire: Buffer | undefined;

  constructor(message: Message) {
    this.message = message;
  }

  get id(): string {
    return this.message.id;
  }

  get channel(): string {
    return this.message.channel;
  }

  /** JSON of the published data, exactly as an SSE `data:` line carries it for a one-channel stream. */
  get dataJson(): string {
    return (this.#dataJson ??= JSON.stringify(this.message.data) ?? "null");
  }

  /** The whole message as a poll answer's array holds it: exactly `JSON.stringify(message)`. */
  get json(): string {
    return (this.#json ??= JSON.stringify(this.message));
  }

  /** A poll answer of this message alone, the usual long-poll answer: `JSON.stringify([message])`. */
  get pollBody(): string {
    return (this.#pollBody ??= "[" + this.json + "]");
  }

  /** The SSE event of a one-channel stream: `id:` and the bare data, as the guide's EventSource expects. */
  get sseEvent(): Buffer {
    return (this.#sse ??= Buffer.from(encodeEvent({ id: this.message.id, data: this.dataJson })));
  }

  /**
   * {@link sseEvent} as one HTTP/1.1 chunk (size line, event, CRLF): the exact bytes `res.write` puts on a
   * chunked response, made once so each stream gets one socket write of shared bytes.
   */
  get sseChunk(): Buffer {
    if (this.#sseChunk === undefined) {
      const event = this.sseEvent;
      this.#sseChunk = Buffer.concat([Buffer.from(`${event.length.toString(16)}\r\n`, "latin1"), event, CRLF]);
    }
    return this.#sseChunk;
  }

  /**
   * {@link wsFrame} as a whole unmasked WebSocket text frame, framed once by the transport's `frame`
   * and written as is to every socket.
   */
  wsWire(frame: (payload: Buffer) => Buffer): Buffer {
    return (this.#wsWire ??= frame(this.wsFrame));
  }

  /** The WebSocket `message` frame payload as UTF-8 bytes. */
  get wsFrame(): Buffer {
    const { id, channel, time } = this.message;
    return (this.#ws ??= Buffer.from(
      `{"type":"message","room":${JSON.stringify(channel)},"id":"${id}","data":${this.dataJson},"time":${time}}`,
    ));
  }
}
