// Bundles the browser client (src/client and src/protocol) into one small ES module that
// `ladder serve` hands out at /ladder-client.js, and reports its min+gzip size against the budget.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { mkdirSync, writeFileSync } from "node:fs";

export const BUDGET_BYTES = 8 * 1024;

/** One minified ES module of `entry` and its min and min+gzip sizes. */
async function bundle(entry, external = []) {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    write: false,
    legalComments: "none",
    external,
  });
  const code = result.outputFiles[0].contents;
  return { code, minBytes: code.length, gzipBytes: gzipSync(code, { level: 9 }).length };
}

export function bundleClient() {
  return bundle("src/client/index.ts");
}

/**
 * `ladder-hub/react` on its own: what it adds to an app that already has React and the client (both left
 * out). Measured, not shipped as a bundle: apps import dist/src/react through their own bundler.
 */
export function bundleReact() {
  return bundle("src/react/index.ts", ["react", "../client/index.js", "../protocol/index.js"]);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { code, minBytes, gzipBytes } = await bundleClient();
  mkdirSync("dist/browser", { recursive: true });
  writeFileSync("dist/browser/ladder-client.js", code);
  console.log(`dist/browser/ladder-client.js: ${minBytes} B min, ${gzipBytes} B min+gzip (budget ${BUDGET_BYTES} B)`);
  const react = await bundleReact();
  console.log(`ladder-hub/react (React and the client excluded): ${react.minBytes} B min, ${react.gzipBytes} B min+gzip`);
}
