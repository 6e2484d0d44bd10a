/**
 * Server-Sent Events read with fetch and a streaming parser rather than EventSource: the client needs to
 * see heartbeat comments (to notice a silent dead connection), send its own Last-Event-ID (the cursors it
 * actually handed to the user), and notice a network that buffers the stream (no `ready` event in time).
 * Adding or removing a channel reopens the stream from the current cursors.
 */
import { BACKFILL_EVENT, encodeCursorMap, GAP_EVENT, JOIN_EVENT, LEAVE_EVENT, PRESENCE_EVENT, READY_EVENT, type Gap, type Member, type Message, type MessageId, type PresenceList } from "../../protocol/index.js";
import { sseLines, type SseEvent } from "./sse-lines.js";
import { namedEndpoint, RungBase, TimerSlot } from "./rung.js";

export class SseRung extends RungBase {
  readonly name = "sse";
  #controller: AbortController | null = null;
  /** Counts stream generations so a reopened stream ignores the tail of the previous one. */
  #generation = 0;
  readonly #openTimer = new TimerSlot();
  readonly #silenceTimer = new TimerSlot();

  /** Reads the stream with fetch: needs streamed response bodies. */
  static supported(): boolean {
    return typeof ReadableStream !== "undefined";
  }

  open(): void {
    const generation = ++this.#generation;
    this.#controller?.abort();
    const controller = new AbortController();
    this.#controller = controller;
    const { options } = this.host;
    const cursors = this.host.cursors();
    const url = namedEndpoint(options, options.paths.stream);
    for (const channel of cursors.keys()) url.searchParams.append("channel", channel);
    url.searchParams.set("envelope", "1");
    if ([...cursors.keys()].some((channel) => this.host.presence(channel))) url.searchParams.set("presence", "1");
    const known = new Map<string, MessageId>();
    for (const [channel, cursor] of cursors) if (cursor !== null) known.set(channel, cursor);
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (known.size > 0) headers["last-event-id"] = encodeCursorMap(known);
    this.#openTimer.set(options.openTimeoutMs, () => this.end("no ready event within the open timeout (a buffering proxy?)"));
    this.#armSilence();
    void this.#read(url, headers, controller, generation);
  }

  add(): void {
    if (this.ended) return;
    this.open();
  }

  remove(): void {
    if (this.host.cursors().size === 0) {
      // Nothing left to carry: stop quietly (a stream with no channel would read `general`).
      this.teardown();
      return;
    }
    this.open();
  }

  async #read(url: URL, headers: Record<string, string>, controller: AbortController, generation: number): Promise<void> {
    const current = (): boolean => generation === this.#generation && !this.ended;
    try {
      const res = await this.host.options.fetch(url, { headers, signal: controller.signal, cache: "no-store" });
      if (!current()) return;
      if (!res.ok || !res.body) {
        this.end(`stream answered ${res.status}`);
        return;
      }
      const feed = sseLines((event) => current() && this.#onEvent(event));
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (!current()) {
          void reader.cancel().catch(() => undefined);
          return;
        }
        if (done) break;
        this.#armSilence();
        feed(decoder.decode(value, { stream: true }));
      }
      this.end("stream ended");
    } catch (error) {
      if (current()) this.end(`stream failed: ${(error as Error).message}`);
    }
  }

  #onEvent(event: SseEvent): void {
    switch (event.event) {
      case READY_EVENT: {
        this.opened();
        this.#openTimer.clear();
        const cursors = JSON.parse(event.data) as Record<string, MessageId>;
        for (const [channel, cursor] of Object.entries(cursors)) this.host.cursor(this, channel, cursor);
        return;
      }
      case GAP_EVENT:
        this.host.gap(this, JSON.parse(event.data) as Gap);
        return;
      case PRESENCE_EVENT: {
        const list = JSON.parse(event.data) as PresenceList;
        this.host.members(this, list.channel, list.members);
        return;
      }
      case JOIN_EVENT:
      case LEAVE_EVENT: {
        const { channel, member } = JSON.parse(event.data) as { channel: string; member: Member };
        this.host.membership(this, { type: event.event, channel, member });
        return;
      }
      case BACKFILL_EVENT:
        // No id of its own: the client gives it the channel's cursor.
        this.host.message(this, { id: "", time: 0, ...(JSON.parse(event.data) as { channel: string; data: unknown; backfilled: true }) });
        return;
      default:
        this.host.message(this, JSON.parse(event.data) as Message);
    }
  }

  /** Any byte, heartbeat comments included, proves the stream alive; silence past the timeout does not. */
  #armSilence(): void {
    this.#silenceTimer.set(this.host.options.heartbeatTimeoutMs, () => this.end("silent past the heartbeat timeout"));
  }

  protected teardown(): void {
    this.#generation++;
    this.#openTimer.clear();
    this.#silenceTimer.clear();
    this.#controller?.abort();
    this.#controller = null;
  }
}
