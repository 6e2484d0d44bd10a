/**
 * Which web origins may use the hub: CORS for the HTTP rungs, and the Origin check of a WebSocket upgrade
 * (browsers apply no CORS to it).
 */
import type { Target } from "../edge/target.js";
import { CURSOR_HEADER, GAP_HEADER, LadderError } from "../../protocol/index.js";
import type { ExchangeRequest, ExchangeResponse, HubRequest } from "../edge/http.js";
import { LaneResponse } from "../edge/http1/exchange.js";
import { cookieValue, TOKEN_COOKIE, TOKEN_QUERY, type Access } from "./access.js";

export interface CorsOptions {
  /** Origins (`https://app.example`) whose pages may call the HTTP rungs; `*` for any. */
  readonly origins: readonly string[];
  /** Let those pages send cookies (a `ladder_token` cookie) with their requests. */
  readonly credentials?: boolean;
}

/** Exact, case-insensitive; `*` allows any origin. */
export function originAllowed(list: readonly string[], origin: string): boolean {
  const wanted = origin.toLowerCase();
  return list.some((entry) => entry === "*" || entry.toLowerCase() === wanted);
}

function sameHost(origin: string, host: string | undefined): boolean {
  try {
    return host !== undefined && new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    return false;
  }
}

/**
 * Cross-site WebSocket hijacking: browsers send cookies with a WebSocket upgrade from any page and do
 * not apply CORS to it, so the Origin header is the only defence. With `allowedOrigins` an upgrade whose
 * Origin is not listed is refused. Without it, an upgrade authenticated only by the cookie must at least
 * come from the hub's own host. Clients that send no Origin (not browsers) are not affected.
 */
export function upgradeOriginRefusal(req: HubRequest, url: Target, allowedOrigins: readonly string[] | undefined, access: Access): LadderError | null {
  const origin = req.headers.origin;
  if (typeof origin !== "string" || origin === "") return null;
  if (allowedOrigins) {
    return originAllowed(allowedOrigins, origin) ? null : new LadderError("origin_not_allowed", `origin ${origin} may not open a WebSocket here`);
  }
  const cookieOnly =
    access.enabled &&
    cookieValue(req.headers.cookie, TOKEN_COOKIE) !== null &&
    typeof req.headers.authorization !== "string" &&
    !url.searchParams.has(TOKEN_QUERY);
  const host = req.headers.host ?? req.headers[":authority"];
  if (cookieOnly && !sameHost(origin, typeof host === "string" ? host : undefined)) {
    return new LadderError("origin_not_allowed", "a cookie-authenticated WebSocket must come from this host or an allowed origin");
  }
  return null;
}

const CORS_METHODS = "GET, HEAD, POST, OPTIONS";
const CORS_HEADERS = "authorization, content-type, last-event-id";
/** Response headers a page may read: the poll cursor and gap, and Retry-After on 429/503. */
const CORS_EXPOSE = `${CURSOR_HEADER}, ${GAP_HEADER}, retry-after`;

/**
 * Adds CORS headers for an allowed Origin (echoed, never `*`, so credentials can work) and answers a
 * preflight. Returns true when the request was a preflight and has been answered; throws the 403 for a
 * preflight from an origin not allowed, so it is answered and counted like every other refusal.
 */
export function applyCors(req: ExchangeRequest, res: ExchangeResponse, cors: CorsOptions): boolean {
  res.setHeader("vary", "Origin");
  const origin = req.headers.origin;
  const allowed = typeof origin === "string" && origin !== "" && originAllowed(cors.origins, origin);
  if (allowed) {
    res.setHeader("access-control-allow-origin", origin);
    if (cors.credentials) res.setHeader("access-control-allow-credentials", "true");
    res.setHeader("access-control-expose-headers", CORS_EXPOSE);
  }
  if (req.method !== "OPTIONS") return false;
  if (!allowed) {
    // No allow headers: the browser refuses the real request; the body says why for whoever debugs it.
    throw new LadderError("origin_not_allowed", `origin ${String(origin)} is not allowed`);
  }
  // Unreachable: the lane takes only GET and POST (edge/http1/head.ts).
  if (res instanceof LaneResponse) throw new Error("a preflight on the HTTP/1.1 lane");
  res.writeHead(204, {
    "access-control-allow-methods": CORS_METHODS,
    "access-control-allow-headers": CORS_HEADERS,
    "access-control-max-age": "600",
  });
  res.end();
  return true;
}
