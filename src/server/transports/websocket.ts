/**
 * WebSocket: RFC 6455 upgrade at `/api/ws` (framing by the `ws` library), JSON text frames both ways.
 * Client frames: join, leave, publish (acked), ping. Server frames: message, joined, left, ack, pong,
 * gap, error. With access control, an `auth` frame authenticates or refreshes the token (answered with
 * `authed`); a token that expires unrefreshed closes the socket with 4001 "token expired". A bad frame gets an `error` frame; a peer that keeps sending bad frames is closed with 1008,
 * an oversized frame with 1009 (by `ws`). The server pings and drops a peer that stops answering.
 */
import type { Duplex } from "node:stream";
import * as wsLibrary from "ws";
import type { WebSocket } from "ws";
import type { Published } from "../../engines/engine.js";
import {
  isId,
  LadderError,
  type Gap,
  type PresenceEvent,
  type PresenceList,
  type MessageId,
  type ServerFrame,
  checkPublishKey,
} from "../../protocol/index.js";
import { presenceEnabled } from "../options.js";
import { checkClientId, identityFor, type Identity } from "../presence/member.js";
import type { Access, RequestFacts } from "../auth/access.js";
import { NO_EXPIRY, watchExpiry } from "../auth/expiry.js";
import type { Principal } from "../auth/rules.js";
import type { Delivery } from "../core/delivery.js";
import type { TransportContext } from "../core/context.js";
import { onceEither, StreamConnection } from "../core/stream-connection.js";
import { checkChannel } from "../edge/params.js";
import { asLadderError } from "../edge/refusal.js";
import { batchItem, batchItems, isBatchError, publishEach } from "../publish/batch.js";
import type { Connection } from "./transport.js";
import { PeerLiveness } from "./ws-liveness.js";

interface FrameOptions {
  readonly fin: boolean;
  readonly rsv1: boolean;
  readonly opcode: number;
  readonly mask: boolean;
  readonly readOnly: boolean;
}
/** `ws`'s framer (exported by the package, not by its type definitions). */
const Sender = (wsLibrary as unknown as { Sender: { frame(data: Buffer, options: FrameOptions): Buffer[] } }).Sender;
const TEXT_FRAME: FrameOptions = { fin: true, rsv1: false, opcode: 0x1, mask: false, readOnly: false };
/** An empty ping as `ws.ping()` frames it, for a ping that rides on a write of messages. */
const PING_FRAME = Buffer.concat(Sender.frame(Buffer.alloc(0), { fin: true, rsv1: false, opcode: 0x9, mask: false, readOnly: false }));

/** A server's (unmasked) text frame of `payload`, header and payload in one buffer. */
function textFrame(payload: Buffer): Buffer {
  const parts = Sender.frame(payload, TEXT_FRAME);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** Bad frames a peer may send before it is taken for abusive and closed with 1008. */
const MAX_BAD_FRAMES = 20;
const MAX_REF_LENGTH = 128;
/** How long a closing handshake may take before the socket is cut (a slow peer may never read it). */
const CLOSE_GRACE_MS = 5000;
/** Close code for a token that expired unrefreshed: in the 4000–4999 range applications own, so a client can tell it from 1008. */
export const CLOSE_TOKEN_EXPIRED = 4001;

/**
 * Publishes through the hub (which bounds the data); refusals may throw at once. The message itself when
 * the engine appended within the call (the memory engine), else a promise of it.
 */
export type Publisher = (channel: string, data: unknown, key?: string) => Published | Promise<Published>;

type Ref = string | number | undefined;

function readRef(value: unknown): Ref {
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "string" && value.length <= MAX_REF_LENGTH) return value;
  return undefined;
}

function readRoom(frame: Record<string, unknown>): string {
  return checkChannel(frame.room ?? frame.channel, "room");
}

/** Each socket's connection, for the listeners every socket shares. */
const connectionOf = new WeakMap<WebSocket, WebSocketConnection>();

