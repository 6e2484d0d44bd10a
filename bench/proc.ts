/**
 * The machine side of the bench: /proc readers, CPU pinning with taskset, the fd limit, and the server
 * child processes (spawned pinned, talked to over IPC, always killed on the way out).
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { ChildToParent, Impl, ParentToChild, ServerStats } from "./ipc.js";
import type { ServerProtocol } from "./load.js";

function which(command: string): string | null {
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(":")) {
    const candidate = `${dir}/${command}`;
    if (dir && existsSync(candidate)) return candidate;
  }
  return null;
}

/** Parses a Linux CPU list such as `0-3,6`. */
export function parseCpuList(text: string): number[] {
  const cpus: number[] = [];
  for (const part of text.trim().split(",")) {
    if (!part) continue;
    const [a, b] = part.split("-").map(Number);
    if (a === undefined || !Number.isInteger(a)) continue;
    for (let cpu = a; cpu <= (b ?? a); cpu++) cpus.push(cpu);
  }
  return cpus;
}

export function allowedCpus(): number[] {
  try {
    const match = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (match) return parseCpuList(match[1]!);
  } catch {
    /* not Linux */
  }
  return [];
}

export interface Pinning {
  readonly pinned: boolean;
  readonly serverCpu: number | null;
  readonly loadCpu: number | null;
  readonly note: string;
  readonly taskset: string | null;
}

/** Pins this process (the load generator, all its threads) to one CPU and picks another for the servers. */
export function pinCores(disabled: boolean): Pinning {
  const taskset = which("taskset");
  const cpus = allowedCpus();
  if (disabled) return { pinned: false, serverCpu: null, loadCpu: null, taskset, note: "unpinned (--no-pin)" };
  if (!taskset) return { pinned: false, serverCpu: null, loadCpu: null, taskset, note: "UNPINNED: taskset (util-linux) not found; server and load share all cores" };
  if (cpus.length < 2) {
    return { pinned: false, serverCpu: null, loadCpu: null, taskset, note: `UNPINNED: only ${cpus.length} CPU(s) allowed (${cpus.join(",")}); server and load share a core` };
  }
  const [serverCpu, loadCpu] = cpus as [number, number];
  try {
    execFileSync(taskset, ["-a", "-p", "-c", String(loadCpu), String(process.pid)], { stdio: "ignore" });
  } catch (error) {
    return { pinned: false, serverCpu: null, loadCpu: null, taskset, note: `UNPINNED: taskset failed (${(error as Error).message})` };
  }
  const now = allowedCpus();
  if (now.length !== 1 || now[0] !== loadCpu) {
    return { pinned: false, serverCpu: null, loadCpu: null, taskset, note: `UNPINNED: taskset left this process on CPUs ${now.join(",")}` };
  }
  return { pinned: true, serverCpu, loadCpu, taskset, note: `server on CPU ${serverCpu} (taskset -c ${serverCpu}), load generator on CPU ${loadCpu}` };
}

export interface FdLimit {
  readonly soft: number;
  readonly hard: number;
  readonly raised: boolean;
  readonly note: string;
}

function readNofile(pid: number | "self"): { soft: number; hard: number } {
  const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
  const num = (s: string | undefined): number => (s === "unlimited" || s === undefined ? Number.POSITIVE_INFINITY : Number(s));
  return { soft: num(match?.[1]), hard: num(match?.[2]) };
}

/** Checks `ulimit -n` against what the run needs and raises the soft limit with prlimit when it can. */
export function checkFdLimit(needed: number): FdLimit {
  let limits: { soft: number; hard: number };
  try {
    limits = readNofile("self");
  } catch {
    return { soft: NaN, hard: NaN, raised: false, note: "fd limit unknown (no /proc/self/limits)" };
  }
  if (limits.soft >= needed) return { ...limits, raised: false, note: `ulimit -n ${limits.soft} (hard ${limits.hard}), need ~${needed}` };
  const prlimit = which("prlimit");
  const target = Math.min(limits.hard, Math.max(needed, 65_536));
  if (prlimit && target > limits.soft) {
    try {
      execFileSync(prlimit, ["--pid", String(process.pid), `--nofile=${target}:${limits.hard}`], { stdio: "ignore" });
      const after = readNofile("self");
      if (after.soft > limits.soft) {
        const ok = after.soft >= needed;
        return { ...after, raised: true, note: `ulimit -n raised ${limits.soft} -> ${after.soft} with prlimit${ok ? "" : `; still below the ~${needed} needed`}` };
      }
    } catch {
      /* fall through */
    }
  }
  return { ...limits, raised: false, note: `WARNING: ulimit -n ${limits.soft} (hard ${limits.hard}) is below the ~${needed} fds needed; raise it (ulimit -n ${needed})` };
}

