/** The `ladder` binary in tests: the URL a `ladder serve` child prints once it listens. */
import type { ChildProcess } from "node:child_process";

/** Resolves with the URL of "listening on …" on the child's stdout; rejects when it exits first or stays silent. */
export function listeningUrl(child: ChildProcess, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`no "listening on" within ${timeoutMs} ms: ${out}`)), timeoutMs);
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on (https?:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
    child.once("exit", () => {
      clearTimeout(timer);
      reject(new Error(`exited before listening: ${out}`));
    });
  });
}
