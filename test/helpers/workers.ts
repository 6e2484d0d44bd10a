/**
 * A real `ladder serve --workers N` (a primary and its worker processes) for tests, and a way to tell
 * which worker holds a given TCP connection: the kernel's socket table (`ss -tnp`), so the server needs
 * no debug header.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { Agent, request, type IncomingMessage } from "node:http";
import type { Socket } from "node:net";

export interface Cluster {
  readonly url: string;
  readonly port: number;
  readonly primary: ChildProcess;
  /** Everything the primary and its workers wrote to stderr/stdout. */
  readonly output: () => string;
  workerPids(): number[];
  /** The worker holding the server end of the connection whose client side is `localPort`. */
  workerOf(localPort: number, timeoutMs?: number): Promise<number>;
  /** Established connections to the port held by workers: the client side's port and the worker. */
  connections(): Array<{ localPort: number; worker: number }>;
  /** SIGTERM to the primary; resolves with its exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
}

export async function startCluster(args: readonly string[] = [], workers = 2): Promise<Cluster> {
  const primary = spawn(process.execPath, ["bin/ladder.js", "serve", "--workers", String(workers), "--port", "0", "--log-level", "warn", "--no-demo", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  primary.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  primary.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cluster did not start: ${output}`)), 15_000);
    const check = (): void => {
      const match = /ladder listening on (http:\/\/[^\s]+) with/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    };
    primary.stdout!.on("data", check);
    primary.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`cluster exited with ${code}: ${output}`));
    });
  });
  const port = Number(new URL(url).port);
  const workerPids = (): number[] => {
    const out = spawnSync("pgrep", ["-P", String(primary.pid)], { encoding: "utf8" });
    return out.stdout.split("\n").filter(Boolean).map(Number);
  };
  let exited: Promise<number | null> | null = null;
  const exitCode = (): Promise<number | null> =>
    (exited ??= new Promise((resolve) => {
      if (primary.exitCode !== null || primary.signalCode !== null) resolve(primary.exitCode);
      else primary.once("exit", (code) => resolve(code));
    }));
  return {
    url,
    port,
    primary,
    output: () => output,
    workerPids,
    async workerOf(localPort, timeoutMs = 3000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const pids = new Set(workerPids());
        const out = spawnSync("ss", ["-tnpH", "state", "established", `( sport = :${port} and dport = :${localPort} )`], { encoding: "utf8" });
        const owners = [...out.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])).filter((pid) => pids.has(pid));
        // Just after accept the primary may still hold the socket it hands over; wait for one worker alone.
        if (new Set(owners).size === 1) return owners[0]!;
        if (Date.now() > deadline) throw new Error(`no single worker holds port ${localPort}: ${out.stdout}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    connections() {
      const pids = new Set(workerPids());
      const out = spawnSync("ss", ["-tnpH", "state", "established", `( sport = :${port} )`], { encoding: "utf8" });
      const rows: Array<{ localPort: number; worker: number }> = [];
      for (const line of out.stdout.split("\n")) {
        const peer = /\s\S+:(\d+)\s+users:/.exec(line);
        const owner = /pid=(\d+)/.exec(line);
        if (peer && owner && pids.has(Number(owner[1]))) rows.push({ localPort: Number(peer[1]), worker: Number(owner[1]) });
      }
      return rows;
    },
    async stop(timeoutMs = 15_000) {
      if (primary.exitCode === null && primary.signalCode === null) primary.kill("SIGTERM");
      const timer = setTimeout(() => primary.kill("SIGKILL"), timeoutMs);
      const code = await exitCode();
      clearTimeout(timer);
      return code;
    },
  };
}

export interface Answer {
  readonly status: number;
  readonly body: string;
  readonly headers: IncomingMessage["headers"];
}

/** A keep-alive connection held to one worker: every request on it lands there. */
export interface Pinned {
  readonly worker: number;
  /** The cluster's URL: a request for another host would not reuse the pinned connection. */
  readonly url: string;
  readonly agent: Agent;
  request(path: string, options?: { method?: string; body?: unknown; headers?: Record<string, string> }): Promise<Answer>;
  publish(channel: string, data: unknown): Promise<string>;
  close(): void;
}

function send(url: string, agent: Agent, options: { method?: string; body?: unknown; headers?: Record<string, string> }, onSocket?: (socket: Socket) => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const req = request(url, { method: options.method ?? "GET", agent, headers: { ...(body ? { "content-type": "application/json" } : {}), ...options.headers } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
      res.on("error", reject);
    });
    if (onSocket) req.once("socket", onSocket);
    req.on("error", reject);
    req.setTimeout(30_000, () => req.destroy(new Error("request timed out")));
    req.end(body);
  });
}

/** A keep-alive connection idle this long is opened afresh: the server closes idle ones after 5 s. */
const REPIN_AFTER_IDLE_MS = 2000;

/**
 * Opens connections until one lands on `worker` (cluster hands them round-robin) and keeps it. A few at a
 * time, since each look at the socket table (`ss -p` walks every process's descriptors) takes a while.
 */
async function connectTo(cluster: Cluster, worker: number): Promise<{ agent: Agent; socket: Socket }> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const opened = await Promise.all(
      [0, 1, 2].map(async () => {
        const agent = new Agent({ keepAlive: true, maxSockets: 1 });
        let socket: Socket | null = null;
        await send(`${cluster.url}/healthz`, agent, {}, (s) => (socket = s));
        return { agent, socket: socket as unknown as Socket };
      }),
    );
    const holders = new Map(cluster.connections().map((c) => [c.localPort, c.worker]));
    const chosen = opened.find((o) => holders.get(o.socket.localPort ?? 0) === worker);
    for (const o of opened) if (o !== chosen) o.agent.destroy();
    if (chosen) return chosen;
  }
  throw new Error(`no connection landed on worker ${worker}`);
}

/** A connection to `worker` that every request goes over (or fails loudly: never silently another worker). */
export async function pinTo(cluster: Cluster, worker: number): Promise<Pinned> {
  let held = await connectTo(cluster, worker);
  let lastUsed = Date.now();
  const fresh = async (): Promise<void> => {
    if (!held.socket.destroyed && Date.now() - lastUsed < REPIN_AFTER_IDLE_MS) return;
    held.agent.destroy();
    held = await connectTo(cluster, worker);
  };
  const pinned: Pinned = {
    worker,
    url: cluster.url,
    get agent() {
      return held.agent;
    },
    async request(path, options = {}) {
      await fresh();
      const expected = held.socket;
      let used: Socket | null = null;
      try {
        return await send(cluster.url + path, held.agent, options, (s) => (used = s));
      } finally {
        lastUsed = Date.now();
        if (used !== expected) throw new Error(`the request to worker ${worker} did not go over its pinned connection`);
      }
    },
    async publish(channel, data) {
      const answer = await pinned.request("/api/messages", { method: "POST", body: { channel, data } });
      if (answer.status !== 201) throw new Error(`publish failed: ${answer.status} ${answer.body}`);
      return (JSON.parse(answer.body) as { id: string }).id;
    },
    close: () => held.agent.destroy(),
  };
  return pinned;
}
