/**
 * One refusal path for requests and upgrades (engine.io's abortRequest / abortUpgrade): a policy decides
 * the status, code and headers of a refusal from its error; two renderers write it — as an HTTP response,
 * or on a raw socket that no node:http response owns (a refused upgrade, a request node could not parse).
 */
import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { errorBody, LadderError } from "../../protocol/index.js";
import { abortResponse, sendJson, type ExchangeResponse } from "./http.js";

export type Headers = Readonly<Record<string, string>>;

/**
 * The headers a refusal carries besides `extra` (an `allow`, an `upgrade` hint): Retry-After on every 429
 * and 503 (the error's own wait, else one second), and on a 401 the scheme that would be accepted
 * (RFC 6750 §3).
 */
export function refusalHeaders(error: LadderError, extra: Headers = {}): Record<string, string> {
  const headers: Record<string, string> = { ...extra };
  if (error.status === 429 || error.status === 503) headers["retry-after"] = String(error.retryAfter ?? 1);
  if (error.status === 401) headers["www-authenticate"] = "Bearer";
  return headers;
}

/** Any thrown value as the error to answer with: a {@link LadderError} as it is, anything else as a 500. */
export function asLadderError(error: unknown): LadderError {
  return error instanceof LadderError ? error : new LadderError("internal", "internal error");
}

/** Renders a refusal as an HTTP response; one whose headers already went out is cut instead. */
export function sendError(res: ExchangeResponse, error: LadderError, extra: Headers = {}): void {
  if (res.headersSent) {
    abortResponse(res);
    return;
  }
  sendJson(res, error.status, errorBody(error), refusalHeaders(error, extra));
}

/** How long a peer answered on a raw socket may take to read the answer and close before it is cut. */
export const RAW_ANSWER_GRACE_MS = 5_000;

function destroyThis(this: Duplex): void {
  this.destroy();
}

function destroySocket(socket: Duplex): void {
  socket.destroy();
}

/**
 * Renders a refusal on a raw socket as a whole HTTP/1.1 response and closes it once the answer is flushed:
 * end(), not write() then destroy(), which can drop the bytes on a TLS socket. Such sockets are
 * half-open-capable (node:http's are), so end() alone waits for the peer's FIN: a peer that never sends it
 * would hold the socket for ever. What the peer still sends is read and dropped (so its FIN is seen, and
 * closing does not reset the connection before it reads the answer), and the socket is cut after a grace
 * period whatever the peer does.
 */
export function endWithError(socket: Duplex, error: LadderError, extra: Headers = {}): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.on("error", destroyThis);
  const guard = setTimeout(destroySocket, RAW_ANSWER_GRACE_MS, socket);
  guard.unref();
  socket.once("close", () => clearTimeout(guard));
  socket.resume();
  const body = JSON.stringify(errorBody(error));
  const headers = Object.entries(refusalHeaders(error, extra))
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join("");
  socket.end(
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? "Error"}\r\n` +
      `connection: close\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n${headers}\r\n${body}`,
  );
}
