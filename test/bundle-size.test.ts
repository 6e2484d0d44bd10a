/**
 * The browser client stays small and browser-only: the esbuild bundle that `ladder serve` hands out at
 * /ladder-client.js fits the min+gzip budget, pulls in no Node built-in, no `ws`, no `pino` and no server
 * code; and src/client itself imports nothing but its own files and src/protocol (no package at all).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

/** The repository root: this file runs as dist/test/bundle-size.test.js. */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CLIENT_DIR = join(ROOT, "src", "client");
const PROTOCOL_DIR = join(ROOT, "src", "protocol");
/** Packages the client may import: none (its SSE reader is src/client/rungs/sse-lines.ts). */
const ALLOWED_PACKAGES = new Set<string>();

interface BuildClient {
  readonly BUDGET_BYTES: number;
  bundleClient(): Promise<{ code: Uint8Array; minBytes: number; gzipBytes: number }>;
}

async function loadBuildScript(): Promise<BuildClient> {
  // bundleClient() resolves its entry point from the working directory: the repository root.
  assert.equal(resolve(process.cwd()), resolve(ROOT), "run the tests from the repository root (node scripts/test.mjs)");
  const url = pathToFileURL(join(ROOT, "scripts", "build-client.mjs")).href;
  return (await import(url)) as BuildClient;
}

/** Every module specifier a bundle still imports or requires (a self-contained bundle has none). */
function bundleSpecifiers(code: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\bimport\s*[\w$*{}\s,]*?\bfrom\s*["'`]([^"'`]+)["'`]/g,
    /\bexport\s*[\w$*{}\s,]*?\bfrom\s*["'`]([^"'`]+)["'`]/g,
    /\bimport\s*["'`]([^"'`]+)["'`]/g,
    /\bimport\s*\(\s*["'`]([^"'`]+)["'`]/g,
    /\brequire\s*\(\s*["'`]([^"'`]+)["'`]/g,
  ];
  for (const pattern of patterns) for (const match of code.matchAll(pattern)) found.push(match[1]!);
  return found;
}

test("the browser bundle fits the min+gzip budget and holds no Node built-in, ws, pino or server code", async (t) => {
  const { bundleClient, BUDGET_BYTES } = await loadBuildScript();
  const { code, minBytes, gzipBytes } = await bundleClient();
  t.diagnostic(`ladder-client.js: ${minBytes} B min, ${gzipBytes} B min+gzip (budget ${BUDGET_BYTES} B, ${((100 * gzipBytes) / BUDGET_BYTES).toFixed(1)}% used)`);
  assert.equal(BUDGET_BYTES, 8192);
  assert.ok(minBytes > 1000, `the bundle is suspiciously small (${minBytes} B): did the build pick up the client?`);
  assert.ok(gzipBytes < BUDGET_BYTES, `min+gzip is ${gzipBytes} B, over the ${BUDGET_BYTES} B budget`);

  const text = new TextDecoder().decode(code);
  // It is the client: its public API is exported.
  assert.match(text, /export\s*\{[^}]*\bcreateClient\b[^}]*\}/, "createClient is exported");

  const specifiers = bundleSpecifiers(text);
  assert.deepEqual(specifiers, [], `the bundle must be self-contained, yet imports ${JSON.stringify(specifiers)}`);
  assert.doesNotMatch(text, /["'`]node:/, "no node: specifier anywhere in the bundle");
  assert.doesNotMatch(text, /["'`]ws["'`]/, "no import of the ws package");
  assert.doesNotMatch(text, /\bpino\b/i, "no pino (the server's logger)");
  assert.doesNotMatch(text, /src\/server|src\\server/, "no path into src/server");
  // Node globals a browser does not have (eventsource-parser's `maxBufferSize` is not a Buffer).
  assert.doesNotMatch(text, /\bBuffer\b/, "no Buffer");
  assert.doesNotMatch(text, /\bprocess\.(env|versions|nextTick|platform|argv)\b/, "no process.*");
  assert.doesNotMatch(text, /\b__dirname\b|\b__filename\b/, "no __dirname/__filename");
  // Strings only the server's transports send; the client never needs them.
  assert.doesNotMatch(text, /Switching Protocols|X-Accel-Buffering/i, "no server transport code");
});

/** The .ts file a relative specifier names ("./x.js" → ./x.ts, "./dir" → ./dir/index.ts). */
function resolveSource(from: string, specifier: string): string {
  const base = resolve(dirname(from), specifier);
  const candidates = [base.replace(/\.js$/, ".ts"), base, `${base}.ts`, join(base, "index.ts")];
  const found = candidates.find((path) => path.endsWith(".ts") && statSync(path, { throwIfNoEntry: false })?.isFile());
  assert.ok(found, `${relative(ROOT, from)} imports ${specifier}, which names no .ts file`);
  return found;
}

function sourcesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourcesUnder(path));
    else if (name.endsWith(".ts")) out.push(path);
  }
  return out;
}

/** Static imports, `export … from`, `import type`, dynamic import() and require(), as TypeScript sees them. */
function specifiersOf(path: string): string[] {
  const info = ts.preProcessFile(readFileSync(path, "utf8"), true, true);
  return info.importedFiles.map((f) => f.fileName);
}

test("src/client imports only src/client and src/protocol (checked through src/protocol too)", () => {
  const roots = sourcesUnder(CLIENT_DIR);
  assert.ok(roots.length >= 5, `found only ${roots.length} files under src/client`);
  const inside = (path: string, dir: string): boolean => path.startsWith(dir + sep);
  const problems: string[] = [];
  const packages = new Set<string>();
  const seen = new Set<string>();
  const queue = [...roots];
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    for (const specifier of specifiersOf(file)) {
      const where = `${relative(ROOT, file)}: "${specifier}"`;
      if (specifier.startsWith("./") || specifier.startsWith("../")) {
        const target = resolveSource(file, specifier);
        if (!inside(target, CLIENT_DIR) && !inside(target, PROTOCOL_DIR)) problems.push(`${where} leaves src/client and src/protocol (${relative(ROOT, target)})`);
        else queue.push(target);
      } else if (ALLOWED_PACKAGES.has(specifier)) {
        packages.add(specifier);
      } else {
        problems.push(`${where} is not allowed (Node built-in, server code or another package)`);
      }
    }
  }
  assert.deepEqual(problems, []);
  // The scan is not vacuous: it reached the protocol module.
  assert.ok([...seen].some((f) => inside(f, PROTOCOL_DIR)), "the scan followed the client into src/protocol");
  assert.deepEqual([...packages], []);
});