export class WebSocketConnection extends StreamConnection implements Connection {
  readonly kind = "websocket";
  readonly #ws: WebSocket;
  readonly #socket: Duplex;
  readonly #publish: Publisher;
  readonly #access: Access;
  #principal: Principal;
  readonly #ip: string;
  #firstFrame: NodeJS.Timeout | null = null;
  #stopExpiry: () => void = NO_EXPIRY;
  readonly #liveness = new PeerLiveness(Date.now());
  #badFrames = 0;
  /**
   * No extension was negotiated (Ladder offers none), so messages can be written as shared frames. Read
   * once: ws's `extensions` getter builds a string from its extensions object on every call.
   */
  readonly #plain: boolean;

  constructor(context: TransportContext, ws: WebSocket, socket: Duplex, publish: Publisher, access: Access, principal: Principal, ip: string, identity: Identity | null) {
    super(context, identity);
    this.#access = access;
    this.#principal = principal;
    this.#ip = ip;
    this.#ws = ws;
    this.#socket = socket;
    this.#publish = publish;
    this.#plain = ws.extensions === "";
  }

  /** Listens to the socket and starts the first-frame and expiry timers. */
  start(): void {
    const ws = this.#ws;
    this.#watchExpiry();
    // A socket that never speaks only holds a slot (and, unauthenticated, probes the limits): give it a deadline.
    const firstFrameTimeoutMs = this.#access.firstFrameTimeoutMs;
    if (firstFrameTimeoutMs !== null) {
      const idle = setTimeout(() => this.#close(1008, "no frame received"), firstFrameTimeoutMs);
      idle.unref();
      this.#firstFrame = idle;
    }
    // Shared listeners that find the connection by its socket: four closures per socket (and the scope
    // they keep) were ~0.3 KB of heap per idle WebSocket (docs/performance.md, "Idle connections").
    connectionOf.set(ws, this);
    ws.on("message", WebSocketConnection.#onMessage);
    ws.on("pong", WebSocketConnection.#onPong);
    ws.on("close", WebSocketConnection.#onEnd);
    // ws closes the socket itself on protocol errors (1002, 1007, 1009); the listener keeps them from throwing.
    ws.on("error", WebSocketConnection.#onEnd);
  }

  static #onMessage(this: WebSocket, data: unknown, isBinary: boolean): void {
    const connection = connectionOf.get(this);
    if (connection) connection.#onFrame(data as Buffer, isBinary);
  }

  static #onPong(this: WebSocket): void {
    const connection = connectionOf.get(this);
    if (connection) connection.#liveness.heard(Date.now());
  }

  static #onEnd(this: WebSocket): void {
    connectionOf.get(this)?.destroy();
  }

  protected socketBytes(): number {
    return this.#ws.bufferedAmount;
  }

  protected onceDrained(callback: () => void): void {
    onceEither(this.#socket, "drain", "close", callback);
  }

  protected messageBytes(_channel: string, delivery: Delivery): Buffer | null {
    // Without an extension (Ladder offers none) a message is the same frame for every socket: it is framed
    // once and written as is. ws's sender queues only compressed or Blob frames, so none can be overtaken.
    return this.#plain ? delivery.wsWire(textFrame) : null;
  }

  protected writeQueued(bytes: Buffer): void {
    // Not once the close handshake began (a peer's close frame is answered by ws at once): no data may follow a close frame.
    if (this.#ws.readyState !== this.#ws.OPEN) return;
    const liveness = this.#liveness;
    if (!liveness.pending) {
      this.#socket.write(bytes);
      return;
    }
    // A ping due on the last tick goes out with these messages, in the same system call (ws-liveness.ts).
    this.#socket.write(Buffer.concat([bytes, PING_FRAME], bytes.length + PING_FRAME.length));
    liveness.pinged(Date.now());
  }

  protected writeMessage(_channel: string, delivery: Delivery): void {
    this.#sendRaw(delivery.wsFrame);
  }

  protected writeGap(gap: Gap): void {
    const { channel, reason, since, resume, snapshot } = gap;
    this.#send(snapshot === undefined ? { type: "gap", room: channel, reason, since, resume } : { type: "gap", room: channel, reason, since, resume, snapshot });
  }

  protected writeBackfill(channel: string, data: unknown): void {
    this.#send({ type: "message", room: channel, data, backfilled: true });
  }

  protected writePresenceList(list: PresenceList): void {
    this.#send({ type: "presence", room: list.channel, members: list.members, count: list.count });
  }

  protected writePresenceEvent(event: PresenceEvent): void {
    this.#send({ type: event.type, room: event.channel, member: event.member });
  }

  protected dropSlowConsumer(): void {
    this.#close(1008, "slow consumer: resume by id");
  }

  heartbeat(now: number): void {
    const { wsTimeoutMs, heartbeatMs } = this.context.options;
    // Only a socket without an extension writes its messages itself, so only there can a ping ride on them.
    const active = this.#plain && performance.now() - this.flushedAt < heartbeatMs / 2;
    const liveness = this.#liveness;
    const beat = liveness.beat(now, heartbeatMs, wsTimeoutMs, active);
    if (beat === "terminate") {
      this.#ws.terminate();
      this.destroy();
      return;
    }
    if (beat !== "ping" || this.#ws.readyState !== this.#ws.OPEN) return;
    // Messages the batcher holds right now take the ping with them; with none it is written alone.
    liveness.pending = true;
    this.flushQueue();
    if (!liveness.pending) return;
    this.#ws.ping();
    liveness.pinged(now);
  }

  drain(): void {
    this.#close(1001, "server shutting down");
  }

  destroy(): void {
    if (!this.finishClose()) return;
    this.#release();
    if (this.#ws.readyState === this.#ws.OPEN || this.#ws.readyState === this.#ws.CONNECTING) this.#ws.terminate();
  }

  /** A graceful end: the close handshake, cut short if the peer does not finish it in time. */
  #close(code: number, reason: string): void {
    if (!this.beginClose()) return;
    this.#release();
    // What is queued goes before the close frame, as it would have gone out had it not been held.
    this.flushQueue();
    this.#ws.close(code, reason);
    const timer = setTimeout(() => this.destroy(), CLOSE_GRACE_MS);
    timer.unref();
    this.#ws.once("close", () => clearTimeout(timer));
  }

  /** What a closing and a closed connection both let go of; a second call finds nothing left. */
  #release(): void {
    this.#stopExpiry();
    this.#clearFirstFrame();
    this.releaseSubscriptions();
  }

  #clearFirstFrame(): void {
    if (this.#firstFrame) clearTimeout(this.#firstFrame);
    this.#firstFrame = null;
  }

  /** One timer per connection: replaced on refresh, cleared on close. */
  #watchExpiry(): void {
    this.#stopExpiry();
    this.#stopExpiry = watchExpiry(this.#principal, () => this.#close(CLOSE_TOKEN_EXPIRED, "token expired"));
  }

  #authenticate(token: unknown, ref: Ref): void {
    if (typeof token !== "string" || token === "") throw new LadderError("bad_frame", "auth needs a token");
    this.#access.verify(token).then(
      (principal) => {
        if (this.state !== "open") return;
        // A refresh may extend the session, not switch users: another subject would inherit this one's rooms.
        if ((this.#principal.kind === "token" || this.#principal.kind === "hook") && principal.sub !== this.#principal.sub) {
          this.#sendError(new LadderError("forbidden", "a refreshed token must have the same sub"), ref);
          return;
        }
        this.#principal = principal;
        this.#watchExpiry();
        const { sub, expiresAt } = principal;
        this.#send(ref === undefined ? { type: "authed", sub, expiresAt } : { type: "authed", ref, sub, expiresAt });
        // The new token's grants may be narrower: rooms it no longer covers are left.
        for (const room of [...this.subscriptions.keys()]) {
          const refusal = this.#access.refusal(principal, "subscribe", room);
          if (!refusal) continue;
          this.unsubscribe(room);
          this.#sendError(refusal, ref);
          this.#send({ type: "left", room });
        }
      },
      (error: unknown) => this.#sendError(error, ref),
    );
  }

  #checkRoomLimit(room: string): void {
    if (!this.subscriptions.has(room) && this.subscriptions.size >= this.context.options.maxChannelsPerConnection) {
      throw new LadderError("too_many_channels", `at most ${this.context.options.maxChannelsPerConnection} rooms per connection`);
    }
  }

  #facts(room: string): RequestFacts {
    return { transport: "websocket", ip: this.#ip, channels: [room] };
  }

  #send(frame: ServerFrame): void {
    this.#sendRaw(JSON.stringify(frame));
  }