export const CLOCK_TICKS: number = (() => {
  try {
    const ticks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    if (Number.isInteger(ticks) && ticks > 0) return ticks;
  } catch {
    /* fall back */
  }
  return 100;
})();

/** utime and stime of a process (all its threads), in microseconds, from /proc/<pid>/stat. */
export function readCpuTimes(pid: number): { readonly userUs: number; readonly systemUs: number } {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may hold spaces: state is field 3.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { userUs: (Number(fields[11]) * 1e6) / CLOCK_TICKS, systemUs: (Number(fields[12]) * 1e6) / CLOCK_TICKS };
}

/** utime + stime of a process (all its threads), in microseconds. */
export function readCpuUs(pid: number): number {
  const { userUs, systemUs } = readCpuTimes(pid);
  return userUs + systemUs;
}

export interface SchedTimes {
  /** Time the main thread (the event loop) was runnable but waiting for a CPU, ms. */
  readonly mainWaitMs: number;
  /** Time the process's other threads (V8 GC and compiler helpers, libuv pool) ran, ms. */
  readonly helpersRunMs: number;
}

/**
 * Scheduler times of a process's threads from /proc/<pid>/task/<tid>/schedstat (run ns, wait ns, slices).
 * On a pinned process the helper threads share the event loop's CPU, so main-thread waiting beyond
 * what the helpers ran was caused by other processes on that core.
 */
export function readSchedTimes(pid: number): SchedTimes {
  let mainWaitMs = NaN;
  let helpersRunMs = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      let fields: number[];
      try {
        fields = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").trim().split(/\s+/).map(Number);
      } catch {
        continue; // the thread ended
      }
      if (Number(tid) === pid) mainWaitMs = (fields[1] ?? NaN) / 1e6;
      else helpersRunMs += (fields[0] ?? 0) / 1e6;
    }
  } catch {
    return { mainWaitMs: NaN, helpersRunMs: NaN };
  }
  return { mainWaitMs, helpersRunMs };
}

function cpuTimes(): { busy: number; total: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

/**
 * Waits (at most `maxSeconds`) for a second in which the whole machine was below `threshold` percent
 * busy, so a case does not start while other processes hold the cores. Returns the seconds waited and
 * the last load seen.
 */
export async function waitForQuiet(maxSeconds: number, threshold = 15): Promise<{ waitedSeconds: number; busyPercent: number }> {
  const start = performance.now();
  let busyPercent = NaN;
  for (;;) {
    const a = cpuTimes();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const b = cpuTimes();
    busyPercent = b.total > a.total ? ((b.busy - a.busy) / (b.total - a.total)) * 100 : NaN;
    const waitedSeconds = (performance.now() - start) / 1000;
    if (!(busyPercent >= threshold) || waitedSeconds >= maxSeconds) return { waitedSeconds, busyPercent };
  }
}

export function readRssKb(pid: number): number {
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]);
}

/** What a case needs of a server under test, whichever process runs it. */
export interface BenchServer {
  /** The process whose scheduler figures are read (the one serving the connections). */
  readonly pid: number;
  readonly url: string;
  gc(): Promise<boolean>;
  stats(): Promise<ServerStats>;
  cpuUs(): number;
  rssKb(): number;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
const killHooks: Array<() => void> = [];

/** Runs `hook` (synchronously) whenever every server is killed: servers that are not node children. */
export function onKillAll(hook: () => void): void {
  killHooks.push(hook);
}

/** Kills `child` with the others when the bench ends (a server started some other way than {@link ServerHandle}). */
export function trackChild(child: ChildProcess): void {
  children.add(child);
  child.once("exit", () => children.delete(child));
}

/** Kills every server child still running (synchronously: usable from an exit handler). */
export function killAllChildren(): void {
  for (const hook of killHooks) hook();
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill("SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }
  children.clear();
}

let cleanupInstalled = false;

/** Makes sure no child outlives the bench: on exit, on Ctrl-C/SIGTERM, on an uncaught error. */
export function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on("exit", killAllChildren);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping servers\n`);
      killAllChildren();
      process.exit(130);
    });
  }
  process.on("uncaughtException", (error) => {
    process.stderr.write(`bench: ${error.stack ?? String(error)}\n`);
    killAllChildren();
    process.exit(1);
  });
  process.on("unhandledRejection", (error) => {
    process.stderr.write(`bench: unhandled rejection: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    killAllChildren();
    process.exit(1);
  });
}

