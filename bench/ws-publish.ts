/**
 * Publisher WebSockets with acks, shared by the fan-out publisher (`--publisher ws`, bench/publisher.ts) and
 * the publish mode's `ws` scenarios (bench/publish.ts): a few persistent connections, each publish frame
 * matched to its answer, so that every publish ends acknowledged, refused or unanswered — never silently.
 *
 * - `ref` answers (Ladder, the baseline): `{"type":"publish","room","ref","data"}` is answered by
 *   `{"type":"ack","ref",…}` — for a batch frame one ack with a result per message, `{"error":…}` for a
 *   refused one — or by `{"type":"error",…,"ref"}`. Other frames (messages, pongs) are not answers.
 * - `in-order` answers (Nchan's WebSocket publisher): every text frame is published whole and answered, in
 *   order, with the channel's info (`queued messages: N…`); anything else answers the oldest publish as
 *   refused. There are no refs.
 *
 * A publish not answered within the timeout, or in flight when its connection closes, counts as unanswered.
 */
import { WebSocket } from "ws";

export type AckStyle = "ref" | "in-order";

/** How the messages of one publish frame ended. */
export interface FrameOutcome {
  readonly acked: number;
  /** Answered with an error (an error frame, or an error result in a batch ack). */
  readonly refused: number;
  /** No answer: timed out, or the connection closed (or was never open). */
  readonly unanswered: number;
}

export type OnAnswer = (outcome: FrameOutcome) => void;

interface InFlight {
  readonly messages: number;
  readonly sentAt: number;
  readonly done: OnAnswer;
}

/** As long as an HTTP publish may take (bench/publisher.ts): a healthy server answers in milliseconds. */
export const ANSWER_TIMEOUT_MS = 30_000;

/** What Nchan's WebSocket publisher answers a stored message with (the channel's info, as text). */
const NCHAN_ACK = "queued messages:";

/** The number after the first `"ref":` (acks and error frames carry the frame's own ref; data never comes back). */
function refOf(text: string): number {
  const at = text.indexOf('"ref":');
  return at < 0 ? Number.NaN : Number.parseInt(text.slice(at + 6, at + 24), 10);
}

export class PublisherSockets {
  readonly #sockets: readonly WebSocket[];
  /** Per connection, the publishes in flight by ref, oldest first (a Map keeps insertion order). */
  readonly #inFlight: ReadonlyArray<Map<number, InFlight>>;
  readonly #style: AckStyle;
  readonly #timeoutMs: number;
  readonly #sweeper: NodeJS.Timeout;
  #ref = 0;
  /** Answers that matched no publish in flight (an error frame without a ref, a late ack); the publishes they were for end as unanswered. */
  unmatched = 0;

  private constructor(sockets: WebSocket[], style: AckStyle, timeoutMs: number) {
    this.#sockets = sockets;
    this.#style = style;
    this.#timeoutMs = timeoutMs;
    this.#inFlight = sockets.map(() => new Map());
    sockets.forEach((ws, index) => {
      ws.on("message", (data: Buffer) => this.#answer(index, data.toString("utf8")));
      ws.on("error", () => {});
      ws.once("close", () => this.#failAll(index));
    });
    this.#sweeper = setInterval(() => this.#sweep(), Math.min(1000, timeoutMs));
    this.#sweeper.unref();
  }

  /** Opens `connections` WebSockets to `url` (ws:// or wss://); rejects, closing the others, if one fails. */
  static async open(url: string | URL, connections: number, style: AckStyle = "ref", timeoutMs = ANSWER_TIMEOUT_MS): Promise<PublisherSockets> {
    const sockets = Array.from({ length: connections }, () => new WebSocket(url, { perMessageDeflate: false, rejectUnauthorized: false }));
    try {
      await Promise.all(
        sockets.map(
          (ws) =>
            new Promise<void>((resolve, reject) => {
              ws.once("open", () => resolve());
              ws.once("error", reject);
              ws.once("unexpected-response", (_req, res) => reject(new Error(`publisher WebSocket ${String(url)} answered ${res.statusCode}`)));
            }),
        ),
      );
    } catch (error) {
      for (const ws of sockets) ws.terminate();
      throw error;
    }
    return new PublisherSockets(sockets, style, timeoutMs);
  }

  get size(): number {
    return this.#sockets.length;
  }

  /** Publishes in flight on all connections. */
  get inFlight(): number {
    return this.#inFlight.reduce((sum, map) => sum + map.size, 0);
  }

  /**
   * Sends `frame(ref)` (a publish of `messages` messages) on connection `connection % size`; `done` runs
   * once, when it is answered or given up. On a closed connection it runs on a later microtask, so a
   * caller that sends again from `done` does not recurse.
   */
  send(connection: number, frame: (ref: number) => string, messages: number, done: OnAnswer): void {
    const index = connection % this.#sockets.length;
    const ws = this.#sockets[index]!;
    if (ws.readyState !== WebSocket.OPEN) {
      queueMicrotask(() => done({ acked: 0, refused: 0, unanswered: messages }));
      return;
    }
    const ref = this.#ref++;
    this.#inFlight[index]!.set(ref, { messages, sentAt: performance.now(), done });
    ws.send(frame(ref));
  }

  /** Closes every connection; publishes still in flight end as unanswered. */
  close(): void {
    clearInterval(this.#sweeper);
    for (const ws of this.#sockets) ws.terminate();
    for (let i = 0; i < this.#sockets.length; i++) this.#failAll(i);
  }

  #answer(index: number, text: string): void {
    const inFlight = this.#inFlight[index]!;
    let ref: number;
    let isAck: boolean;
    if (this.#style === "in-order") {
      const oldest = inFlight.keys().next();
      if (oldest.done === true) {
        this.unmatched++;
        return;
      }
      ref = oldest.value;
      isAck = text.startsWith(NCHAN_ACK);
    } else if (text.startsWith('{"type":"ack"')) {
      ref = refOf(text);
      isAck = true;
    } else if (text.startsWith('{"type":"error"')) {
      ref = refOf(text);
      isAck = false;
    } else {
      return;
    }
    const publish = inFlight.get(ref);
    if (!publish) {
      this.unmatched++;
      return;
    }
    inFlight.delete(ref);
    // A batch ack has one result per message; the refused ones are `{"error":…}`.
    const refused = !isAck ? publish.messages : publish.messages > 1 ? Math.min(publish.messages, text.split('"error"').length - 1) : 0;
    publish.done({ acked: publish.messages - refused, refused, unanswered: 0 });
  }

  #failAll(index: number): void {
    const inFlight = this.#inFlight[index]!;
    const publishes = [...inFlight.values()];
    inFlight.clear();
    for (const publish of publishes) publish.done({ acked: 0, refused: 0, unanswered: publish.messages });
  }

  /** Gives up publishes older than the timeout; each map is oldest first, so it stops at the first young one. */
  #sweep(): void {
    const cutoff = performance.now() - this.#timeoutMs;
    for (const inFlight of this.#inFlight) {
      for (const [ref, publish] of inFlight) {
        if (publish.sentAt > cutoff) break;
        inFlight.delete(ref);
        publish.done({ acked: 0, refused: 0, unanswered: publish.messages });
      }
    }
  }
}
