/**
 * The request and response of one exchange on Ladder's HTTP/1.1 lane: the few members of node:http's
 * IncomingMessage and ServerResponse that the publish and poll handlers use, and nothing else. The
 * request arrives whole (head and body read before the handler runs); the response is written in one
 * piece by `end()`. Neither is a stream, which is what makes them cheap: node:http builds a Readable
 * and a Writable per request, with their state and listeners, for a body of a hundred bytes.
 */
import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";

/** What the connection learns from its exchange. */
export interface ExchangeOwner {
  /** The server is closing: every answer from now on closes its connection. */
  readonly closing: boolean;
  /** The response was written; `close` when the connection must close after it. */
  responded(close: boolean): void;
  /** The response was abandoned (destroy()): the connection goes. */
  abandoned(): void;
}

type Listener = () => void;

/** Listeners of `close` (request and response) and `finish` (response), fired once. */
export class Signals {
  close: Listener[] | null = null;
  finish: Listener[] | null = null;

  add(event: string, listener: Listener): void {
    if (event === "close") (this.close ??= []).push(listener);
    else if (event === "finish") (this.finish ??= []).push(listener);
  }

  remove(event: string, listener: Listener): void {
    const list = event === "close" ? this.close : event === "finish" ? this.finish : null;
    const at = list?.indexOf(listener) ?? -1;
    if (at >= 0) list!.splice(at, 1);
  }

  /** Fires `finish` (when the answer went out) then `close`, after the current call stack, as node's do. */
  fire(finished: boolean): void {
    const finish = finished ? this.finish : null;
    const close = this.close;
    this.finish = this.close = null;
    if ((finish === null || finish.length === 0) && (close === null || close.length === 0)) return;
    queueMicrotask(() => {
      if (finish) for (const listener of finish) listener();
      if (close) for (const listener of close) listener();
    });
  }
}