export class ServerHandle implements BenchServer {
  readonly impl: Impl;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly url: string;
  readonly #profiling: boolean;
  #ref = 0;
  readonly #waiting = new Map<number, (message: ChildToParent) => void>();

  private constructor(impl: Impl, child: ChildProcess, url: string, profiling: boolean) {
    this.impl = impl;
    this.#profiling = profiling;
    this.child = child;
    this.pid = child.pid!;
    this.url = url;
    child.on("message", (message: ChildToParent) => {
      if ("ref" in message) {
        const resolve = this.#waiting.get(message.ref);
        this.#waiting.delete(message.ref);
        resolve?.(message);
      }
    });
  }

  /** Starts a server child pinned to `cpu` (when given) and waits for it to listen. */
  static async start(
    impl: Impl,
    options: {
      cpu: number | null;
      taskset: string | null;
      maxConnections: number;
      profileDir?: string | null;
      /** Cleartext HTTP/1.1 (default), TLS with HTTP/1.1 only, or TLS with HTTP/2 (self-signed certificate). */
      protocol?: ServerProtocol;
      /** HTTP/2 streams one connection may hold (the server's SETTINGS_MAX_CONCURRENT_STREAMS). */
      maxConcurrentStreams?: number;
      /** Ladder's engine (`memory`, `redis://…`, `nats://…`); the server reports ready once it is. */
      engine?: string;
      /** Ladder's `writeDelayMs`, when not its default. */
      writeDelayMs?: number | null;
    },
  ): Promise<ServerHandle> {
    const script = fileURLToPath(new URL("./server-process.js", import.meta.url));
    const profile = options.profileDir ? ["--cpu-prof", "--cpu-prof-dir", options.profileDir] : [];
    const nodeArgs = [
      "--expose-gc",
      ...profile,
      script,
      "--impl",
      impl,
      "--max-connections",
      String(options.maxConnections),
      "--protocol",
      options.protocol ?? "http1",
      "--max-concurrent-streams",
      String(options.maxConcurrentStreams ?? 128),
      ...(options.engine ? ["--engine", options.engine] : []),
      ...(options.writeDelayMs != null ? ["--write-delay", String(options.writeDelayMs)] : []),
    ];
    // taskset execs node in place, so the child's pid is the server's pid.
    const [command, args] =
      options.cpu !== null && options.taskset ? [options.taskset, ["-c", String(options.cpu), process.execPath, ...nodeArgs]] : [process.execPath, nodeArgs];
    const child = spawn(command, args, { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    children.add(child);
    child.once("exit", () => children.delete(child));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${impl} server did not start within 15 s`)), 15_000);
      const onMessage = (message: ChildToParent): void => {
        if (message.type === "ready") {
          clearTimeout(timer);
          child.off("message", onMessage);
          resolve(message.url);
        } else if (message.type === "fatal") {
          clearTimeout(timer);
          reject(new Error(`${impl} server failed: ${message.message}`));
        }
      };
      child.on("message", onMessage);
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${impl} server exited early (code ${code}, signal ${signal})`));
      });
    }).catch((error: unknown) => {
      child.kill("SIGKILL");
      throw error;
    });
    if (!url.startsWith("http://127.0.0.1:") && !url.startsWith("https://127.0.0.1:")) {
      child.kill("SIGKILL");
      throw new Error(`${impl} server listens on ${url}, not on 127.0.0.1`);
    }
    return new ServerHandle(impl, child, url, Boolean(options.profileDir));
  }

  #ask(type: ParentToChild["type"], timeoutMs = 10_000): Promise<ChildToParent> {
    const ref = ++this.#ref;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(ref);
        reject(new Error(`${this.impl} server did not answer ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.set(ref, (message) => {
        clearTimeout(timer);
        resolve(message);
      });
      this.child.send({ type, ref } satisfies ParentToChild);
    });
  }

  /** Runs a full GC in the server; false when it was started without --expose-gc. */
  async gc(): Promise<boolean> {
    const answer = await this.#ask("gc");
    return answer.type === "gc-done" && answer.gc;
  }

  async stats(): Promise<ServerStats> {
    const answer = await this.#ask("stats");
    if (answer.type !== "stats") throw new Error("unexpected answer to stats");
    return answer.stats;
  }

  cpuUs(): number {
    return readCpuUs(this.pid);
  }

  rssKb(): number {
    return readRssKb(this.pid);
  }

  /** Stops the server (SIGTERM, then SIGKILL after a second, or 15 s while it writes a profile) and waits for it to be gone. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => child.kill("SIGKILL"), this.#profiling ? 15_000 : 1000);
      child.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill("SIGTERM");
    });
  }
}
