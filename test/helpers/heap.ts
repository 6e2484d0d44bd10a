/** Test helpers for "memory returns to where it was": a forced GC from inside the test process, and polling. */
import v8 from "node:v8";
import { runInNewContext } from "node:vm";

const gc = ((): (() => void) => {
  v8.setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
})();

/** Heap in use after several full collections, with turns of the event loop between them for finalizers. */
export async function heapAfterGc(): Promise<number> {
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  gc();
  return process.memoryUsage().heapUsed;
}

export const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(2)} MB`;

/** Polls `cond` every 10 ms until it holds (true) or `ms` pass (false). */
export async function settle(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