export class LaneRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly socket: Socket;
  /** The whole body, read before the handler runs (the bytes the general path would read from the stream). */
  readonly body: Buffer;
  /** The body has been read to its end: always, on the lane (so nothing is ever left unread to close for). */
  readonly complete = true;
  readonly #signals: Signals;

  constructor(method: string, url: string, headers: Record<string, string>, socket: Socket, body: Buffer, signals: Signals) {
    this.method = method;
    this.url = url;
    this.headers = headers;
    this.socket = socket;
    this.body = body;
    this.#signals = signals;
  }

  on(event: "close", listener: Listener): this {
    this.#signals.add(event, listener);
    return this;
  }

  once(event: "close", listener: Listener): this {
    return this.on(event, listener);
  }

  off(event: "close", listener: Listener): this {
    this.#signals.remove(event, listener);
    return this;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/**
 * Header names as node:http checks them (a token), and values of visible ASCII, spaces and tabs: the
 * lane writes head and body as one UTF-8 string, so a byte node:http would send as Latin-1 is refused
 * rather than sent differently (every header of the lane's routes is ASCII: ids, channels, origins).
 */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const VALUE = /^[\t\x20-\x7e]*$/;

const JSON_HEADERS = "content-type: application/json; charset=utf-8\r\ncache-control: no-store\r\n";

let dateSecond = -1;
let dateText = "";

/** The Date header's value, made once a second (RFC 9110 §6.6.1: an origin server with a clock sends it). */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

export class LaneResponse {
  statusCode = 200;
  headersSent = false;
  writableEnded = false;
  readonly socket: Socket;
  /** Header lines of writeHead, each `name: value\r\n`. */
  #lines = "";
  /** Headers of setHeader, by lower-case name: writeHead's own of the same name replace them, as in node. */
  #set: Map<string, string> | null = null;
  #hasLength = false;
  #close: boolean;
  readonly #keepAlive: string;
  readonly #owner: ExchangeOwner;
  readonly #signals: Signals;

  /** `keepAlive` is the header block that tells the client how long an idle connection stays open. */
  constructor(socket: Socket, owner: ExchangeOwner, close: boolean, keepAlive: string, signals: Signals) {
    this.socket = socket;
    this.#owner = owner;
    this.#close = close;
    this.#keepAlive = keepAlive;
    this.#signals = signals;
  }

  setHeader(name: string, value: string | number): this {
    if (this.headersSent) throw new Error("headers already sent");
    const line = this.#line(name, String(value));
    if (line !== null) (this.#set ??= new Map()).set(name.toLowerCase(), line);
    return this;
  }

  /** The status and headers, as an object or node's flat `[name, value, …]` list. Sent by `end()`. */
  writeHead(status: number, headers?: Readonly<Record<string, string | number>> | readonly string[]): this {
    if (this.headersSent) throw new Error("headers already sent");
    if (!Number.isInteger(status) || status < 100 || status > 999) throw new RangeError(`invalid status code ${status}`);
    this.statusCode = status;
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) this.#add(headers[i]!, headers[i + 1]!);
    } else if (headers) {
      for (const name of Object.keys(headers)) this.#add(name, String((headers as Record<string, string | number>)[name]));
    }
    this.#seal();
    this.headersSent = true;
    return this;
  }

  /**
   * A JSON answer (every answer of the lane's two routes): the fixed headers as one prepared block, only
   * the extra ones (a cursor, a gap, a refusal's Retry-After) checked and added one by one.
   */
  sendJson(status: number, text: string, extra?: Readonly<Record<string, string>>): void {
    if (this.headersSent) throw new Error("headers already sent");
    this.statusCode = status;
    this.#lines = JSON_HEADERS;
    if (extra !== undefined) for (const name of Object.keys(extra)) this.#add(name, extra[name]!);
    this.#seal();
    this.headersSent = true;
    this.end(text);
  }

  /** Writes the whole response — head and body in one write — and gives the connection back. */
  end(body = ""): this {
    if (this.writableEnded) return this;
    this.writableEnded = true;
    this.headersSent = true;
    const socket = this.socket;
    if (!socket.writable) {
      this.#signals.fire(false);
      this.#owner.abandoned();
      return this;
    }
    this.#seal();
    if (this.#owner.closing) this.#close = true;
    const status = this.statusCode;
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Unknown"}\r\n${this.#lines}`;
    if (!this.#hasLength) head += `content-length: ${Buffer.byteLength(body)}\r\n`;
    head += `date: ${httpDate()}\r\n${this.#close ? "connection: close\r\n" : this.#keepAlive}\r\n`;
    socket.write(head + body);
    this.#signals.fire(true);
    this.#owner.responded(this.#close);
    return this;
  }

  /** Abandons an answer not yet written: the connection is cut, as node's res.destroy() cuts it. */
  destroy(): void {
    if (this.writableEnded) return;
    this.writableEnded = true;
    this.#signals.fire(false);
    this.#owner.abandoned();
  }

  on(event: "close" | "finish", listener: Listener): this {
    this.#signals.add(event, listener);
    return this;
  }

  once(event: "close" | "finish", listener: Listener): this {
    return this.on(event, listener);
  }

  off(event: "close" | "finish", listener: Listener): this {
    this.#signals.remove(event, listener);
    return this;
  }

  /** Puts setHeader's headers (those writeHead did not replace) before writeHead's, once. */
  #seal(): void {
    if (this.#set === null) return;
    let set = "";
    for (const line of this.#set.values()) set += line;
    this.#set = null;
    this.#lines = set + this.#lines;
  }

  #add(name: string, value: string): void {
    const line = this.#line(name, value);
    if (line === null) return;
    this.#set?.delete(name.toLowerCase());
    this.#lines += line;
  }

  /** The header's line, or null for one the lane writes itself; throws on what node:http would refuse. */
  #line(name: string, value: string): string | null {
    if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
    if (!VALUE.test(value)) throw new TypeError(`invalid value for header ${name}`);
    const lower = name.toLowerCase();
    if (lower === "connection") {
      if (/(?:^|,)\s*close\s*(?:,|$)/i.test(value)) this.#close = true;
      return null;
    }
    // The lane decides these (framing and keep-alive): the handler's own would contradict them.
    if (lower === "keep-alive" || lower === "transfer-encoding" || lower === "date") return null;
    if (lower === "content-length") this.#hasLength = true;
    return `${name}: ${value}\r\n`;
  }
}

