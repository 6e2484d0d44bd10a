/**
 * The top rung: one WebSocket carrying every subscription (join/leave frames) and publishes (acked by ref).
 * Browsers hide protocol pings, so liveness is an application ping every third of the heartbeat timeout:
 * a socket that brings nothing back within the timeout is closed and reported dead.
 */
import { errorFromWire, LadderError, type Gap, type Message, type MessageId, type ServerFrame } from "../../protocol/index.js";
import { endpoint, RungBase, TimerSlot } from "./rung.js";
import type { ResolvedClientOptions, WebSocketLike } from "../options.js";

interface PendingPublish {
  resolve(value: { id: MessageId; duplicate?: true }): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

const OPEN = 1;

export class WebSocketRung extends RungBase {
  readonly name = "websocket";
  #ws: WebSocketLike | null = null;
  #lastSeen = 0;
  #refSeq = 0;
  readonly #pending = new Map<string, PendingPublish>();
  readonly #openTimer = new TimerSlot();
  readonly #pingTimer = new TimerSlot();

  static supported(options: ResolvedClientOptions): boolean {
    return options.WebSocket !== undefined;
  }

  open(): void {
    const { options } = this.host;
    const Ctor = options.WebSocket;
    if (!Ctor) {
      this.end("no WebSocket implementation");
      return;
    }
    const url = endpoint(options, options.paths.websocket);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let ws: WebSocketLike;
    try {
      ws = new Ctor(url.href);
    } catch (error) {
      this.end(`cannot open: ${(error as Error).message}`);
      return;
    }
    this.#ws = ws;
    this.#openTimer.set(options.openTimeoutMs, () => this.end("no handshake within the open timeout"));
    ws.onopen = () => {
      this.#lastSeen = Date.now();
      const cursors = this.host.cursors();
      if (cursors.size === 0) this.#send({ type: "ping" });
      for (const channel of cursors.keys()) this.add(channel);
      this.#schedulePing();
    };
    ws.onmessage = (event) => this.#onFrame(event.data);
    ws.onclose = (event) => this.end(`closed ${event.code}${event.reason ? ` ${event.reason}` : ""}`);
    ws.onerror = () => this.end("socket error");
  }

  add(channel: string): void {
    const since = this.host.cursors().get(channel);
    const { clientId, presenceInfo } = this.host.options;
    const info = presenceInfo === null ? {} : { info: JSON.parse(presenceInfo) as unknown };
    this.#send({ type: "join", room: channel, ...(since ? { since } : {}), ...(this.host.presence(channel) ? { presence: true } : {}), client: clientId, ...info });
  }

  remove(channel: string): void {
    this.#send({ type: "leave", room: channel });
  }

  publish(channel: string, data: unknown, key: string): Promise<{ id: MessageId; duplicate?: true }> {
    return new Promise((resolve, reject) => {
      if (!this.#ws || this.#ws.readyState !== OPEN) {
        reject(new LadderError("unavailable", "connection lost (not open)"));
        return;
      }
      const ref = `p${++this.#refSeq}`;
      const timer = setTimeout(() => {
        this.#pending.delete(ref);
        reject(new LadderError("unavailable", "publish timed out"));
      }, this.host.options.publishTimeoutMs);
      this.#pending.set(ref, { resolve, reject, timer });
      this.#send({ type: "publish", room: channel, data, ref, key });
    });
  }


  #send(frame: unknown): void {
    if (this.#ws && this.#ws.readyState === OPEN) this.#ws.send(JSON.stringify(frame));
  }

  #schedulePing(): void {
    const { heartbeatTimeoutMs } = this.host.options;
    this.#pingTimer.set(Math.max(10, Math.floor(heartbeatTimeoutMs / 3)), () => {
      if (Date.now() - this.#lastSeen > heartbeatTimeoutMs) {
        this.end("no answer within the heartbeat timeout");
        return;
      }
      this.#send({ type: "ping" });
      this.#schedulePing();
    });
  }

  #onFrame(raw: unknown): void {
    if (this.ended) return;
    this.#lastSeen = Date.now();
    let frame: ServerFrame;
    try {
      frame = JSON.parse(String(raw)) as ServerFrame;
    } catch {
      return;
    }
    if (!this.delivered && (frame.type === "joined" || frame.type === "pong")) {
      this.#openTimer.clear();
      this.opened();
    }
    switch (frame.type) {
      case "message": {
        // A backfilled message has no id or time: the client gives it the channel's cursor.
        const message: Message = frame.backfilled ? { id: "", channel: frame.room, data: frame.data, time: 0, backfilled: true } : { id: frame.id, channel: frame.room, data: frame.data, time: frame.time };
        this.host.message(this, message);
        return;
      }
      case "gap": {
        const gap: Gap = { channel: frame.room, reason: frame.reason, since: frame.since, resume: frame.resume };
        if ("snapshot" in frame) (gap as { snapshot?: unknown }).snapshot = frame.snapshot;
        this.host.gap(this, gap);
        return;
      }
      case "joined":
        this.host.cursor(this, frame.room, frame.cursor);
        return;
      case "presence":
        if (frame.ref === undefined) this.host.members(this, frame.room, frame.members);
        return;
      case "join":
      case "leave":
        this.host.membership(this, { type: frame.type, channel: frame.room, member: frame.member });
        return;
      case "ack":
        // This client publishes one message per frame; a batch's ack (with `results`) is not its own.
        if ("id" in frame) this.#settle(frame.ref, (p) => p.resolve(frame.duplicate ? { id: frame.id, duplicate: true } : { id: frame.id }));
        return;
      case "error":
        this.#settle(frame.ref, (p) => p.reject(errorFromWire(frame.code, frame.message)));
        return;
      default:
        return;
    }
  }

  #settle(ref: string | number | undefined, action: (pending: PendingPublish) => void): void {
    if (ref === undefined) return;
    const pending = this.#pending.get(String(ref));
    if (!pending) return;
    this.#pending.delete(String(ref));
    clearTimeout(pending.timer);
    action(pending);
  }

  protected teardown(reason: string): void {
    this.#openTimer.clear();
    this.#pingTimer.clear();
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new LadderError("unavailable", `connection lost (${reason})`));
    }
    this.#pending.clear();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Closing a socket that is still connecting reports an error; Node's `ws` throws one nobody listens to.
      ws.onerror = () => undefined;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
    }
  }
}
