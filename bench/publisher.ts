/**
 * The fan-out cases' publisher: `rate` messages a second, each stamped `{"t":<ms>,"seq":n}` just before it
 * is sent, over one of two ways (`--publisher`):
 *
 * - `http` (the default): one `POST /api/messages` per message over a few keep-alive connections;
 * - `ws`: one publish frame per message over `--publisher-connections` persistent WebSockets, each frame
 *   acknowledged (bench/ws-publish.ts).
 *
 * The data, the stamps and the channel of each message are the same either way, so latency and loss are
 * accounted alike. Every publish ends as ok, refused (an error answer) or unanswered (no answer, a failed
 * request, a closed connection).
 */
import { Agent, request } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { channelOf } from "./load.js";
import { nowMs } from "./metrics.js";
import { ANSWER_TIMEOUT_MS, PublisherSockets, type AckStyle } from "./ws-publish.js";

export type PublisherKind = "http" | "ws";

/** Keep-alive connections of the HTTP publisher: a few, so a slow answer does not hold the next POST. */
export const HTTP_PUBLISH_CONNECTIONS = 4;
export const PUBLISHER_KINDS: readonly PublisherKind[] = ["http", "ws"];

/** Where a server takes publishes: its HTTP path for a channel, and its publisher WebSocket. */
export interface PublishDialect {
  postPath(channel: string): string;
  /** The path publisher WebSockets connect to when messages go to `channels` channels; null when the server has none for that shape. */
  webSocketPath(channels: number): string | null;
  readonly webSocketAcks: AckStyle;
}

/** Ladder's and the baseline's: the body and the frame name the channel; one WebSocket publishes to any. */
export const LADDER_PUBLISH: PublishDialect = {
  postPath: () => "/api/messages",
  webSocketPath: () => "/api/ws",
  webSocketAcks: "ref",
};

/** A short label for reports: `http`, or `ws×N` (N publisher WebSockets). */
export function publisherLabel(via: PublisherKind, connections: number): string {
  return via === "ws" ? `ws×${connections}` : "http";
}

export interface PublishResult {
  readonly attempted: number;
  readonly ok: number;
  /** refused + unanswered. */
  readonly failed: number;
  /** Answered with an error: a non-2xx status, an error frame. */
  readonly refused: number;
  /** Never answered: the request failed or timed out, the connection closed. */
  readonly unanswered: number;
  readonly firstAt: number;
  readonly lastAt: number;
  /** From sending to the answer (the POST's response, the frame's ack), ms, median and worst, as the publisher sees it. */
  readonly roundTripP50Ms: number;
  readonly roundTripMaxMs: number;
}

type Outcome = "ok" | "refused" | "unanswered";

interface Sent {
  readonly outcome: Outcome;
  readonly roundTripMs: number;
}

export interface PublisherOptions {
  /** `http` by default. */
  readonly via?: PublisherKind;
  /** Publisher WebSockets (`ws`); 1 by default. Messages go round them in turn. */
  readonly connections?: number;
  /** Ladder's by default. */
  readonly dialect?: PublishDialect;
}

export class Publisher {
  readonly #base: URL;
  readonly #channels: number;
  readonly #dialect: PublishDialect;
  readonly via: PublisherKind;
  readonly connections: number;
  readonly #agent: Agent | null = null;
  readonly #request: typeof request = request;
  #sockets: PublisherSockets | null = null;
  #seq = 0;

  /** Messages go to `channels` channels in turn (see {@link channelOf}). A `ws` publisher must be {@link open}ed before it runs. */
  constructor(base: URL, channels = 1, options: PublisherOptions = {}) {
    this.#base = base;
    this.#channels = channels;
    this.#dialect = options.dialect ?? LADDER_PUBLISH;
    this.via = options.via ?? "http";
    this.connections = this.via === "ws" ? (options.connections ?? 1) : HTTP_PUBLISH_CONNECTIONS;
    if (this.via === "http") {
      // With TLS the publisher posts over HTTP/1.1 with TLS (the development certificate is not checked).
      const tls = base.protocol === "https:";
      this.#agent = tls
        ? new HttpsAgent({ keepAlive: true, maxSockets: this.connections, maxFreeSockets: this.connections, rejectUnauthorized: false })
        : new Agent({ keepAlive: true, maxSockets: this.connections, maxFreeSockets: this.connections });
      this.#request = tls ? (httpsRequest as typeof request) : request;
    }
  }

