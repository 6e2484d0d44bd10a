/**
 * The log's owner side of the IPC engine: one engine (the primary's MemoryEngine) served to many workers.
 * It assigns ids and appends for every worker's publish, answers reads, and pushes each message of a
 * channel to the workers that follow it — one engine subscription per channel, however many workers.
 */
import { isValidChannel, type Message, type MessageId } from "../../protocol/index.js";
import type { Engine } from "../engine.js";
import { errorToFrame, isEngineFrame, TAG, type AnswerFrame, type LiveFrame, type ToHost } from "./frames.js";
import type { IpcPort } from "./port.js";

interface Followed {
  readonly ports: Set<IpcPort>;
  /** Resolves once the engine delivers the channel and its position is known. */
  readonly opening: Promise<void>;
  unsubscribe: (() => void) | null;
  /** The id of the last message pushed (or the channel's position when it was first followed). */
  last: MessageId;
  closed: boolean;
}

/** Largest `limit` a worker may ask a read for; the hub's own pages are far smaller. */
const MAX_READ_LIMIT = 10_000;

export class IpcEngineHost {
  readonly engine: Engine;
  readonly #channels = new Map<string, Followed>();
  readonly #ports = new Set<IpcPort>();

  constructor(engine: Engine) {
    this.engine = engine;
  }

  /** Workers served now. */
  get workers(): number {
    return this.#ports.size;
  }

  /** Serves the engine over a port until it closes. */
  serve(port: IpcPort): void {
    this.#ports.add(port);
    port.onMessage((frame) => {
      if (isEngineFrame(frame)) this.#handle(port, frame as ToHost);
    });
    port.onClose(() => this.#drop(port));
  }

  /** Stops following every channel (the engine itself is the caller's to close). */
  close(): void {
    for (const port of [...this.#ports]) this.#drop(port);
  }

  #handle(port: IpcPort, frame: ToHost): void {
    if (typeof frame.channel !== "string" || !isValidChannel(frame.channel)) {
      if (frame.kind === "request") this.#answer(port, frame.ref, Promise.reject(new Error("bad channel")));
      return;
    }
    if (frame.kind === "unsubscribe") {
      this.#unfollow(port, frame.channel);
      return;
    }
    switch (frame.op) {
      case "publish":
        this.#answer(port, frame.ref, this.engine.publish(frame.channel, frame.data, undefined, frame.key));
        return;
      case "read": {
        const limit = Math.min(MAX_READ_LIMIT, Math.max(0, Math.floor(Number(frame.limit) || 0)));
        const since = typeof frame.since === "string" ? frame.since : null;
        this.#answer(port, frame.ref, this.engine.read(frame.channel, since, limit));
        return;
      }
      case "subscribe":
        this.#answer(port, frame.ref, this.#follow(port, frame.channel).then(() => null));
        return;
      default:
        this.#answer(port, (frame as { ref: number }).ref, Promise.reject(new Error("unknown operation")));
    }
  }

  #answer(port: IpcPort, ref: number, work: Promise<AnswerFrame["value"]>): void {
    work.then(
      (value) => port.send({ tag: TAG, kind: "answer", ref, value } satisfies AnswerFrame),
      (error: unknown) => port.send({ tag: TAG, kind: "answer", ref, error: errorToFrame(error) } satisfies AnswerFrame),
    );
  }

  /** Resolves once every message published from now on will be pushed to the port. */
  async #follow(port: IpcPort, channel: string): Promise<void> {
    if (!this.#ports.has(port)) return;
    let followed = this.#channels.get(channel);
    if (!followed) {
      const created: Followed = { ports: new Set(), opening: Promise.resolve(), unsubscribe: null, last: "0", closed: false };
      (created as { opening: Promise<void> }).opening = this.#open(channel, created);
      this.#channels.set(channel, created);
      followed = created;
    }
    followed.ports.add(port);
    try {
      await followed.opening;
    } catch (error) {
      this.#unfollow(port, channel);
      throw error;
    }
  }

  async #open(channel: string, followed: Followed): Promise<void> {
    const unsubscribe = await this.engine.subscribe(channel, (message) => this.#push(followed, message));
    if (followed.closed) return unsubscribe();
    followed.unsubscribe = unsubscribe;
    const { cursor } = await this.engine.read(channel, null, 0);
    // A message pushed meanwhile already moved `last` past the position read here.
    if (followed.last === "0") followed.last = cursor;
  }

  #push(followed: Followed, message: Message): void {
    const frame: LiveFrame = { tag: TAG, kind: "live", message, prev: followed.last };
    followed.last = message.id;
    for (const port of followed.ports) port.send(frame);
  }

  #unfollow(port: IpcPort, channel: string): void {
    const followed = this.#channels.get(channel);
    if (!followed || !followed.ports.delete(port) || followed.ports.size > 0) return;
    followed.closed = true;
    followed.unsubscribe?.();
    this.#channels.delete(channel);
  }

  #drop(port: IpcPort): void {
    if (!this.#ports.delete(port)) return;
    for (const [channel, followed] of [...this.#channels]) if (followed.ports.has(port)) this.#unfollow(port, channel);
  }
}
