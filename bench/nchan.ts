/**
 * Nchan (C, inside nginx) as a third implementation in the bench, when nginx and its Nchan module are
 * installed (Debian: `apt-get install nginx-light libnginx-mod-nchan`). The bench writes its own nginx
 * configuration into a temporary directory — one worker, loopback only, `daemon off`, pid, logs and
 * temporary files in that directory — starts nginx pinned to the server core like the Node servers,
 * and stops it after the case. The same URLs as Ladder's serve the same patterns:
 *
 * - `POST /api/messages` publishes (`nchan_publisher`, routed by method); the published body is the message;
 * - `GET /api/messages` long-polls (`nchan_subscriber longpoll`, one message per answer, resumed with
 *   `If-Modified-Since`/`If-None-Match`, Nchan's own cursor);
 * - `GET /api/stream` is an EventSource (`nchan_subscriber eventsource`);
 * - `/api/ws` is a WebSocket subscriber (`nchan_subscriber websocket`), subscribed on connect.
 *
 * Each of these takes its channel from the `channel` query argument (`bench` without one), as Ladder's SSE
 * and long-poll URLs carry it: Nchan cannot read it from a JSON body or a `join` frame, so its publisher
 * and WebSocket clients add `?channel=` (see {@link channelQuery}). `POST /pub/<channel>` is Nchan's own
 * publisher URL, which the publish mode drives (`GET` on it reports the channel: queued messages,
 * subscribers); a WebSocket to it is a publisher of that one channel (`--publisher ws` with one channel).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ServerStats } from "./ipc.js";
import { CHANNEL, channelQuery, type LongPollDialect } from "./load.js";
import { onKillAll, readCpuUs, readRssKb, type BenchServer } from "./proc.js";
import type { PublishDialect } from "./publisher.js";

const NGINX_CANDIDATES = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"];
const MODULE_CANDIDATES = ["/usr/lib/nginx/modules/ngx_nchan_module.so", "/usr/lib64/nginx/modules/ngx_nchan_module.so", "/usr/local/nginx/modules/ngx_nchan_module.so"];

export interface NchanInstall {
  readonly nginx: string;
  /** The module to load, or null when nginx has Nchan built in (or loads it from modules-enabled). */
  readonly module: string | null;
}

/** Finds nginx and the Nchan module, or says why Nchan is left out. */
export function findNchan(): NchanInstall | string {
  const fromPath = (process.env.PATH ?? "").split(":").filter(Boolean).map((dir) => `${dir}/nginx`);
  const nginx = [...fromPath, ...NGINX_CANDIDATES].find((path) => existsSync(path));
  if (!nginx) return "nginx not found (apt-get install nginx-light libnginx-mod-nchan)";
  const module = MODULE_CANDIDATES.find((path) => existsSync(path));
  if (!module) return `${nginx} found but no ngx_nchan_module.so (apt-get install libnginx-mod-nchan)`;
  return { nginx, module };
}

/** Patterns the bench runs against Nchan (it has no interval poll with Ladder's contract; TLS is left out). */
export const NCHAN_PATTERNS: ReadonlySet<string> = new Set(["sse", "websocket", "long-poll"]);

/**
 * Publish scenarios Nchan has a form for: single messages over HTTP (it has no batch; its WebSocket
 * publisher answers each frame, in order, but binds one channel per connection).
 */
export const NCHAN_PUBLISH_SCENARIOS: ReadonlySet<string> = new Set(["http"]);

/** Messages Nchan keeps per channel, as Ladder's `historySize` and the baseline's array. */
export const NCHAN_MESSAGES_KEPT = 1000;

