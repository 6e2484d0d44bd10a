// Bundles the browser client (src/client and src/protocol) into one small ES module that
// `ladder serve` hands out at /ladder-client.js, and reports its min+gzip size against the budget.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { mkdirSync, writeFileSync } from "node:fs";

export const BUDGET_BYTES = 8 * 1024;

export async function bundleClient() {
  const result = await build({
    entryPoints: ["src/client/index.ts"],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    write: false,
    legalComments: "none",
  });
  const code = result.outputFiles[0].contents;
  return { code, minBytes: code.length, gzipBytes: gzipSync(code, { level: 9 }).length };
}

/**
 * `ladder/react` on its own: what it adds to an app that already has React and the client (both left out).
 * Measured, not shipped as a bundle: apps import dist/src/react through their own bundler.
 */
export async function bundleReact() {
  const result = await build({
    entryPoints: ["src/react/index.ts"],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    write: false,
    legalComments: "none",
    external: ["react", "../client/index.js", "../protocol/index.js"],
  });
  const code = result.outputFiles[0].contents;
  return { code, minBytes: code.length, gzipBytes: gzipSync(code, { level: 9 }).length };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { code, minBytes, gzipBytes } = await bundleClient();
  mkdirSync("dist/browser", { recursive: true });
  writeFileSync("dist/browser/ladder-client.js", code);
  console.log(`dist/browser/ladder-client.js: ${minBytes} B min, ${gzipBytes} B min+gzip (budget ${BUDGET_BYTES} B)`);
  const react = await bundleReact();
  console.log(`ladder/react (React and the client excluded): ${react.minBytes} B min, ${react.gzipBytes} B min+gzip`);
}
