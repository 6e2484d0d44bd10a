/**
 * The few files `ladder serve` hands out beside the hub: the demo page (demo/) at `/` and the browser
 * client bundle at `/ladder-client.js`. Read once at first use and kept in memory; nothing outside those
 * folders can be reached.
 */
import { readFileSync } from "node:fs";
import { extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { LadderError } from "../../protocol/index.js";
import type { HubRequest, HubResponse } from "./http.js";
import { sendError } from "./refusal.js";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".json": "application/json; charset=utf-8",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

/** The package root: four levels above dist/src/server/edge (test/package.test.ts checks it from the tarball). */
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

/** Where the browser client bundle (the `ladder-hub/client/browser` export) lies on disk. */
export const CLIENT_BUNDLE_FILE = join(ROOT, "dist", "browser", "ladder-client.js");

export interface StaticOptions {
  readonly demoDir?: string;
  readonly clientBundle?: string;
}

/** A file read at first use and kept (or its absence); files change only with a new install. */
function fileCache(): (path: string) => Buffer | null {
  const cache = new Map<string, Buffer | null>();
  return (path) => {
    if (!cache.has(path)) {
      try {
        cache.set(path, readFileSync(path));
      } catch {
        cache.set(path, null);
      }
    }
    return cache.get(path)!;
  };
}

/** Answers GET or HEAD with a file's bytes; any other method with 405. */
function sendFile(req: HubRequest, res: HubResponse, file: string, body: Buffer): void {
  const method = req.method ?? "GET";
  if (method !== "GET" && method !== "HEAD") {
    sendError(res, new LadderError("method_not_allowed", "use GET"), { allow: "GET, HEAD" });
    return;
  }
  res.writeHead(200, {
    "content-type": TYPES[extname(file)] ?? "application/octet-stream",
    "content-length": String(body.length),
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
  });
  if (method === "HEAD") res.end();
  else res.end(body);
}

export function staticFiles(options: StaticOptions = {}): (req: HubRequest, res: HubResponse) => void {
  const demoDir = normalize(options.demoDir ?? join(ROOT, "demo"));
  const bundle = options.clientBundle ?? CLIENT_BUNDLE_FILE;
  const load = fileCache();
  return (req, res) => {
    const pathname = new URL(req.url ?? "/", "http://x").pathname;
    let file: string | null;
    if (pathname === "/ladder-client.js") file = bundle;
    else {
      const relative = pathname === "/" ? "index.html" : decodeURIComponent(pathname.replace(/^\/(demo\/)?/, ""));
      const full = normalize(join(demoDir, relative));
      file = full.startsWith(demoDir + sep) ? full : null;
    }
    const body = file ? load(file) : null;
    if (!body || !file) {
      sendError(res, new LadderError("not_found", `no route for ${pathname}`));
      return;
    }
    sendFile(req, res, file, body);
  };
}

/**
 * For an embedded hub: serves the browser client bundle at `path` (default `/ladder-client.js`), so a page
 * can `import { createClient } from "/ladder-client.js"`. Middleware: other paths go to `next` (404 without one).
 */
export function clientBundle(options: { readonly path?: string } = {}): (req: HubRequest, res: HubResponse, next?: (error?: unknown) => void) => void {
  const path = options.path ?? "/ladder-client.js";
  const load = fileCache();
  return (req, res, next) => {
    const pathname = new URL(req.url ?? "/", "http://x").pathname;
    if (pathname !== path) {
      if (next) next();
      else sendError(res, new LadderError("not_found", `no route for ${pathname}`));
      return;
    }
    const body = load(CLIENT_BUNDLE_FILE);
    if (!body) {
      sendError(res, new LadderError("not_found", "the client bundle is missing (run npm run build)"));
      return;
    }
    sendFile(req, res, CLIENT_BUNDLE_FILE, body);
  };
}
