/**
 * The two lowest rungs, one loop per channel over `GET /api/messages`: `long-poll` holds each request
 * (`wait=`) and asks again the moment it is answered; `poll` asks every `pollIntervalMs`. Each request has
 * a deadline, so a connection that hangs is noticed like a missed heartbeat.
 */
import { CURSOR_HEADER, GAP_HEADER, NOW_CURSOR, type Gap, type Message } from "../../protocol/index.js";
import { namedEndpoint, reachable, RungBase, TimerSlot, type RungHost } from "./rung.js";

const PAGE = 500;
/** Extra time over the server's hold before a long-poll counts as hung. */
const HOLD_GRACE_MS = 10_000;

interface Loop {
  readonly controller: AbortController;
  readonly timer: TimerSlot;
  stopped: boolean;
}

export class HttpPollRung extends RungBase {
  readonly name: "long-poll" | "poll";
  readonly #loops = new Map<string, Loop>();

  constructor(host: RungHost, name: "long-poll" | "poll") {
    super(host);
    this.name = name;
  }

  /** Plain requests: wherever fetch is. */
  static supported(): boolean {
    return true;
  }

  open(): void {
    for (const channel of this.host.cursors().keys()) this.add(channel);
    // With nothing subscribed there is nothing to ask for; a cheap request still proves the path works.
    if (this.#loops.size === 0) {
      void reachable(this.host.options).then((answered) => {
        if (this.ended) return;
        if (answered) this.opened();
        else this.end("the hub did not answer");
      });
    }
  }

  add(channel: string): void {
    if (this.#loops.has(channel) || this.ended) return;
    const loop: Loop = { controller: new AbortController(), timer: new TimerSlot(), stopped: false };
    this.#loops.set(channel, loop);
    void this.#run(channel, loop);
  }

  remove(channel: string): void {
    const loop = this.#loops.get(channel);
    if (!loop) return;
    this.#stop(loop);
    this.#loops.delete(channel);
  }


  async #run(channel: string, loop: Loop): Promise<void> {
    const { options } = this.host;
    let first = true;
    while (!loop.stopped && !this.ended) {
      // The first request of a loop answers at once: it proves the path, catches up and learns the cursor;
      // only then does a long-poll start holding.
      const long = this.name === "long-poll" && !first;
      first = false;
      const cursor = this.host.cursors().get(channel) ?? NOW_CURSOR;
      const url = namedEndpoint(options, options.paths.messages);
      url.searchParams.set("channel", channel);
      url.searchParams.set("since", cursor);
      url.searchParams.set("limit", String(PAGE));
      if (long) url.searchParams.set("wait", String(options.longPollWaitSeconds));
      const deadline = long ? options.longPollWaitSeconds * 1000 + HOLD_GRACE_MS : options.openTimeoutMs;
      let messages: Message[];
      let res: Response;
      try {
        const controller = new AbortController();
        const abort = (): void => controller.abort();
        loop.controller.signal.addEventListener("abort", abort);
        loop.timer.set(deadline, abort);
        try {
          res = await options.fetch(url, { signal: controller.signal, cache: "no-store" });
          messages = res.ok ? ((await res.json()) as Message[]) : [];
        } finally {
          loop.timer.clear();
          loop.controller.signal.removeEventListener("abort", abort);
        }
      } catch (error) {
        if (!loop.stopped) this.end(`request failed: ${(error as Error).message}`);
        return;
      }
      if (loop.stopped || this.ended) return;
      if (!res.ok) {
        this.end(`poll answered ${res.status}`);
        return;
      }
      this.opened();
      const gap = res.headers.get(GAP_HEADER);
      // A gap's snapshot travels as the body's first element, {"channel","snapshot"}: too large for a header.
      const head = messages[0] as Partial<Gap> | undefined;
      const parsed = gap ? (JSON.parse(gap) as { snapshot?: unknown } & Gap) : null;
      if (parsed && head && "snapshot" in head) parsed.snapshot = (messages.shift(), head.snapshot);
      if (parsed) this.host.gap(this, parsed);
      for (const message of messages) this.host.message(this, message.backfilled ? { ...message, id: "", time: 0 } : message);
      const next = res.headers.get(CURSOR_HEADER);
      if (next) this.host.cursor(this, channel, next);
      if (this.name === "poll" && messages.length < PAGE) {
        await new Promise<void>((resolve) => loop.timer.set(options.pollIntervalMs, resolve));
      }
    }
  }

  #stop(loop: Loop): void {
    loop.stopped = true;
    loop.timer.clear();
    loop.controller.abort();
  }

  protected teardown(): void {
    for (const loop of this.#loops.values()) this.#stop(loop);
    this.#loops.clear();
  }
}
