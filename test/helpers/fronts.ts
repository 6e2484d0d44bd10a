/**
 * The reverse proxies of docs/deploy.md, started for real from the recipe files in deploy/: nginx and
 * Caddy from Debian's packages, each in a temp dir, listening on loopback only, with a self-signed
 * certificate. The recipe is used as written; only what a deployment would edit (the listen address,
 * the node addresses, the certificate paths) is replaced, and a global block that keeps the program out
 * of system paths is added around it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { selfSignedCredentials } from "../../src/server/edge/tls.js";
import { freePort, reachable, waitUntil } from "./brokers.js";

export type FrontKind = "nginx" | "caddy";

export interface Front {
  /** `https://127.0.0.1:PORT` */
  readonly url: string;
  /** The certificate the front serves (PEM), for clients that pin it. */
  readonly cert: string;
  readonly log: () => string;
  close(): Promise<void>;
}

/** The node ports the recipes name, in order; each is replaced by a real node's port. */
const RECIPE_NODES = ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"];
const RECIPE_CERT = "/etc/ssl/ladder/fullchain.pem";
const RECIPE_KEY = "/etc/ssl/ladder/privkey.pem";

export function recipe(path: string): string {
  return readFileSync(new URL(`../../../deploy/${path}`, import.meta.url), "utf8");
}

function fill(text: string, nodePorts: readonly number[], dir: string): string {
  if (nodePorts.length > RECIPE_NODES.length) throw new Error(`the recipes name ${RECIPE_NODES.length} nodes`);
  let out = text.replaceAll(RECIPE_CERT, join(dir, "cert.pem")).replaceAll(RECIPE_KEY, join(dir, "key.pem"));
  RECIPE_NODES.forEach((address, i) => {
    const port = nodePorts[i];
    // A recipe node the test does not run is dropped (nginx: its whole `server …;` line).
    out = port === undefined ? out.replace(new RegExp(`^\\s*server ${address}[^\\n]*\\n`, "m"), "").replace(` ${address}`, "") : out.replaceAll(address, `127.0.0.1:${port}`);
  });
  return out;
}

async function startProcess(program: string, args: string[], env: NodeJS.ProcessEnv, url: string, dir: string, cert: string): Promise<Front> {
  let output = "";
  const child: ChildProcess = spawn(program, args, { stdio: ["ignore", "pipe", "pipe"], env });
  child.stdout!.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-20_000)));
  child.stderr!.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-20_000)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await waitUntil(`${program} listening at ${url}`, async () => {
    if (child.exitCode !== null) throw new Error(`${program} exited ${child.exitCode}: ${output}`);
    return reachable(url, 200);
  });
  return {
    url,
    cert,
    log: () => output,
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function prepare(): Promise<{ dir: string; port: number; cert: string }> {
  const dir = mkdtempSync(join(tmpdir(), "ladder-front-"));
  // nginx's workers drop root for `nobody`; they must still reach the temp files in here.
  chmodSync(dir, 0o755);
  const { credentials } = await selfSignedCredentials("127.0.0.1");
  writeFileSync(join(dir, "cert.pem"), credentials.cert);
  writeFileSync(join(dir, "key.pem"), credentials.key, { mode: 0o644 });
  return { dir, port: await freePort(), cert: credentials.cert.toString() };
}

/** nginx with a site file from deploy/nginx/ in a minimal main config of its own. */
export async function startNginx(site: string, nodePorts: readonly number[]): Promise<Front> {
  const { dir, port, cert } = await prepare();
  const server = fill(recipe(`nginx/${site}`), nodePorts, dir).replace(/listen 443 ssl http2;/g, `listen 127.0.0.1:${port} ssl http2;`);
  writeFileSync(join(dir, "site.conf"), server);
  for (const temp of ["body", "proxy", "fastcgi", "uwsgi", "scgi"]) {
    mkdirSync(join(dir, temp));
    chmodSync(join(dir, temp), 0o777);
  }
  writeFileSync(
    join(dir, "nginx.conf"),
    [
      "daemon off;",
      "worker_processes 1;",
      `pid ${join(dir, "nginx.pid")};`,
      `error_log ${join(dir, "error.log")} warn;`,
      "events { worker_connections 4096; }",
      "http {",
      "  access_log off;",
      ...["body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t === "body" ? "client_body" : t}_temp_path ${join(dir, t)};`),
      `  include ${join(dir, "site.conf")};`,
      "}",
      "",
    ].join("\n"),
  );
  const url = `https://127.0.0.1:${port}`;
  return startProcess("nginx", ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log")], process.env, url, dir, cert);
}

/** Caddy with deploy/caddy/Caddyfile, its site address made this loopback port, its state in the temp dir. */
export async function startCaddy(nodePorts: readonly number[]): Promise<Front> {
  const { dir, port, cert } = await prepare();
  const httpPort = await freePort();
  const site = fill(recipe("caddy/Caddyfile"), nodePorts, dir).replace(/^hub\.example\.com \{$/m, `https://127.0.0.1:${port} {\n\tbind 127.0.0.1`);
  const global = ["{", "\tadmin off", `\thttp_port ${httpPort}`, `\thttps_port ${port}`, "\tauto_https disable_redirects", "\tskip_install_trust", `\tstorage file_system ${join(dir, "data")}`, "\tservers {", "\t\tprotocols h1 h2", "\t}", "}", ""].join("\n");
  writeFileSync(join(dir, "Caddyfile"), global + site);
  const env = { ...process.env, HOME: dir, XDG_DATA_HOME: join(dir, "data"), XDG_CONFIG_HOME: join(dir, "config") };
  const url = `https://127.0.0.1:${port}`;
  return startProcess("caddy", ["run", "--config", join(dir, "Caddyfile"), "--adapter", "caddyfile"], env, url, dir, cert);
}

export function startFront(kind: FrontKind, nodePorts: readonly number[]): Promise<Front> {
  return kind === "nginx" ? startNginx("ladder.conf", nodePorts) : startCaddy(nodePorts);
}
