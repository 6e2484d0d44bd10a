/**
 * A server under test, run as its own process so its CPU time and memory can be read from /proc:
 * `node --expose-gc dist/bench/server-process.js --impl ladder|baseline|floor [--max-connections N]
 * [--protocol http1|tls|h2] [--max-concurrent-streams N] [--engine URL] [--write-delay MS]`; with TLS both use a self-signed
 * certificate.
 * It talks to the bench over the IPC channel only (ready, gc, stats) and exits when that channel closes,
 * so it never outlives the bench.
 */
import type { Socket } from "node:net";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { serve } from "../src/index.js";
import { selfSignedCredentials } from "../src/server/edge/tls.js";
import { startBaseline } from "./baseline.js";
import { startFloor } from "./floor.js";
import type { ChildToParent, Impl, ParentToChild, ServerStats } from "./ipc.js";
import type { ServerProtocol } from "./load.js";

function send(message: ChildToParent): void {
  process.send?.(message);
}

function rssKb(): number {
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync("/proc/self/status", "utf8"));
  return match ? Number(match[1]) : Math.round(process.memoryUsage().rss / 1024);
}

async function main(): Promise<void> {
  if (!process.send) throw new Error("server-process must be started by the bench with an IPC channel");
  const { values } = parseArgs({
    options: {
      impl: { type: "string" },
      "max-connections": { type: "string" },
      protocol: { type: "string" },
      "max-concurrent-streams": { type: "string" },
      engine: { type: "string" },
      "write-delay": { type: "string" },
    },
  });
  const impl = values.impl as Impl;
  const protocol = (values.protocol ?? "http1") as ServerProtocol;
  if (protocol !== "http1" && protocol !== "tls" && protocol !== "h2") throw new Error(`unknown --protocol ${protocol}`);
  const maxConcurrentStreams = Number(values["max-concurrent-streams"] ?? 128);
  let held: () => number;
  let sockets: () => number;
  let url: string;
  if (impl === "ladder") {
    const maxConnections = Number(values["max-connections"] ?? 10_000);
    const tls = protocol === "http1" ? {} : { tls: "self-signed" as const, http2: protocol === "h2", maxConcurrentStreams };
    const writeDelay = values["write-delay"] === undefined ? {} : { writeDelayMs: Number(values["write-delay"]) };
    const running = await serve({ port: 0, host: "127.0.0.1", maxConnections, ...tls, ...writeDelay, ...(values.engine ? { engine: values.engine } : {}) });
    // A broker engine connects in the background: measure only once it takes publishes.
    for (let waited = 0; !running.hub.engine.ready(); waited += 20) {
      if (waited > 15_000) throw new Error(`engine ${running.hub.engine.name} not ready after 15 s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const open = new Set<Socket>();
    running.server.on("connection", (socket: Socket) => {
      open.add(socket);
      socket.once("close", () => open.delete(socket));
    });
    held = () => running.hub.stats().connections;
    sockets = () => open.size;
    url = running.url;
  } else if (impl === "baseline") {
    const tls = protocol === "http1" ? null : { ...(await selfSignedCredentials()).credentials, http2: protocol === "h2", maxConcurrentStreams };
    const running = await startBaseline(0, "127.0.0.1", tls);
    held = running.held;
    sockets = running.sockets;
    url = running.url;
  } else if (impl === "floor") {
    if (protocol !== "http1") throw new Error(`the floor serves cleartext HTTP/1.1 only, not --protocol ${protocol}`);
    const running = await startFloor(0, "127.0.0.1");
    held = running.held;
    sockets = running.sockets;
    url = running.url;
  } else {
    throw new Error(`unknown --impl ${String(values.impl)}`);
  }

  const gc = (globalThis as { gc?: () => void }).gc;
  process.on("message", (message: ParentToChild) => {
    if (message.type === "gc") {
      if (gc) {
        gc();
        gc();
      }
      send({ type: "gc-done", ref: message.ref, gc: Boolean(gc) });
    } else if (message.type === "stats") {
      const memory = process.memoryUsage();
      const cpu = process.cpuUsage();
      const stats: ServerStats = {
        held: held(),
        sockets: sockets(),
        rssKb: rssKb(),
        heapUsed: memory.heapUsed,
        external: memory.external,
        cpuUserUs: cpu.user,
        cpuSystemUs: cpu.system,
      };
      send({ type: "stats", ref: message.ref, stats });
    }
  });
  // The bench went away (or is done with us): leave at once, without a graceful drain.
  process.on("disconnect", () => process.exit(0));
  process.on("SIGTERM", () => process.exit(0));
  process.on("SIGINT", () => process.exit(0));
  send({ type: "ready", url, impl });
}

main().catch((error: unknown) => {
  send({ type: "fatal", message: error instanceof Error ? error.stack ?? error.message : String(error) });
  process.exit(1);
});