/** The configuration of one case's nginx (exported for the bench's test). */
export function nginxConfig(dir: string, port: number, module: string | null, maxConnections: number): string {
  return `# Written by Ladder's bench for one case; removed after it.
${module ? `load_module ${module};` : ""}
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile ${maxConnections + 1024};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections ${maxConnections + 512}; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  tcp_nodelay on;
  nchan_message_buffer_length ${NCHAN_MESSAGES_KEPT};
  nchan_message_timeout 10m;
  # The channel a request names (?channel=), the one channel of the fan-out cases without it.
  map $arg_channel $bench_channel {
    "" bench;
    default $arg_channel;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    # One URL for publishing and long-polling, as Ladder's: nchan_pubsub's http type would answer a
    # waiting GET at once (304), so a POST is routed to a publisher location instead.
    if ($request_method = POST) { rewrite ^/api/messages$ /publish last; }
    location = /publish {
      internal;
      nchan_channel_id $bench_channel;
      nchan_publisher http;
    }
    # Nchan's own publisher URL (publish mode): POST publishes the body, GET reports the channel; a
    # WebSocket to it publishes each frame to that channel (--publisher ws, one channel).
    location ~ ^/pub/([^/]+)$ {
      nchan_channel_id $1;
      nchan_publisher http websocket;
    }
    location = /api/messages {
      nchan_channel_id $bench_channel;
      nchan_subscriber longpoll;
      nchan_subscriber_timeout 25s;
    }
    location = /api/stream {
      nchan_channel_id $bench_channel;
      nchan_subscriber eventsource;
      nchan_subscriber_first_message newest;
    }
    location = /api/ws {
      nchan_channel_id $bench_channel;
      nchan_subscriber websocket;
      nchan_subscriber_first_message newest;
    }
    location = /nchan_status { nchan_stub_status; }
  }
}
`;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const running = new Set<NchanServer>();
onKillAll(() => {
  for (const server of running) server.kill();
});

/**
 * One nginx with Nchan: its master (our child) and its one worker. CPU and memory are the sum of both;
 * the scheduler figures are the worker's, which does all the work.
 */
export class NchanServer implements BenchServer {
  readonly url: string;
  readonly #child: ChildProcess;
  readonly #dir: string;
  readonly #worker: number;

  private constructor(child: ChildProcess, dir: string, url: string, worker: number) {
    this.#child = child;
    this.#dir = dir;
    this.url = url;
    this.#worker = worker;
  }

  /** The worker: what serves every connection. */
  get pid(): number {
    return this.#worker;
  }

  static async start(install: NchanInstall, options: { cpu: number | null; taskset: string | null; maxConnections: number }): Promise<NchanServer> {
    const dir = mkdtempSync(join(tmpdir(), "ladder-bench-nchan-"));
    const port = await freePort();
    const conf = join(dir, "nginx.conf");
    writeFileSync(conf, nginxConfig(dir, port, install.module, options.maxConnections));
    const nginxArgs = ["-p", dir, "-c", conf, "-e", join(dir, "error.log")];
    // taskset execs nginx in place, and its worker inherits the CPU.
    const [command, args] =
      options.cpu !== null && options.taskset ? [options.taskset, ["-c", String(options.cpu), install.nginx, ...nginxArgs]] : [install.nginx, nginxArgs];
    const child = spawn(command, args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const url = `http://127.0.0.1:${port}`;
    const fail = (why: string): never => {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
      let log = "";
      try {
        log = readFileSync(join(dir, "error.log"), "utf8");
      } catch {
        /* none */
      }
      throw new Error(`nginx/Nchan ${why}: ${(stderr + log).trim().slice(-500)}`);
    };
    for (let waited = 0; ; waited += 50) {
      if (child.exitCode !== null || child.signalCode !== null) fail(`exited (code ${child.exitCode})`);
      const worker = childrenOf(child.pid!)[0];
      if (worker !== undefined) {
        try {
          const res = await fetch(`${url}/nchan_status`);
          if (res.ok) {
            await res.text();
            const server = new NchanServer(child, dir, url, worker);
            running.add(server);
            return server;
          }
        } catch {
          /* not listening yet */
        }
      }
      if (waited > 10_000) fail("did not answer within 10 s");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  #pids(): number[] {
    return [this.#child.pid!, ...childrenOf(this.#child.pid!)];
  }

  /** C has no garbage collector: there is nothing to collect before reading memory. */
  async gc(): Promise<boolean> {
    return true;
  }

  async stats(): Promise<ServerStats> {
    const text = await (await fetch(`${this.url}/nchan_status`)).text();
    const subscribers = Number(/^subscribers:\s*(\d+)/m.exec(text)?.[1] ?? NaN);
    return { held: subscribers, sockets: subscribers, rssKb: this.rssKb(), heapUsed: 0, external: 0, cpuUserUs: 0, cpuSystemUs: 0 };
  }

  /** What Nchan holds for `channel` (`GET /pub/<channel>`): messages kept and subscribers; null when it has no such channel. */
  async channelInfo(channel: string): Promise<{ messages: number; subscribers: number } | null> {
    const res = await fetch(`${this.url}/pub/${encodeURIComponent(channel)}`, { headers: { accept: "text/json" } });
    const text = await res.text();
    if (res.status === 404) return null;
    if (!res.ok) throw new Error(`Nchan answered ${res.status} for channel ${channel}: ${text.slice(0, 200)}`);
    const info = JSON.parse(text) as { messages: number; subscribers: number };
    return { messages: info.messages, subscribers: info.subscribers };
  }

  cpuUs(): number {
    return this.#pids().reduce((sum, pid) => sum + readCpuUs(pid), 0);
  }

  rssKb(): number {
    return this.#pids().reduce((sum, pid) => sum + readRssKb(pid), 0);
  }

  /** Synchronous hard stop, for the bench's exit path. */
  kill(): void {
    for (const pid of this.#pids().reverse()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    running.delete(this);
    rmSync(this.#dir, { recursive: true, force: true });
  }

  /** Fast shutdown (SIGTERM makes the master stop its worker), SIGKILL after a second. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => this.kill(), 1000);
        child.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
        child.kill("SIGTERM");
      });
    }
    running.delete(this);
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/**
 * Why Nchan cannot take the fan-out's WebSocket publishes for `channels` channels, or null when it can:
 * its WebSocket publisher binds the one channel its URL names, so a shape with C channels would need C
 * publisher connections (10,000 in the many-small-channels shape).
 */
export function nchanWebSocketPublishRefusal(channels: number): string | null {
  return channels === 1 ? null : `Nchan's WebSocket publisher binds one channel per connection: ${channels} channels would need ${channels} publisher connections`;
}

/**
 * Publishing to Nchan: a POST names the channel in the query (Nchan reads no JSON body; the body is the
 * message); with one channel, WebSockets to its own publisher URL, answered in order.
 */
export const NCHAN_PUBLISH: PublishDialect = {
  postPath: (channel) => `/api/messages${channelQuery(channel)}`,
  webSocketPath: (channels) => (nchanWebSocketPublishRefusal(channels) === null ? `/pub/${CHANNEL}` : null),
  webSocketAcks: "in-order",
};

/**
 * Nchan's long-poll cursor: the `Last-Modified` and `Etag` of the last answer, sent back as
 * `If-Modified-Since` and `If-None-Match`. An answer carries one message; a timeout answers 304.
 */
export const NCHAN_LONG_POLL: LongPollDialect = {
  request(channel, since) {
    const path = `/api/messages${channelQuery(channel)}`;
    if (since === null) return { path, headers: "" };
    const [modified, tag] = since.split("\n");
    return { path, headers: `if-modified-since: ${modified}\r\nif-none-match: ${tag}\r\n` };
  },
  cursor(head) {
    const modified = /\r\nlast-modified:\s*([^\r]*)/i.exec(head)?.[1];
    const tag = /\r\netag:\s*([^\r]*)/i.exec(head)?.[1];
    return modified !== undefined && tag !== undefined ? `${modified}\n${tag}` : undefined;
  },
};
