/**
 * A request target as the hub reads it: its pathname and its query, exactly as WHATWG URL parsing
 * gives them, without building a URL for the usual plain target. A URL costs a few microseconds per
 * request — a tenth of a long-poll's whole cost on the fast lane.
 */

const BASE = "http://hub.invalid";

/** What the hub reads of a request target. */
export interface Target {
  readonly pathname: string;
  readonly searchParams: URLSearchParams;
}

/**
 * A query's pairs as URL gives them. URLSearchParams reads the query string the same way but for two
 * things: it drops one leading `?`, which URL keeps in the first name ("??a=1" has "?a"), and node's
 * decodes non-ASCII among escapes ("%aaé") differently from URL, which encodes it first. A leading `&`
 * makes an empty pair, which both skip; non-ASCII (rare: the fast lane hands such targets to node:http)
 * goes through URL itself.
 */
function queryParams(query: string): URLSearchParams {
  if (NON_ASCII.test(query)) return new URL(`?${query}`, BASE).searchParams;
  return new URLSearchParams(query.charCodeAt(0) === 0x3f /* ? */ ? `&${query}` : query);
}

const NON_ASCII = /[^\x00-\x7f]/;

/**
 * Targets whose pathname URL parsing returns unchanged: no dot segments, escapes, `//` start or other
 * characters it would encode or resolve. The query after `?` parses the same either way: URL
 * percent-encodes what it must there and URLSearchParams decodes it back; a fragment (`#…`) is cut off.
 */
const PLAIN_PATH = /^\/(?!\/)[A-Za-z0-9_\-/]*(?:\?|$)/;

export function targetPathname(target: string): string {
  const plain = PLAIN_PATH.exec(target);
  if (plain) return plain[0].endsWith("?") ? plain[0].slice(0, -1) : plain[0];
  return new URL(target, BASE).pathname;
}

export function parseTarget(target: string): Target {
  const plain = PLAIN_PATH.exec(target);
  if (plain === null) return new URL(target, BASE);
  const path = plain[0];
  if (!path.endsWith("?")) return { pathname: path, searchParams: new URLSearchParams() };
  const hash = target.indexOf("#", path.length);
  const query = hash === -1 ? target.slice(path.length) : target.slice(path.length, hash);
  return { pathname: path.slice(0, -1), searchParams: queryParams(query) };
}
