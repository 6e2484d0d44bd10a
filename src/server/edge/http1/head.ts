/**
 * The request head of Ladder's own HTTP/1.1 lane, as pure functions (no socket, no state): the lane
 * takes only requests it can read without doubt, and hands anything else to node:http, whose parser
 * (llhttp) is the authority on the rest of HTTP/1.1.
 *
 * What is read here is deliberately narrow, so the lane can never understand a request differently
 * from node:http — the root of request smuggling behind a proxy:
 * - request line `METHOD SP origin-form-target SP HTTP/1.1`, and only `GET` or `POST`;
 * - every line ends in CRLF; a bare CR or LF, a folded line (obs-fold), a control or non-ASCII byte, a
 *   space before a colon, a header named twice: handed off;
 * - a `POST` carries one `content-length` of plain digits and no `transfer-encoding`; a `GET` carries no
 *   body at all; `expect`, `upgrade` and a `connection: upgrade` are handed off;
 * - a `host` header is required (node:http answers 400 without one, and so must the lane).
 * A head larger than the server's maxHeaderBytes is handed off as well: node:http answers it with 431.
 */

export interface RequestHead {
  readonly method: "GET" | "POST";
  /** The request target as sent: an origin-form path with its query. */
  readonly target: string;
  /** Header names lower-cased, each present once; a null-prototype object, so any name is only data. */
  readonly headers: Record<string, string>;
  /** Bytes of the head, its final CRLF CRLF included: the body (if any) starts here. */
  readonly headBytes: number;
  /** The body's length from `content-length`; 0 for a GET. */
  readonly bodyBytes: number;
  /** The client asked to close the connection after this exchange (`connection: close`). */
  readonly close: boolean;
}

/** Not enough bytes yet to tell: wait for more. */
export const INCOMPLETE = 0;
/** node:http's to read: not a request the lane takes, or one it could read differently. */
export const HAND_OFF = 1;

export type HeadResult = RequestHead | typeof INCOMPLETE | typeof HAND_OFF;

/** What the lane takes: requests for this one path (its query aside), bodies up to `maxBodyBytes`. */
export interface LaneRoute {
  readonly path: string;
  readonly maxBodyBytes: number;
  readonly maxHeaderBytes: number;
}

const END_OF_HEAD = Buffer.from("\r\n\r\n", "latin1");
const REQUEST_LINE = /^(GET|POST) (\/[\x21-\x7e]*) HTTP\/1\.1$/;
/** A field line: a token, a colon, then visible ASCII, spaces and tabs (no CR, LF, other controls or obs-text). */
const FIELD_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x20-\x7e\t]*)$/;
const DIGITS = /^[0-9]{1,15}$/;

/**
 * How far a head arriving in pieces has been looked at, so each new piece costs its own length and not
 * the whole head again (a head sent a byte at a time must not cost the square of its length).
 */
export interface HeadProgress {
  /** Bytes already searched for the end of the head. */
  searched: number;
  /** The request line is complete and is one the lane takes. */
  lineChecked: boolean;
}

export function freshProgress(): HeadProgress {
  return { searched: 0, lineChecked: false };
}

/**
 * Reads the request head at the start of `buffer`. Returns {@link INCOMPLETE} while the head could still
 * turn out to be the lane's, {@link HAND_OFF} as soon as it cannot. `progress` carries what earlier
 * looks at a shorter `buffer` found; it is updated on INCOMPLETE.
 */
export function readHead(buffer: Buffer, route: LaneRoute, progress: HeadProgress = freshProgress()): HeadResult {
  const end = buffer.indexOf(END_OF_HEAD, Math.max(0, progress.searched - 3));
  if (end === -1) {
    if (buffer.length > route.maxHeaderBytes) return HAND_OFF;
    if (!progress.lineChecked) {
      const line = firstLine(buffer, progress.searched, route);
      if (line === HAND_OFF) return HAND_OFF;
      progress.lineChecked = line;
    }
    progress.searched = buffer.length;
    return INCOMPLETE;
  }
  const headBytes = end + 4;
  if (headBytes > route.maxHeaderBytes) return HAND_OFF;
  return parseHead(buffer.toString("latin1", 0, end), headBytes, route);
}

/**
 * The request line so far: true once complete and the lane's, false while it could still be,
 * HAND_OFF once it cannot. Only the bytes after `searched` can hold its end.
 */
function firstLine(buffer: Buffer, searched: number, route: LaneRoute): boolean | typeof HAND_OFF {
  const eol = buffer.indexOf(0x0a, searched);
  if (eol === -1) {
    // Only the first bytes can still differ from `GET|POST <path>`: compare no more than those.
    const n = Math.min(buffer.length, route.path.length + 5);
    return couldStart(buffer.toString("latin1", 0, n), route.path) ? false : HAND_OFF;
  }
  const line = buffer.toString("latin1", 0, eol);
  if (!line.endsWith("\r")) return HAND_OFF;
  const match = REQUEST_LINE.exec(line.slice(0, -1));
  return match !== null && targetIsLanes(match[2]!, route.path) ? true : HAND_OFF;
}

/** The start of a request line that could still become `GET|POST <path>…`. */
function couldStart(partial: string, path: string): boolean {
  for (const method of ["GET ", "POST "]) {
    const wanted = method + path;
    const n = Math.min(partial.length, wanted.length);
    if (partial.slice(0, n) === wanted.slice(0, n)) return true;
  }
  return false;
}

function targetIsLanes(target: string, path: string): boolean {
  return target.length === path.length ? target === path : target.startsWith(path) && target.charCodeAt(path.length) === 0x3f; /* ? */
}

/** Parses the head's text (without its final CRLF CRLF). */
export function parseHead(text: string, headBytes: number, route: LaneRoute): RequestHead | typeof HAND_OFF {
  const lines = text.split("\r\n");
  const request = REQUEST_LINE.exec(lines[0]!);
  if (request === null) return HAND_OFF;
  const method = request[1] as "GET" | "POST";
  const target = request[2]!;
  if (!targetIsLanes(target, route.path)) return HAND_OFF;
  const headers = Object.create(null) as Record<string, string>;
  for (let i = 1; i < lines.length; i++) {
    const field = FIELD_LINE.exec(lines[i]!);
    if (field === null) return HAND_OFF;
    const name = field[1]!.toLowerCase();
    if (headers[name] !== undefined) return HAND_OFF;
    // Trailing whitespace is not part of the value (RFC 9110 §5.5); the regex kept it to stay linear.
    headers[name] = trimEnd(field[2]!);
  }
  if (headers.host === undefined || headers["transfer-encoding"] !== undefined || headers.expect !== undefined || headers.upgrade !== undefined) return HAND_OFF;
  const connection = headers.connection;
  let close = false;
  if (connection !== undefined) {
    for (const option of connection.toLowerCase().split(",")) {
      const token = option.trim();
      if (token === "close") close = true;
      else if (token === "upgrade") return HAND_OFF;
    }
  }
  const length = headers["content-length"];
  let bodyBytes = 0;
  if (method === "POST") {
    if (length === undefined || !DIGITS.test(length)) return HAND_OFF;
    bodyBytes = Number(length);
    // Larger bodies are refused with 413 by the general path, which reads Content-Length the same way.
    if (bodyBytes > route.maxBodyBytes) return HAND_OFF;
  } else if (length !== undefined && length !== "0") {
    return HAND_OFF;
  }
  return { method, target, headers, headBytes, bodyBytes, close };
}

function trimEnd(value: string): string {
  const last = value.charCodeAt(value.length - 1);
  return last === 0x20 || last === 0x09 ? value.replace(/[ \t]+$/, "") : value;
}
