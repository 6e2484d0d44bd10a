/**
 * Error codes shared by every transport. HTTP answers `{"error":{"code","message"}}` with `status`;
 * WebSocket answers `{"type":"error","code","message","ref"?}`. Documented in docs/protocol.md.
 */

export const ERROR_STATUS = {
  bad_request: 400,
  bad_json: 400,
  bad_channel: 400,
  bad_since: 400,
  bad_wait: 400,
  bad_limit: 400,
  bad_frame: 400,
  unauthenticated: 401,
  /** A long-lived connection's token ran out: SSE `event: error`, WebSocket close 4001. */
  token_expired: 401,
  forbidden: 403,
  origin_not_allowed: 403,
  not_found: 404,
  metrics_disabled: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  payload_too_large: 413,
  too_many_messages: 413,
  unsupported_media_type: 415,
  too_many_channels: 400,
  too_many_connections: 429,
  rate_limited: 429,
  headers_too_large: 431,
  draining: 503,
  unavailable: 503,
  /** Client only: a publish did not fit the client's queue while disconnected (or was dropped from it). */
  queue_full: 503,
  internal: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export interface ErrorBody {
  readonly error: { readonly code: ErrorCode; readonly message: string };
}

export class LadderError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Seconds to wait before trying again, when the refusal knows (a rate limit); HTTP sends it as Retry-After. */
  readonly retryAfter?: number;

  constructor(code: ErrorCode, message: string, retryAfter?: number) {
    super(message);
    this.name = "LadderError";
    this.code = code;
    this.status = ERROR_STATUS[code];
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

/** The HTTP error body of a refusal (kept off the class so the browser client does not carry it). */
export function errorBody(error: LadderError): ErrorBody {
  return { error: { code: error.code, message: error.message } };
}

export function isLadderError(value: unknown): value is LadderError {
  return value instanceof LadderError;
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(ERROR_STATUS, value);
}

/**
 * An error read back from the wire (an HTTP error body, a WebSocket `error` frame) as a {@link LadderError}.
 * A code this version does not know (a newer server) keeps its text in the message, under `internal`.
 */
export function errorFromWire(code: unknown, message: unknown, retryAfter?: number): LadderError {
  const text = typeof message === "string" ? message : "";
  if (isErrorCode(code)) return new LadderError(code, text, retryAfter);
  return new LadderError("internal", `${String(code)}: ${text}`, retryAfter);
}