  #sendRaw(payload: string | Buffer): void {
    if (this.state === "closed" || this.#ws.readyState !== this.#ws.OPEN) return;
    this.flushQueue();
    this.#ws.send(payload, { binary: false });
  }

  /**
   * An ack goes out at the end of the turn (core/cork.ts), after what the socket has queued: the acks of
   * the frames a publisher's burst put in one read share one write instead of a system call each. Never
   * held longer: a publisher that awaits each ack would otherwise get one per hold.
   */
  #sendAck(text: string): void {
    if (!this.#plain) return this.#sendRaw(text);
    if (this.state === "closed" || this.#ws.readyState !== this.#ws.OPEN) return;
    this.queueAnswer(textFrame(Buffer.from(text)));
  }

  #sendError(error: unknown, ref: Ref): void {
    const { code, message } = asLadderError(error);
    this.#send(ref === undefined ? { type: "error", code, message } : { type: "error", code, message, ref });
  }

  #onFrame(data: Buffer, isBinary: boolean): void {
    this.#liveness.heard(Date.now());
    this.#clearFirstFrame();
    let ref: Ref;
    try {
      if (isBinary) throw new LadderError("bad_frame", "binary frames are not supported; send JSON text");
      let frame: unknown;
      try {
        frame = JSON.parse(data.toString("utf8"));
      } catch {
        throw new LadderError("bad_json", "frame is not valid JSON");
      }
      if (typeof frame !== "object" || frame === null || Array.isArray(frame)) {
        throw new LadderError("bad_frame", "frame must be a JSON object with a type");
      }
      const fields = frame as Record<string, unknown>;
      ref = readRef(fields.ref);
      this.#handle(fields, ref);
    } catch (error) {
      this.#reject(error, ref);
    }
  }

  #reject(error: unknown, ref: Ref): void {
    this.#sendError(error, ref);
    // Being throttled is not misbehaving: a busy publisher is told to slow down, not closed for it.
    if (error instanceof LadderError && error.code === "rate_limited") return;
    if (++this.#badFrames > MAX_BAD_FRAMES) this.#close(1008, "too many bad frames");
  }

  /** One publish: the caller's right to the room and its rate, then the hub (which bounds the data). */
  #publishOne(room: string, data: unknown, key?: string): Published | Promise<Published> {
    const viaHook = this.#access.publishNeedsHook(this.#principal, room);
    this.#access.takePublish(this.#principal, this.#ip);
    // The hub's own refusals (too large, engine down) answer this publish; they do not count as bad frames.
    if (!viaHook) {
      try {
        return this.#publish(room, data, key);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    // Under a `hook` rule the app decides, and may replace the data, before the hub publishes.
    return this.#access.askPublishHook(this.#principal, room, data, this.#facts(room)).then((checked) => this.#publish(room, checked, key));
  }

  /**
   * `{"type":"publish","room"?,"messages":[{"room"?,"data"},…],"ref"?}` → one `{"type":"ack","ref","results":[…]}`
   * with `{"id","room"}` or `{"error":{"code","message"}}` per message, in order. A frame over the batch
   * bounds is refused whole with an error frame.
   */
  #publishBatch(frame: Record<string, unknown>, ref: Ref): void {
    const items = batchItems(frame.messages, this.context.options.maxBatchMessages);
    const fallback = frame.room ?? frame.channel;
    publishEach(items, (item) => {
      const message = batchItem(item);
      const room = readRoom({ room: message.room ?? message.channel ?? fallback });
      return this.#publishOne(room, message.data);
    }).then((outcomes) => {
      const results = outcomes.map((outcome) => (isBatchError(outcome) ? outcome : { id: outcome.id, room: outcome.channel }));
      this.#sendAck(JSON.stringify(ref === undefined ? { type: "ack", results } : { type: "ack", ref, results }));
    });
  }

  #handle(frame: Record<string, unknown>, ref: Ref): void {
    switch (frame.type) {
      case "join": {
        const room = readRoom(frame);
        const since = frame.since;
        if (since !== undefined && since !== null && (typeof since !== "string" || !isId(since))) {
          throw new LadderError("bad_since", "since must be a message id such as 1732540000000-0, or 0");
        }
        this.#checkRoomLimit(room);
        if (frame.client !== undefined && this.context.presence) {
          const info = frame.info === undefined ? null : JSON.stringify(frame.info);
          this.setIdentity(identityFor(this.#principal, checkClientId(frame.client), info, this.context.options.presence?.anonymousInfo === true));
        }
        // After the frame's own checks, so a bad frame never costs a call to the app's subscribe hook.
        const checking = this.#access.checkSubscribe(this.#principal, room, this.#facts(room));
        const join = (): Promise<MessageId> => {
          // Joins that waited on the hook together must not pass the limit together.
          if (checking) this.#checkRoomLimit(room);
          return this.subscribe(room, typeof since === "string" ? since : null);
        };
        // A room without presence is still joined; the presence part alone is refused, after `joined`.
        const presence = frame.presence === true;
        // The app's subscribe hook answers in its own time; other frames go on meanwhile.
        (checking ? checking.then(() => (this.state === "open" ? join() : Promise.reject(new LadderError("unavailable", "closed")))) : join()).then(
          (cursor) => {
            if (!this.subscriptions.has(room)) return;
            this.#send({ type: "joined", room, cursor });
            if (presence) this.watchPresence(room).catch((error: unknown) => this.#sendError(error, ref));
          },
          (error: unknown) => {
            if (this.state === "open") this.#sendError(error instanceof LadderError ? error : new LadderError("unavailable", "could not join: engine unavailable"), ref);
          },
        );
        return;
      }
      case "leave": {
        const room = readRoom(frame);
        this.unsubscribe(room);
        this.#send({ type: "left", room });
        return;
      }
      case "publish": {
        if (!("data" in frame) && "messages" in frame) return this.#publishBatch(frame, ref);
        const room = readRoom(frame);
        if (!("data" in frame)) throw new LadderError("bad_frame", "publish needs data");
        const key = checkPublishKey(frame.key, "bad_frame");
        const published = this.#publishOne(room, frame.data, key);
        const ack = ({ id, duplicate }: Published): void =>
          this.#sendAck(`{"type":"ack",${ref === undefined ? "" : `"ref":${JSON.stringify(ref)},`}"id":${JSON.stringify(id)},"room":"${room}"${duplicate ? ',"duplicate":true' : ""}}`);
        if (published instanceof Promise) published.then(ack, (error: unknown) => this.#sendError(error, ref));
        else ack(published);
        return;
      }
      case "presence": {
        const room = readRoom(frame);
        const presence = this.context.presence;
        if (!presence || !presenceEnabled(this.context.options, room)) throw new LadderError("not_found", `presence is not enabled for room ${room}`);
        const checking = this.#access.checkSubscribe(this.#principal, room, this.#facts(room));
        (checking ?? Promise.resolve()).then(() => presence.list(room, this.context.options.presence!.maxMembers)).then(
          ({ members, count }) => this.#send(ref === undefined ? { type: "presence", room, members, count } : { type: "presence", room, members, count, ref }),
          (error: unknown) => this.#sendError(error, ref),
        );
        return;
      }
      case "auth":
        this.#authenticate(frame.token, ref);
        return;
      case "ping":
        this.#send(ref === undefined ? { type: "pong", time: Date.now() } : { type: "pong", ref, time: Date.now() });
        return;
      default:
        throw new LadderError("bad_frame", "type must be join, leave, publish, presence, auth or ping");
    }
  }
}
