/**
 * The package as a user installs it, not as it is cloned: `npm pack`, the tarball installed into an empty
 * project (offline, from the npm cache, with the versions of our own lockfile), then `npx ladder serve`,
 * every subpath export imported as ESM and type-checked under moduleResolution nodenext and bundler.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { listeningUrl } from "./helpers/cli.js";

const REPO = resolve(".");
const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as {
  name: string;
  version: string;
  exports: Record<string, unknown>;
  files: string[];
};
const lock = JSON.parse(readFileSync(join(REPO, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean; dependencies?: Record<string, string> }> };
const TSC = join(REPO, "node_modules", "typescript", "bin", "tsc");

let dir = "";

function run(command: string, args: string[], cwd: string, timeout = 30_000): SpawnSyncReturns<string> {
  const out = spawnSync(command, args, { cwd, encoding: "utf8", timeout, env: { ...process.env, npm_config_update_notifier: "false" } });
  assert.equal(out.status, 0, `${command} ${args.join(" ")} failed:\n${out.stdout}\n${out.stderr}`);
  return out;
}

/**
 * A lockfile for the empty project naming exactly the production dependencies of ours, so `npm ci
 * --offline` finds every tarball in the cache that `npm ci` filled (a range would need the registry).
 */
function lockFor(tarball: string): unknown {
  const packages: Record<string, unknown> = {
    "": { name: "first-use", dependencies: { [pkg.name]: `file:${tarball}` } },
    [`node_modules/${pkg.name}`]: { version: pkg.version, resolved: `file:${tarball}`, dependencies: lock.packages[""]!.dependencies, bin: { ladder: "bin/ladder.js" }, engines: { node: ">=20" }, license: "MIT" },
  };
  for (const [path, entry] of Object.entries(lock.packages)) if (path !== "" && !entry.dev) packages[path] = entry;
  return { name: "first-use", lockfileVersion: 3, requires: true, packages };
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), "ladder-pack-"));
  const packed = JSON.parse(run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", dir], REPO).stdout) as Array<{ filename: string }>;
  const tarball = packed[0]!.filename;
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "first-use", private: true, type: "module", dependencies: { [pkg.name]: `file:${tarball}` } }));
  writeFileSync(join(dir, "package-lock.json"), JSON.stringify(lockFor(tarball)));
  run("npm", ["ci", "--offline", "--no-audit", "--no-fund"], dir, 60_000);
  // The user's TypeScript and Node types: ours, linked in (what is checked is the package's own .d.ts).
  mkdirSync(join(dir, "node_modules", "@types"), { recursive: true });
  for (const name of ["node", "ws"]) symlinkSync(join(REPO, "node_modules", "@types", name), join(dir, "node_modules", "@types", name));
  // ladder-hub/react's optional peer, as an app that uses it has it.
  for (const name of ["react", "@types/react", "csstype"]) symlinkSync(join(REPO, "node_modules", name), join(dir, "node_modules", name));
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the tarball holds the demo, the browser bundle and the CLI; ladder --version matches", () => {
  assert.ok(pkg.files.includes("demo"), '"files" lists demo/');
  const installed = join(dir, "node_modules", pkg.name);
  for (const file of ["demo/index.html", "dist/browser/ladder-client.js", "bin/ladder.js", "README.md"]) readFileSync(join(installed, file));
  const version = run("npx", ["--offline", "ladder", "--version"], dir);
  assert.equal(version.stdout.trim(), pkg.version);
});

test("npx ladder serve serves the demo at / and the client bundle at /ladder-client.js", async () => {
  const child = spawn("npx", ["--offline", "ladder", "serve", "--port", "0", "--log-level", "warn"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"], detached: true });
  try {
    const url = await listeningUrl(child);
    const page = await fetch(`${url}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<html/i);
    const bundle = await fetch(`${url}/ladder-client.js`);
    assert.equal(bundle.status, 200);
    assert.match(bundle.headers.get("content-type") ?? "", /javascript/);
    assert.match(await bundle.text(), /createClient/);
  } finally {
    // npx runs the CLI in a child of its own: the group goes.
    process.kill(-child.pid!, "SIGTERM");
  }
});

/** Every subpath in "exports", as the specifier a user writes. */
const subpaths = Object.keys(pkg.exports).map((key) => (key === "." ? pkg.name : `${pkg.name}${key.slice(1)}`));

test("every subpath export imports as ESM in Node", () => {
  const lines = subpaths.map((spec, i) => (spec.endsWith(".json") ? `import m${i} from "${spec}" with { type: "json" };` : `import * as m${i} from "${spec}";`));
  lines.push(`console.log(JSON.stringify([${subpaths.map((_, i) => `Object.keys(m${i}).length`).join(", ")}]));`);
  writeFileSync(join(dir, "imports.mjs"), lines.join("\n"));
  const counts = JSON.parse(run(process.execPath, ["imports.mjs"], dir).stdout) as number[];
  subpaths.forEach((spec, i) => assert.ok(counts[i]! > 0, `${spec} exports something`));
});

test("every subpath export type-checks under strict with moduleResolution nodenext and bundler", () => {
  const source = [
    ...subpaths.filter((s) => !s.endsWith(".json")).map((spec, i) => `import * as m${i} from "${spec}";\nvoid m${i};`),
    `import pkg from "${pkg.name}/package.json" with { type: "json" };`,
    `import { createHub, type HubOptions } from "${pkg.name}";`,
    `import { createClient, type ClientOptions } from "${pkg.name}/client";`,
    `import * as browser from "${pkg.name}/client/browser";`,
    // The documented Node 20 pattern, and the browser's own class: both without a cast.
    `import WebSocket from "ws";`,
    `createClient({ url: "http://127.0.0.1:8080", WebSocket }).close();`,
    `createClient({ url: "http://127.0.0.1:8080", WebSocket: globalThis.WebSocket }).close();`,
    `const options: HubOptions = { historySize: 10 };`,
    `const hub = createHub(options);`,
    `const clientOptions: ClientOptions = { url: "http://127.0.0.1:8080", transport: "sse" };`,
    `const fromBundle: typeof createClient = browser.createClient;`,
    `export const used = [pkg.version, hub, createClient(clientOptions), fromBundle];`,
  ].join("\n");
  writeFileSync(join(dir, "check.ts"), source);
  const base = { strict: true, noEmit: true, target: "ES2022", lib: ["ES2023", "DOM"], types: ["node"], resolveJsonModule: true };
  const configs = {
    // skipLibCheck off once: the package's own declarations must hold up in a program that checks them all.
    nodenext: { ...base, module: "nodenext", moduleResolution: "nodenext", skipLibCheck: false },
    bundler: { ...base, module: "esnext", moduleResolution: "bundler", skipLibCheck: true },
  };
  for (const [name, compilerOptions] of Object.entries(configs)) {
    writeFileSync(join(dir, `tsconfig.${name}.json`), JSON.stringify({ compilerOptions, files: ["check.ts"] }));
    const out = spawnSync(process.execPath, [TSC, "-p", `tsconfig.${name}.json`], { cwd: dir, encoding: "utf8", timeout: 90_000 });
    assert.equal(out.status, 0, `moduleResolution ${name}:\n${out.stdout}${out.stderr}`);
  }
});
