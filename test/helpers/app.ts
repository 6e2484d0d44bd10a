/**
 * A stand-in for the app's backend in hook tests: a real HTTP server on loopback that records every call
 * and answers with whatever the test's handler decides (including not at all).
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import type { RunningServer, ServeOptions } from "../../src/index.js";
import { startHub } from "./server.js";

export interface AppCall {
  readonly path: string;
  readonly headers: IncomingMessage["headers"];
  readonly raw: string;
  readonly body: Record<string, unknown>;
}

export type AppHandler = (call: AppCall, res: ServerResponse) => void;

export interface TestApp {
  readonly url: string;
  readonly calls: AppCall[];
  /** Calls to one path. */
  callsTo(path: string): AppCall[];
  handle: AppHandler;
  close(): Promise<void>;
}

export function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export async function startApp(handle: AppHandler): Promise<TestApp> {
  const calls: AppCall[] = [];
  const sockets = new Set<Socket>();
  const app: TestApp = {
    url: "",
    calls,
    callsTo: (path) => calls.filter((c) => c.path === path),
    handle,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        /* the test looks at raw */
      }
      const call = { path: req.url ?? "/", headers: req.headers, raw, body };
      calls.push(call);
      app.handle(call, res);
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  (app as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return app;
}

/** A pino logger whose lines the test can read. */
export function capturingLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: "warn" }, stream), lines };
}

/** Polls `check` until it holds or the time is up. */
export async function eventually(check: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A hub with metrics on whose log lines the test can read. */
export async function startLoggedHub(options: ServeOptions): Promise<{ hub: RunningServer; lines: Array<Record<string, unknown>> }> {
  const { logger, lines } = capturingLogger();
  return { hub: await startHub({ metrics: true, logger, ...options }), lines };
}

/** A counter's value from the hub's /metrics, 0 when the series does not exist yet. */
export async function metricValue(base: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}
