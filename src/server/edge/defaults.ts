/**
 * The listener's defaults, apart from the code that uses them so that the CLI's settings table can show
 * them without loading the server.
 */
import type { RequestLimits } from "./listen.js";

/** nginx's default for http2_max_concurrent_streams; each open SSE stream or held poll takes one. */
export const DEFAULT_MAX_CONCURRENT_STREAMS = 128;

/**
 * Header size is node's own default; the timeouts are tighter than node's (60 s, 300 s) because a hub's
 * long-lived responses do not need long requests, and every half-sent request holds a socket.
 */
export const DEFAULT_REQUEST_LIMITS: RequestLimits = { maxHeaderBytes: 16 * 1024, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000 };