  get label(): string {
    return publisherLabel(this.via, this.connections);
  }

  /** Opens the publisher WebSockets (`ws`); nothing to do for `http`, whose connections open with the first POSTs. */
  async open(): Promise<void> {
    if (this.via !== "ws" || this.#sockets) return;
    const path = this.#dialect.webSocketPath(this.#channels);
    if (path === null) throw new Error(`this server has no WebSocket publisher for ${this.#channels} channels`);
    const url = new URL(path, this.#base);
    url.protocol = this.#base.protocol === "https:" ? "wss:" : "ws:";
    this.#sockets = await PublisherSockets.open(url, this.connections, this.#dialect.webSocketAcks);
  }

  /** Answers the publish sockets could not match to any publish (they show as unanswered publishes too). */
  get unmatchedAnswers(): number {
    return this.#sockets?.unmatched ?? 0;
  }

  #send(onSent: (stamp: number) => void): Promise<Sent> {
    const t = nowMs();
    const seq = this.#seq++;
    const channel = channelOf(seq, this.#channels);
    const data = `{"t":${t},"seq":${seq}}`;
    onSent(t);
    if (this.#sockets) {
      const sockets = this.#sockets;
      // Nchan publishes the frame whole: its subscribers get these bytes, with the same stamp in them.
      return new Promise((resolve) =>
        sockets.send(seq, (ref) => `{"type":"publish","room":"${channel}","ref":${ref},"data":${data}}`, 1, (outcome) =>
          resolve({ outcome: outcome.acked === 1 ? "ok" : outcome.refused > 0 ? "refused" : "unanswered", roundTripMs: nowMs() - t }),
        ),
      );
    }
    const body = `{"channel":"${channel}","data":${data}}`;
    return new Promise((resolve) => {
      const req = this.#request(
        new URL(this.#dialect.postPath(channel), this.#base),
        { method: "POST", agent: this.#agent!, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          // Ladder answers 201; Nchan 201, or 202 while no subscriber listens.
          const status = res.statusCode ?? 0;
          res.once("end", () => resolve({ outcome: status >= 200 && status < 300 ? "ok" : "refused", roundTripMs: nowMs() - t }));
        },
      );
      req.once("error", () => resolve({ outcome: "unanswered", roundTripMs: nowMs() - t }));
      req.setTimeout(ANSWER_TIMEOUT_MS, () => req.destroy(new Error("publish timed out")));
      req.end(body);
    });
  }

  /**
   * Publishes `rate` messages a second for `seconds`: each tick sends whatever is due by the clock, so a
   * late tick catches up instead of lowering the rate. `beforeFirst` runs just before the first stamp.
   */
  async run(rate: number, seconds: number, beforeFirst?: (stamp: number) => void): Promise<PublishResult> {
    await this.open();
    const total = Math.max(1, Math.round(rate * seconds));
    const pending: Array<Promise<Sent>> = [];
    let firstAt = 0;
    let lastAt = 0;
    beforeFirst?.(nowMs());
    const start = performance.now();
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
        while (pending.length < due) {
          pending.push(
            this.#send((stamp) => {
              if (firstAt === 0) firstAt = stamp;
              lastAt = stamp;
            }),
          );
        }
        if (pending.length >= total) resolve();
        else setTimeout(tick, Math.max(1, Math.min(10, 1000 / rate / 2)));
      };
      tick();
    });
    const results = await Promise.all(pending);
    const count = (outcome: Outcome): number => results.filter((r) => r.outcome === outcome).length;
    const ok = count("ok");
    const trips = results.map((r) => r.roundTripMs).sort((a, b) => a - b);
    return {
      attempted: total,
      ok,
      failed: total - ok,
      refused: count("refused"),
      unanswered: count("unanswered"),
      firstAt,
      lastAt,
      roundTripP50Ms: trips[Math.floor(trips.length / 2)] ?? NaN,
      roundTripMaxMs: trips.at(-1) ?? NaN,
    };
  }

  close(): void {
    this.#agent?.destroy();
    this.#sockets?.close();
  }
}

