/**
 * Test helpers for the broker engines: where the shared Redis and NATS are, whether they answer, private
 * broker processes on other loopback ports, and cleanup of a test's keys and streams.
 *
 * Locally a test whose broker is missing skips, loudly; with CI=true it fails instead, so a broken CI
 * service never passes as green.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const REDIS_URL = process.env.LADDER_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
export const NATS_URL = process.env.LADDER_TEST_NATS_URL ?? "nats://127.0.0.1:4222";
export const IN_CI = process.env.CI === "true";

/** True when something accepts TCP connections at the URL's host and port. */
export function reachable(url: string, timeoutMs = 1000): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = createConnection({ host: hostname, port: Number(port) });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/**
 * Whether a broker is there. Missing: in CI this throws (the test fails); locally it warns on stderr
 * and the caller skips.
 */
export async function brokerAvailable(name: string, url: string): Promise<boolean> {
  if (await reachable(url)) return true;
  const message = `${name} is not reachable at ${url}`;
  if (IN_CI) throw new Error(`${message} (CI=true: a missing broker fails the test)`);
  process.stderr.write(`\n!!! SKIPPING ${name} tests: ${message}. Start it to run them (see the test's header).\n\n`);
  return false;
}

/** True when the program can be found on PATH (for tests that start their own brokers). */
export function hasProgram(program: string, versionArgs: readonly string[] = ["--version"]): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(program, versionArgs, { stdio: "ignore" });
    child.once("error", () => resolve(false));
    child.once("exit", (code) => resolve(code === 0));
  });
}

export async function programAvailable(program: string, versionArgs?: readonly string[]): Promise<boolean> {
  if (await hasProgram(program, versionArgs)) return true;
  if (IN_CI) throw new Error(`${program} is not installed (CI=true: a missing program fails the test)`);
  process.stderr.write(`\n!!! SKIPPING: ${program} is not installed.\n\n`);
  return false;
}

/** A free loopback TCP port (bound, read, released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

export async function waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000, stepMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, stepMs));
  }
}

export interface BrokerProcess {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Stops the process (SIGKILL by default) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port with the same data directory. */
  start(): Promise<void>;
  /** Stops it and deletes its directory. */
  destroy(): Promise<void>;
}

function managed(scheme: string, program: string, args: (port: number, dir: string) => string[], port: number, dir: string): BrokerProcess {
  let child: ChildProcess | null = null;
  const url = `${scheme}://127.0.0.1:${port}`;
  const stop = async (signal: NodeJS.Signals = "SIGKILL"): Promise<void> => {
    const running = child;
    child = null;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      running.once("exit", () => resolve());
      running.kill(signal);
    });
  };
  const start = async (): Promise<void> => {
    if (child) return;
    let output = "";
    const started = spawn(program, args(port, dir), { stdio: ["ignore", "pipe", "pipe"] });
    started.stdout?.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
    started.stderr?.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
    child = started;
    await waitUntil(`${program} on port ${port} (${output})`, async () => {
      if (started.exitCode !== null) throw new Error(`${program} exited: ${output}`);
      return reachable(url, 200);
    });
  };
  return {
    url,
    port,
    dir,
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A private redis-server on a free loopback port, persisting to a temp dir (append-only, fsync always,
 * so what it acknowledged survives a SIGKILL). `start: false` only reserves the port.
 */
export async function startRedis(extra: string[] = [], options: { start?: boolean } = {}): Promise<BrokerProcess> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "ladder-redis-"));
  const broker = managed(
    "redis",
    "redis-server",
    (p, d) => ["--port", String(p), "--bind", "127.0.0.1", "--dir", d, "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", ...extra],
    port,
    dir,
  );
  if (options.start !== false) await broker.start();
  return broker;
}

/** A private nats-server with JetStream on a free loopback port, storing in a temp dir. */
export async function startNats(options: { start?: boolean } = {}): Promise<BrokerProcess> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "ladder-nats-"));
  const broker = managed("nats", "nats-server", (p, d) => ["-a", "127.0.0.1", "-p", String(p), "-js", "-sd", d], port, dir);
  if (options.start !== false) await broker.start();
  return broker;
}

/** Deletes every key under a prefix (test cleanup; SCAN, so it is fine on a shared Redis). */
export async function deleteRedisKeys(url: string, prefix: string): Promise<void> {
  const { createClient } = await import("redis");
  const client = createClient({ url });
  client.on("error", () => {});
  await client.connect();
  try {
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) {
      if (keys.length > 0) await client.del(keys);
    }
  } finally {
    client.destroy();
  }
}

/** Deletes JetStream streams whose names start with a prefix (test cleanup). */
export async function deleteNatsStreams(url: string, prefix: string): Promise<void> {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstreamManager } = await import("@nats-io/jetstream");
  const { hostname, port } = new URL(url);
  const nc = await connect({ servers: `${hostname}:${port}` });
  try {
    const jsm = await jetstreamManager(nc);
    for await (const name of jsm.streams.names()) {
      if (name.startsWith(prefix)) await jsm.streams.delete(name);
    }
  } finally {
    await nc.close();
  }
}
