/**
 * The worker's side of the IPC engine: an {@link Engine} whose log lives in another process (the cluster
 * primary's MemoryEngine, served by {@link IpcEngineHost}). Publish and read are requests over the port;
 * live messages are pushed by the host for the channels this worker follows and go through
 * {@link LiveFeeds}, like a broker engine's: the hub's subscriptions then keep their no-loss fence
 * (the engine has no readSync, so history read over the link may run ahead of the live feed).
 */
import type { Logger } from "pino";
import { LadderError, type MessageId } from "../../protocol/index.js";
import type { Engine, MessageListener, Published, ReadResult } from "../engine.js";
import { LiveFeeds } from "../live-feeds.js";
import { errorFromFrame, isEngineFrame, TAG, type AnswerFrame, type LiveFrame, type Request, type RequestFrame, type UnsubscribeFrame } from "./frames.js";
import type { IpcPort } from "./port.js";

export interface IpcEngineOptions {
  readonly port: IpcPort;
  /** A request unanswered for this long fails (a publish answers 503). Default 5000 ms. */
  readonly requestTimeoutMs?: number;
  readonly logger?: Pick<Logger, "info" | "warn">;
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  readonly timer: NodeJS.Timeout;
}

export class IpcEngine implements Engine {
  readonly name = "ipc";
  readonly #port: IpcPort;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  readonly #feeds: LiveFeeds;
  #nextRef = 1;
  #closed = false;

  constructor(options: IpcEngineOptions) {
    this.#port = options.port;
    this.#timeoutMs = options.requestTimeoutMs ?? 5000;
    this.#feeds = new LiveFeeds({
      read: (channel, since, limit) => this.read(channel, since, limit),
      live: {
        open: async (channel) => {
          await this.#request({ op: "subscribe", channel });
        },
        close: (channel) => this.#port.send({ tag: TAG, kind: "unsubscribe", channel } satisfies UnsubscribeFrame),
      },
      logger: options.logger ?? { info: () => {}, warn: () => {} },
    });
    this.#port.onMessage((frame) => {
      if (isEngineFrame(frame)) this.#receive(frame as AnswerFrame | LiveFrame);
    });
    this.#port.onClose(() => this.#failAll(new LadderError("unavailable", "the process holding the log has gone")));
  }

  ready(): boolean {
    return !this.#closed && this.#port.open;
  }

  async publish(channel: string, data: unknown, _encodedBytes?: number, key?: string): Promise<Published> {
    // The key travels to the host's engine, which holds the dedupe window for every worker.
    return (await this.#request(key === undefined ? { op: "publish", channel, data } : { op: "publish", channel, data, key })) as Published;
  }

  async read(channel: string, since: MessageId | null, limit: number): Promise<ReadResult> {
    return (await this.#request({ op: "read", channel, since, limit })) as ReadResult;
  }

  subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    return this.#feeds.subscribe(channel, listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#feeds.close();
    this.#failAll(new LadderError("unavailable", "engine is closed"));
  }

  #request(request: Request): Promise<unknown> {
    if (this.#closed) return Promise.reject(new LadderError("unavailable", "engine is closed"));
    if (!this.#port.open) return Promise.reject(new LadderError("unavailable", "the process holding the log has gone"));
    const ref = this.#nextRef++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(ref);
        reject(new LadderError("unavailable", `no answer to ${request.op} within ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      this.#pending.set(ref, { resolve, reject, timer });
      this.#port.send({ tag: TAG, kind: "request", ref, ...request } satisfies RequestFrame);
    });
  }

  #receive(frame: AnswerFrame | LiveFrame): void {
    if (frame.kind === "live") {
      this.#feeds.deliver(frame.message.channel, frame.message, frame.prev);
      return;
    }
    const pending = this.#pending.get(frame.ref);
    if (!pending) return;
    this.#pending.delete(frame.ref);
    clearTimeout(pending.timer);
    if (frame.error) pending.reject(errorFromFrame(frame.error));
    else pending.resolve(frame.value);
  }

  #failAll(error: Error): void {
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.#pending.clear();
  }
}
