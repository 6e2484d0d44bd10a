/**
 * The demo's backfill panel, server side: a board on `demo.board` whose state (a count and the last few
 * items) the page keeps from the channel's messages, and the backfill hook that repairs a gap in it.
 *
 * `POST /demo/board {"pastHistory": true}` publishes more messages than the hub keeps per channel, so a page
 * that was cut off comes back to a cursor older than history: the hub asks the backfill hook, which answers
 * the board's current state as a snapshot (`gap.snapshot`), and the page replaces its state with it. Each
 * message carries its sequence `n`, so the history the hub still delivers after the snapshot is recognised
 * as already counted. The hook listens on its own loopback port under a random path: `ladder serve` hands
 * that URL to the hub as `hooks.backfill` (unless the operator set one). The state lives in this process,
 * so with `--workers` each worker has its own board.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { LadderError } from "../protocol/index.js";
import { closeAfterResponse, readJsonBody, sendJson, type HubRequest, type HubResponse } from "../server/edge/http.js";
import { sendError } from "../server/edge/refusal.js";
import type { DemoPublish } from "./demo-publisher.js";

export const DEMO_BOARD_CHANNEL = "demo.board";
export const DEMO_BOARD_PATH = "/demo/board";
/** How many items the board shows. */
const RECENT = 5;
/** A history longer than this is not outrun by the demo: the button would publish too much. */
export const MAX_BOARD_BURST = 10_000;

export interface BoardState {
  /** Messages published on the board: the `n` of the last one. */
  readonly total: number;
  /** The last items, newest first. */
  readonly recent: readonly string[];
  /** The id of message `total`: a page that loads the state subscribes from it. */
  readonly lastId: string | null;
}

const ITEMS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "quince", "cherry", "mango"];

export class DemoBoard {
  readonly #historySize: () => number;
  #publish: DemoPublish | null = null;
  #state: BoardState = { total: 0, recent: [], lastId: null };
  /** One burst at a time: the state's order is the channel's order. */
  #busy: Promise<unknown> = Promise.resolve();
  #hookServer: Server | null = null;

  /** `historySize`: the hub's messages per channel, known once the hub is built. */
  constructor(historySize: () => number) {
    this.#historySize = historySize;
  }

  attach(publish: DemoPublish): void {
    this.#publish = publish;
  }

  get state(): BoardState {
    return this.#state;
  }

  /** Publishes `count` items one after another; the state follows each publish the hub took. */
  add(count: number): Promise<BoardState> {
    const run = this.#busy.then(async () => {
      const publish = this.#publish;
      if (!publish) throw new LadderError("unavailable", "the demo board is not attached to a hub yet");
      for (let i = 0; i < count; i++) {
        const n = this.#state.total + 1;
        const item = `${ITEMS[(n - 1) % ITEMS.length]} #${n}`;
        const published = await publish(DEMO_BOARD_CHANNEL, { n, item });
        const id = (published as { id?: unknown } | undefined)?.id;
        this.#state = { total: n, recent: [item, ...this.#state.recent].slice(0, RECENT), lastId: typeof id === "string" ? id : null };
      }
      return this.#state;
    });
    this.#busy = run.catch(() => undefined);
    return run;
  }

  /** Starts the backfill hook on a loopback port; resolves with its URL. */
  async listenHook(): Promise<string> {
    const path = `/backfill/${randomBytes(12).toString("hex")}`;
    const server = createServer((req, res) => {
      if (req.method !== "POST" || req.url !== path) {
        res.writeHead(404).end();
        return;
      }
      readJsonBody(req, 4096)
        .then((body) => {
          const channel = (body as { channel?: unknown } | null)?.channel;
          // Other channels get nothing: the plain gap, as without a hook.
          sendJson(res, 200, channel === DEMO_BOARD_CHANNEL ? { snapshot: this.#state } : {});
        })
        .catch(() => {
          closeAfterResponse(req, res);
          res.writeHead(400).end();
        });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    server.unref();
    this.#hookServer = server;
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`;
  }

  close(): void {
    this.#hookServer?.close();
    this.#hookServer?.closeAllConnections();
    this.#hookServer = null;
  }

  /**
   * `GET /demo/board` → `{channel, state, historySize}`; `POST /demo/board {"add": 1..100}` adds items,
   * `{"pastHistory": true}` adds history size + 5 of them. Every other path goes to `next`.
   */
  routes(next: (req: HubRequest, res: HubResponse) => void): (req: HubRequest, res: HubResponse) => void {
    return (req, res) => {
      if (new URL(req.url ?? "/", "http://x").pathname !== DEMO_BOARD_PATH) return next(req, res);
      const method = req.method ?? "GET";
      if (method === "GET" || method === "HEAD") return sendJson(res, 200, this.#status());
      if (method !== "POST") {
        closeAfterResponse(req, res);
        return sendError(res, new LadderError("method_not_allowed", "use GET or POST"), { allow: "GET, HEAD, POST" });
      }
      readJsonBody(req, 1024)
        .then((body) => this.add(this.#count(body)))
        .then(() => sendJson(res, 200, this.#status()))
        .catch((error: unknown) => {
          closeAfterResponse(req, res);
          sendError(res, error instanceof LadderError ? error : new LadderError("internal", "internal error"));
        });
    };
  }

  #count(body: unknown): number {
    const fields = typeof body === "object" && body !== null ? (body as { add?: unknown; pastHistory?: unknown }) : {};
    if (fields.pastHistory === true) {
      const count = this.#historySize() + 5;
      if (count > MAX_BOARD_BURST) throw new LadderError("bad_request", `history keeps ${this.#historySize()} messages: too many for the demo to outrun (start with a smaller --history-size)`);
      return count;
    }
    if (typeof fields.add === "number" && Number.isInteger(fields.add) && fields.add >= 1 && fields.add <= 100) return fields.add;
    throw new LadderError("bad_request", 'body must be {"add": 1..100} or {"pastHistory": true}');
  }

  #status(): { channel: string; state: BoardState; historySize: number } {
    return { channel: DEMO_BOARD_CHANNEL, state: this.#state, historySize: this.#historySize() };
  }
}
