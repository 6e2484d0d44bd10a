/**
 * The channel under the IPC engine: an ordered, reliable, message-at-a-time link between one worker and
 * the process that owns the log. The real one is node:cluster's IPC channel; a test can use a
 * MessageChannel. Frames carry a tag so other users of the same channel (cluster itself, prom-client)
 * are left alone.
 */
import type { Worker } from "node:cluster";
import type { MessagePort } from "node:worker_threads";

export interface IpcPort {
  /** Sends a frame; a port that has closed drops it (its requests fail by {@link onClose}). */
  send(frame: object): void;
  onMessage(listener: (frame: unknown) => void): void;
  /** Called once when the link goes away (the other process exited or disconnected). */
  onClose(listener: () => void): void;
  readonly open: boolean;
}

/** The worker's side of node:cluster's channel (`process` in a cluster worker or forked child). */
export function parentPort(proc: NodeJS.Process = process): IpcPort {
  if (!proc.send) throw new Error("this process has no IPC channel to a primary");
  return {
    send(frame) {
      if (proc.connected) proc.send!(frame, undefined, undefined, ignoreError);
    },
    onMessage(listener) {
      proc.on("message", listener);
    },
    onClose(listener) {
      proc.once("disconnect", listener);
    },
    get open() {
      return proc.connected;
    },
  };
}

/** The primary's side of one cluster worker's channel. */
export function workerPort(worker: Worker): IpcPort {
  let open = true;
  worker.once("disconnect", () => (open = false));
  worker.once("exit", () => (open = false));
  return {
    send(frame) {
      if (open && worker.isConnected()) worker.send(frame, undefined, ignoreError);
    },
    onMessage(listener) {
      worker.on("message", listener);
    },
    onClose(listener) {
      let called = false;
      const once = (): void => {
        if (called) return;
        called = true;
        listener();
      };
      worker.once("disconnect", once);
      worker.once("exit", once);
    },
    get open() {
      return open && worker.isConnected();
    },
  };
}

/** One end of a worker_threads MessageChannel (tests: a primary and a worker in one process). */
export function messagePort(port: MessagePort): IpcPort {
  let open = true;
  port.once("close", () => (open = false));
  return {
    send(frame) {
      if (open) port.postMessage(frame);
    },
    onMessage(listener) {
      port.on("message", listener);
    },
    onClose(listener) {
      port.once("close", listener);
    },
    get open() {
      return open;
    },
  };
}

/** A send to a process that is exiting fails asynchronously; its pending requests are failed by onClose. */
function ignoreError(): void {}
