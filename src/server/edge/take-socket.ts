/**
 * Takes an HTTP/1.1 socket away from node:http once a never-ending response's head is out, the way node
 * hands a socket over on an upgrade. An idle SSE stream otherwise keeps node:http's per-connection
 * objects for its whole life — the parser (native, with its header buffers), IncomingMessage,
 * ServerResponse with its stored head, the connection state and eight bound listeners — about 5 KB of
 * heap and more of native memory per stream, for a response that from then on is only chunks written to
 * the socket (docs/performance.md, "Idle connections").
 *
 * node:http has no public call for this. What it does on an upgrade is stable across Node 20–24
 * (lib/_http_server.js, onParserExecuteCommon): remove its socket listeners, unconsume and free the
 * parser. Every step here checks that node is laid out as expected and otherwise leaves the socket
 * where it is (null): the caller then goes on through the response, as before.
 */
import { createRequire } from "node:module";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";

interface NodeParser {
  incoming: IncomingMessage | null;
  finish(): unknown;
}

type FreeParser = (parser: NodeParser, req: IncomingMessage, socket: Socket) => void;

const freeParser: FreeParser | null = (() => {
  try {
    const common = createRequire(import.meta.url)("_http_common") as { freeParser?: unknown };
    return typeof common.freeParser === "function" ? (common.freeParser as FreeParser) : null;
  } catch {
    return null;
  }
})();

/** node:http's listeners on a server socket (bound functions are named "bound <name>"). */
const NODE_LISTENERS: ReadonlyArray<readonly [string, string, boolean]> = [
  // [event, listener name, must be there]
  ["data", "bound socketOnData", true],
  ["end", "bound socketOnEnd", true],
  ["close", "bound socketOnClose", true],
  ["drain", "bound socketOnDrain", true],
  ["error", "socketOnError", false],
  ["timeout", "socketOnTimeout", false],
  ["resume", "onSocketResume", false],
  ["pause", "onSocketPause", false],
];

function nodeListener(socket: Socket, event: string, name: string): ((...args: unknown[]) => void) | undefined {
  return socket.listeners(event).find((listener) => listener.name === name) as ((...args: unknown[]) => void) | undefined;
}

/**
 * The response's socket, no longer node:http's: no more requests are parsed on it, `res` and `req` are
 * left to the garbage collector, and the caller owns the socket from here — its reads, errors, its end
 * (a chunked body still needs its last chunk) and its close. Null when that cannot be done safely: the
 * head is not out, the body is not chunked, the response does not own the socket (queued behind another
 * one), the client already sent more (a pipelined request), or node is not laid out as expected.
 */
export function takeSocket(req: IncomingMessage, res: ServerResponse): Socket | null {
  if (freeParser === null || !res.headersSent || res.writableEnded || !res.chunkedEncoding || !req.complete) return null;
  const socket = res.socket;
  if (socket === null || !socket.writable || req.socket !== socket) return null;
  const holder = socket as Socket & { parser?: NodeParser | null; _httpMessage?: unknown };
  const parser = holder.parser;
  if (!parser || parser.incoming !== req || holder._httpMessage !== res) return null;
  const found: Array<readonly [string, (...args: unknown[]) => void]> = [];
  for (const [event, name, required] of NODE_LISTENERS) {
    const listener = nodeListener(socket, event, name);
    if (listener) found.push([event, listener]);
    else if (required) return null;
  }
  // Nothing of the response may still wait in node:http's own buffer (it goes out on the socket only
  // through the response): after this, the caller's writes would overtake it.
  if ((res as ServerResponse & { outputSize?: number }).outputSize !== 0) return null;
  for (const [event, listener] of found) socket.removeListener(event, listener);
  const consumed = parser as NodeParser & { _consumed?: boolean; unconsume?: () => void };
  if (consumed._consumed && typeof consumed.unconsume === "function") consumed.unconsume();
  consumed._consumed = false;
  parser.finish();
  freeParser(parser, req, socket);
  // Also takes node's close listener off the socket, so nothing there refers to the response any more.
  (res as ServerResponse & { detachSocket(socket: Socket): void }).detachSocket(socket);
  return socket;
}
