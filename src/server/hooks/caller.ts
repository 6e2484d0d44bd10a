/**
 * One HTTP caller for every hook: a JSON POST to the app with a timeout, a bound on calls in flight (and
 * on calls waiting for a slot), and a bound on the answer's size. A call either resolves with the app's
 * JSON or rejects with a {@link HookFailure} whose reason the failure policy, the log and the metrics use.
 * The hub never waits on the app in a way that holds other connections: each call is its own promise.
 */
import type { Logger } from "pino";
import { LadderError } from "../../protocol/index.js";

export type HookName = "connect" | "subscribe" | "publish" | "backfill" | "webhook";

/** Why a call gave no usable answer; the `reason` label of `ladder_hook_failures_total`. */
export type FailureReason = "timeout" | "network" | "status" | "too_large" | "invalid" | "overloaded" | "dropped";

export class HookFailure extends Error {
  readonly reason: FailureReason;
  constructor(reason: FailureReason, message: string) {
    super(message);
    this.reason = reason;
  }
}

/** Where latency and failures are counted (HubMetrics); optional so a hub without metrics pays nothing. */
export interface HookObserver {
  hookCalled(hook: HookName, seconds: number): void;
  hookFailed(hook: HookName, reason: FailureReason): void;
}

export interface CallerOptions {
  /** Ms before a call is abandoned. Default 2000. */
  readonly timeoutMs?: number;
  /** Calls in flight at once. Default 64. */
  readonly concurrency?: number;
  /** Calls waiting for a slot; past it a call fails at once with `overloaded`. Default 1024. */
  readonly queue?: number;
  /** Largest answer body read, in bytes. Default 1 MiB. */
  readonly maxResponseBytes?: number;
}

export const DEFAULT_CALLER = { timeoutMs: 2000, concurrency: 64, queue: 1024, maxResponseBytes: 1024 * 1024 } as const;

export interface HookResponse {
  readonly status: number;
  /** The parsed JSON body; undefined for an empty body. */
  readonly body: unknown;
}

/** A body already serialised (and signed): sent byte for byte. */
export class Signed {
  constructor(readonly body: string) {}
}

export class HookCaller {
  readonly #timeoutMs: number;
  readonly #concurrency: number;
  readonly #queueLimit: number;
  readonly #maxBytes: number;
  readonly #logger: Logger;
  readonly #observer: HookObserver | null;
  readonly #headers: Readonly<Record<string, string>>;
  #inFlight = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(options: CallerOptions, logger: Logger, observer: HookObserver | null, headers: Readonly<Record<string, string>> = {}) {
    this.#headers = headers;
    this.#timeoutMs = bounded("timeoutMs", options.timeoutMs, DEFAULT_CALLER.timeoutMs);
    this.#concurrency = bounded("concurrency", options.concurrency, DEFAULT_CALLER.concurrency);
    this.#queueLimit = bounded("queue", options.queue, DEFAULT_CALLER.queue, 0);
    this.#maxBytes = bounded("maxResponseBytes", options.maxResponseBytes, DEFAULT_CALLER.maxResponseBytes);
    this.#logger = logger;
    this.#observer = observer;
  }

  /**
   * POSTs `payload` to `url` and hands the answer to `read`, which validates it (throwing a HookFailure
   * `invalid` for a wrong shape). Any 2xx with a JSON body (or none) is read; `acceptStatus` lets a hook read
   * a refusal's body too (401/403 with a code). Every failure is logged and counted, then rethrown.
   */
  async call<T>(hook: HookName, url: string, payload: unknown, read: (response: HookResponse) => T, acceptStatus: (status: number) => boolean = ok, headers: Record<string, string> = {}): Promise<T> {
    const started = performance.now();
    try {
      await this.#slot();
    } catch (error) {
      this.#failed(hook, url, error as HookFailure);
      throw error;
    }
    try {
      const response = await this.#post(url, payload, { ...this.#headers, ...headers }, acceptStatus);
      const value = read(response);
      this.#observer?.hookCalled(hook, (performance.now() - started) / 1000);
      return value;
    } catch (error) {
      // A LadderError from `read` is the app's own refusal: an answer, not a failure.
      if (error instanceof LadderError) {
        this.#observer?.hookCalled(hook, (performance.now() - started) / 1000);
        throw error;
      }
      const failure = error instanceof HookFailure ? error : new HookFailure("network", String(error));
      this.#observer?.hookCalled(hook, (performance.now() - started) / 1000);
      this.#failed(hook, url, failure);
      throw failure;
    } finally {
      this.#release();
    }
  }

  #failed(hook: HookName, url: string, failure: HookFailure): void {
    this.#observer?.hookFailed(hook, failure.reason);
    this.#logger.warn({ hook, url, reason: failure.reason, err: failure.message }, "hook call failed");
  }

  async #post(url: string, payload: unknown, headers: Record<string, string>, acceptStatus: (status: number) => boolean): Promise<HookResponse> {
    const signal = AbortSignal.timeout(this.#timeoutMs);
    let res: Response;
    try {
      res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json", ...headers },
        // A webhook signs its exact bytes, so it hands them over as a string.
        body: payload instanceof Signed ? payload.body : JSON.stringify(payload),
        signal,
        redirect: "error",
      });
    } catch (error) {
      throw signal.aborted ? new HookFailure("timeout", `no answer within ${this.#timeoutMs} ms`) : new HookFailure("network", causeOf(error));
    }
    if (!acceptStatus(res.status)) {
      await res.body?.cancel().catch(() => undefined);
      throw new HookFailure("status", `answered ${res.status}`);
    }
    const text = await this.#readBody(res, signal);
    if (text.trim() === "") return { status: res.status, body: undefined };
    try {
      return { status: res.status, body: JSON.parse(text) as unknown };
    } catch {
      throw new HookFailure("invalid", "answer is not JSON");
    }
  }

  /** Reads at most maxResponseBytes: a huge or endless answer is cut off, never buffered whole. */
  async #readBody(res: Response, signal: AbortSignal): Promise<string> {
    const declared = Number(res.headers.get("content-length"));
    if (Number.isFinite(declared) && declared > this.#maxBytes) {
      await res.body?.cancel().catch(() => undefined);
      throw new HookFailure("too_large", `answer of ${declared} bytes is over ${this.#maxBytes}`);
    }
    if (!res.body) return "";
    const reader = res.body.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > this.#maxBytes) {
          await reader.cancel().catch(() => undefined);
          throw new HookFailure("too_large", `answer is over ${this.#maxBytes} bytes`);
        }
        chunks.push(value);
      }
    } catch (error) {
      if (error instanceof HookFailure) throw error;
      throw signal.aborted ? new HookFailure("timeout", `answer not complete within ${this.#timeoutMs} ms`) : new HookFailure("network", causeOf(error));
    }
    return Buffer.concat(chunks).toString("utf8");
  }

  #slot(): Promise<void> {
    if (this.#inFlight < this.#concurrency) {
      this.#inFlight++;
      return Promise.resolve();
    }
    if (this.#waiting.length >= this.#queueLimit) {
      return Promise.reject(new HookFailure("overloaded", `${this.#concurrency} calls in flight and ${this.#queueLimit} waiting`));
    }
    // The slot passes straight to the waiter: inFlight stays the same.
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#inFlight--;
  }
}

function ok(status: number): boolean {
  return status >= 200 && status < 300;
}

function causeOf(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? String(error);
}

export function bounded(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min) throw new TypeError(`option hooks.${name} must be a number ≥ ${min}`);
  return value;
}
