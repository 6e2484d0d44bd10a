/**
 * The client's state machine and its one reconnection policy. States: disconnected → connecting →
 * connected → (disconnected …) → closed. Every rung reports `opened` and `closed` here, and only here is
 * it decided whether to retry the same rung after a backoff, step down the ladder (a rung that failed
 * before it ever delivered), or climb back up (a background probe that takes over once it works).
 * Cursors live here too, so a message is handed to the user once whichever rung brought it.
 */
import { compareIds, errorFromWire, LadderError, type BatchResult, type Gap, type Member, type Message, type MessageId, type PresenceEvent, type PresenceList } from "../protocol/index.js";
import { backoffDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { Outbox, type Outgoing, type PublishResult } from "./outbox.js";
import { resolveClientOptions, type ClientOptions, type ClientState, type ResolvedClientOptions, type TransportName } from "./options.js";
import { HttpPollRung } from "./rungs/http-poll.js";
import { reachable, TimerSlot, type Rung, type RungHost } from "./rungs/rung.js";
import { SseRung } from "./rungs/sse.js";
import { WebSocketRung } from "./rungs/websocket.js";
import { Subscription } from "./subscription.js";

interface RungClass<N extends TransportName> {
  supported(options: ResolvedClientOptions): boolean;
  new (host: RungHost, name: N): Rung;
}

/** Each rung: whether this environment can run it, and how to make one. */
const RUNGS: { readonly [N in TransportName]: RungClass<N> } = {
  websocket: WebSocketRung,
  sse: SseRung,
  "long-poll": HttpPollRung,
  poll: HttpPollRung,
};

/** Failures before delivering, with the hub reachable, that mark a rung as blocked. */
const BLOCKED_AFTER = 2;

export interface ClientEvents {
  state: { readonly oldState: ClientState; readonly newState: ClientState };
  /** The rung in use changed: which, and why. */
  transport: { readonly transport: TransportName; readonly reason: string };
  /** A rung ended or failed; informational, the client handles it. */
  error: { readonly transport: TransportName; readonly reason: string };
}

export interface SubscribeOptions {
  /** Resume after this id (a cursor saved from an earlier message). Without it the subscription starts live. */
  readonly since?: MessageId;
  /** Keep the channel's members (`sub.presence()`) and report joins and leaves (a presence channel of the hub). */
  readonly presence?: boolean;
}

interface ChannelState {
  cursor: MessageId | null;
  readonly subscriptions: Set<Subscription<never>>;
  presence: boolean;
  /** Member key → member, oldest first by insertion. */
  members: Map<string, Member>;
}

const keyOf = (m: Member): string => `${m.user ?? ""}/${m.client}`;

/** A channel map: channel name → the type of its messages' data. */
export type ChannelMap = Record<string, unknown>;
/** Channels a map names (none for the default, open map). */
type Named<M> = string extends keyof M ? never : keyof M & string;
/** The data type of channel `C`: the map's when it names `C`, else `T`. */
export type DataOf<M, C extends string, T> = C extends Named<M> ? M[C] : T;

export class LadderClient<M extends ChannelMap = ChannelMap> extends Emitter<ClientEvents> {
  readonly options: ResolvedClientOptions;
  #state: ClientState = "disconnected";
  readonly #channels = new Map<string, ChannelState>();
  #rung: Rung | null = null;
  #probe: Rung | null = null;
  /** Rungs that failed before delivering, remembered for the client's lifetime (the page session). */
  readonly #failed = new Set<TransportName>();
  /** Failures before delivering while the hub was reachable, per rung, since it last worked. */
  readonly #strikes = new Map<TransportName, number>();
  #attempt = 0;
  #probeAttempt = 0;
  #reason = "initial";
  #announced: TransportName | null = null;
  readonly #retryTimer = new TimerSlot();
  readonly #probeTimer = new TimerSlot();
  readonly #presenceTimer = new TimerSlot();
  readonly #unlisten: Array<() => void> = [];
  /** What rungs see of the client: kept off the public API. */
  readonly #host: RungHost;
  readonly #outbox: Outbox;

  constructor(options: ClientOptions = {}) {
    super();
    this.options = resolveClientOptions(options);
    this.#host = {
      options: this.options,
      cursors: () => this.#cursors(),
      opened: (rung) => this.#opened(rung),
      message: (rung, message) => this.#message(rung, message),
      gap: (rung, gap) => this.#gap(rung, gap),
      cursor: (rung, channel, cursor) => this.#learnCursor(rung, channel, cursor),
      closed: (rung, info) => this.#closed(rung, info),
      presence: (channel) => this.#channels.get(channel)?.presence === true,
      members: (rung, channel, members) => this.#current(rung) && this.#setMembers(channel, members),
      membership: (rung, event) => this.#current(rung) && this.#membership(event),
    };
    this.#outbox = new Outbox({
      queue: this.options.publishQueue,
      send: (entry) => this.#send(entry),
      pipelined: () => this.#rung?.publish !== undefined,
      retryDelay: (attempt) => backoffDelay(attempt, this.options.backoff, this.options.random),
    });
    this.#listenToEnvironment();
  }

  get state(): ClientState {
    return this.#state;
  }

  /** The rung in use, or null when none is open. */
  get transport(): TransportName | null {
    return this.#rung?.name ?? null;
  }

  /** Rungs that failed to open or were cut before delivering, and are skipped until a probe succeeds. */
  get failedTransports(): readonly TransportName[] {
    return [...this.#failed];
  }

  /**
   * The channel's messages as `Subscription<T>`: `T` is the channel map's type for a channel it names
   * (`createClient<{ prices: Price }>()`), else the type argument (`subscribe<Price>("prices")`), else unknown.
   */
  subscribe<T = unknown, C extends string = string>(channel: C, options: SubscribeOptions = {}): Subscription<DataOf<M, C, T>> {
    if (this.#state === "closed") throw new Error("client is closed");
    const subscription = new Subscription<DataOf<M, C, T>>(
      channel,
      (s) => this.#leave(s),
      () => [...(this.#channels.get(channel)?.members.values() ?? [])],
    );
    let state = this.#channels.get(channel);
    const isNew = !state;
    if (!state) {
      state = { cursor: options.since ?? null, subscriptions: new Set(), presence: false, members: new Map() };
      this.#channels.set(channel, state);
    }
    state.subscriptions.add(subscription);
    // A channel that starts watching its members on a running rung re-joins: the rung asks for presence then.
    const watch = options.presence === true && !state.presence;
    if (watch) state.presence = true;
    if (isNew || watch) {
      this.#rung?.add(channel);
      this.#probe?.add(channel);
      if (watch && !isNew) this.#readMembers(channel);
    }
    if (!this.#rung && !this.#retryTimer.pending) this.#connect();
    return subscription;
  }

  /**
   * Publishes over the WebSocket when that is the rung in use, over HTTP otherwise, and resolves with the
   * hub's id once the hub has it. While disconnected the publish waits in a bounded queue (`publishQueue`)
   * and goes out in order on the next rung; one whose outcome a dropped connection left unknown is sent
   * again with the same idempotency key, so the hub's log holds it once. Rejects with a {@link LadderError}:
   * the hub's refusal (`code`, `message`, over HTTP `retryAfter` from a 429 or 503), or `queue_full`.
   */
  publish<T = unknown, C extends string = string>(channel: C, data: DataOf<M, C, T>): Promise<PublishResult> {
    return this.#outbox.push(channel, data);
  }

  /**
   * Publishes many messages in one HTTP request. Resolves with one result per message, in order: its id,
   * or its own error (the others are published all the same); rejects only when the whole batch is refused.
   * (Not queued or retried: a batch is for a backend that has the hub in reach.)
   */
  async publishBatch(messages: readonly { readonly channel?: string; readonly data: unknown }[]): Promise<BatchResult[]> {
    return (await this.#post<{ results: BatchResult[] }>({ messages })).results;
  }

  #send({ channel, data, key }: Outgoing): Promise<{ id: MessageId; duplicate?: true }> | null {
    const rung = this.#state === "connected" ? this.#rung : null;
    if (rung?.publish) return rung.publish(channel, data, key);
    // Without a WebSocket, over HTTP even while no rung is up (a subscription the hub refuses must not hold
    // publishes back): an attempt that does not reach the hub is retried with the same key after a backoff.
    return this.#post({ channel, data, key });
  }

  async #post<T = { id: MessageId; duplicate?: true }>(payload: unknown): Promise<T> {
    const res = await this.options.fetch(new URL(this.options.paths.messages, this.options.base), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(payload),
      signal: AbortSignal.timeout(this.options.publishTimeoutMs),
    });
    const body = (await res.json().catch(() => null)) as (T & { error?: { code?: unknown; message?: unknown } }) | null;
    if (res.ok && body) return body;
    const wait = Number(res.headers.get("retry-after") ?? NaN);
    const error = body?.error ?? { code: res.status >= 500 || res.ok ? "unavailable" : "bad_request", message: `publish failed with ${res.status}` };
    throw errorFromWire(error.code, error.message, Number.isFinite(wait) ? wait : undefined);
  }

  /** The last id handed to the user for a channel (save it to resume after a page reload). */
  cursor(channel: string): MessageId | null {
    return this.#channels.get(channel)?.cursor ?? null;
  }

  /** Opens a connection now if none is open (subscribe does this by itself). */
  connect(): void {
    if (this.#state === "closed" || this.#rung) return;
    this.#retryTimer.clear();
    this.#connect();
  }

  /** Releases everything: rungs, timers, listeners. */
  close(): void {
    if (this.#state === "closed") return;
    this.#retryTimer.clear();
    this.#probeTimer.clear();
    this.#presenceTimer.clear();
    this.#rung?.close();
    this.#probe?.close();
    this.#rung = this.#probe = null;
    for (const unlisten of this.#unlisten.splice(0)) unlisten();
    for (const state of this.#channels.values()) for (const s of state.subscriptions) s.unsubscribe();
    this.#channels.clear();
    this.#outbox.close(new LadderError("unavailable", "client is closed"));
    this.#setState("closed");
    this.removeAllListeners();
  }

  // ---- what rungs report ----

  #cursors(): ReadonlyMap<string, MessageId | null> {
    const map = new Map<string, MessageId | null>();
    for (const [channel, state] of this.#channels) map.set(channel, state.cursor);
    return map;
  }

  #opened(rung: Rung): void {
    if (rung === this.#probe) {
      this.#takeOver(rung);
      return;
    }
    if (rung !== this.#rung) return;
    this.#attempt = 0;
    this.#strikes.delete(rung.name);
    this.#setState("connected");
    this.#scheduleProbe();
    this.#pollMembers();
    this.#outbox.drain();
  }

  #current(rung: Rung): boolean {
    return rung === this.#rung || rung === this.#probe;
  }

  /**
   * A whole member list (after every (re)connect, and on polling rungs every `presencePollMs`): what
   * changed since the last one the client knew is reported as joins and leaves, so a reconnect shows
   * exactly the difference, never a leave and a join for someone who stayed.
   */
  #setMembers(channel: string, members: readonly Member[]): void {
    const state = this.#channels.get(channel);
    if (!state?.presence) return;
    const next = new Map(members.map((m) => [keyOf(m), m]));
    const old = state.members;
    state.members = next;
    for (const [key, member] of old) if (!next.has(key)) this.#tell(state, "leave", member);
    for (const [key, member] of next) if (!old.has(key)) this.#tell(state, "join", member);
  }

  #membership({ type, channel, member }: PresenceEvent): void {
    const state = this.#channels.get(channel);
    if (!state?.presence) return;
    const key = keyOf(member);
    if ((type === "join") === state.members.has(key)) return;
    if (type === "join") state.members.set(key, member);
    else state.members.delete(key);
    this.#tell(state, type, member);
  }

  #tell(state: ChannelState, type: "join" | "leave", member: Member): void {
    for (const subscription of state.subscriptions) subscription.signalMember(type, member);
  }

  /** Polling rungs carry no presence events: the lists are read over HTTP while one is in use. */
  #pollMembers(): void {
    const name = this.#rung?.name;
    if (this.#state !== "connected" || (name !== "poll" && name !== "long-poll")) return this.#presenceTimer.clear();
    for (const [channel, state] of this.#channels) if (state.presence) this.#readMembers(channel);
    this.#presenceTimer.set(this.options.presencePollMs, () => this.#pollMembers());
  }

  #readMembers(channel: string): void {
    const url = new URL(this.options.paths.presence, this.options.base);
    url.searchParams.set("channel", channel);
    void this.options
      .fetch(url, { cache: "no-store" })
      .then((res) => (res.ok ? (res.json() as Promise<PresenceList>) : null))
      .then((list) => list && this.#setMembers(channel, list.members))
      .catch(() => undefined);
  }

  #message(rung: Rung, message: Message): void {
    if (!this.#current(rung)) return;
    const state = this.#channels.get(message.channel);
    if (!state) return;
    if (message.backfilled) {
      // It fills a gap before the history that follows, and moves no cursor: its id is the cursor it came at,
      // so resuming from it asks again. Only the current rung's count: a probe would repeat them.
      if (rung === this.#rung) for (const subscription of state.subscriptions) subscription.deliver({ ...message, id: state.cursor ?? "0", time: Date.now() });
      return;
    }
    if (state.cursor !== null && compareIds(message.id, state.cursor) <= 0) return;
    state.cursor = message.id;
    for (const subscription of state.subscriptions) subscription.deliver(message);
  }

  #gap(rung: Rung, gap: Gap): void {
    if (!this.#current(rung)) return;
    const state = this.#channels.get(gap.channel);
    if (!state) return;
    if (state.cursor !== null && compareIds(gap.resume, state.cursor) <= 0) return;
    state.cursor = gap.resume;
    for (const subscription of state.subscriptions) subscription.signalGap(gap);
  }

  #learnCursor(rung: Rung, channel: string, cursor: MessageId): void {
    if (!this.#current(rung)) return;
    const state = this.#channels.get(channel);
    // Only a subscription that started live learns its cursor from the server; afterwards only delivered
    // messages and gaps move it, so nothing between is skipped.
    if (state && state.cursor === null) state.cursor = cursor;
  }

  #closed(rung: Rung, info: { readonly delivered: boolean; readonly reason: string }): void {
    this.emit("error", { transport: rung.name, reason: info.reason });
    if (rung === this.#probe) {
      this.#probe = null;
      this.#probeAttempt++;
      this.#scheduleProbe();
      return;
    }
    if (rung !== this.#rung) return;
    this.#rung = null;
    this.#probe?.close();
    this.#probe = null;
    this.#probeTimer.clear();
    this.#setState("disconnected");
    if (info.delivered) {
      this.#reason = `reconnect: ${info.reason}`;
      this.#retryAfterBackoff();
      return;
    }
    // It failed before it ever worked. Blocked (a proxy refusing the upgrade, a network buffering SSE) or is
    // the hub simply unreachable? Only a hub that answers a plain request proves the rung itself is blocked.
    void reachable(this.options).then((answered) => {
      if (this.#state === "closed" || this.#rung) return;
      if (!answered) {
        this.#reason = `reconnect: ${info.reason}`;
        this.#retryAfterBackoff();
        return;
      }
      // Twice in a row with the hub answering: blocked, not a blip.
      const strikes = (this.#strikes.get(rung.name) ?? 0) + 1;
      this.#strikes.set(rung.name, strikes);
      if (strikes < BLOCKED_AFTER) {
        this.#reason = `retry: ${info.reason}`;
        this.#connect();
        return;
      }
      this.#strikes.delete(rung.name);
      this.#failed.add(rung.name);
      this.#reason = `fallback: ${rung.name} ${info.reason}`;
      if (this.#available().length > 0) {
        this.#connect();
        return;
      }
      // Every rung is blocked: start over from the top, with backoff.
      this.#failed.clear();
      this.#retryAfterBackoff();
    });
  }

  // ---- the policy ----

  #available(): TransportName[] {
    return this.options.ladder.filter((name) => !this.#failed.has(name) && this.#supported(name));
  }

  #supported(name: TransportName): boolean {
    return RUNGS[name].supported(this.options);
  }

  #create(name: TransportName): Rung {
    return new (RUNGS[name] as RungClass<TransportName>)(this.#host, name);
  }

  #connect(): void {
    if (this.#state === "closed") return;
    const name = this.#available()[0] ?? this.options.ladder.find((n) => this.#supported(n));
    if (!name) throw new TypeError(`none of ${this.options.ladder.join(", ")} works here (websocket needs options.WebSocket)`);
    this.#setState("connecting");
    const rung = this.#create(name);
    this.#rung = rung;
    this.#announce(name, this.#reason);
    rung.open();
  }

  #retryAfterBackoff(): void {
    const delay = backoffDelay(this.#attempt++, this.options.backoff, this.options.random);
    this.#retryTimer.set(delay, () => this.#connect());
  }

  /** Reconnect at once instead of waiting out the backoff (the network came back, the page is visible). */
  #hurry(): void {
    if (this.#state === "disconnected" && this.#retryTimer.pending) {
      this.#retryTimer.clear();
      this.#attempt = 0;
      this.#connect();
    }
  }

  /** Higher rungs that failed are retried in the background, with their own backoff. */
  #scheduleProbe(): void {
    if (this.#state !== "connected" || this.#probe || this.#probeTimer.pending || !this.#rung) return;
    const current = this.options.ladder.indexOf(this.#rung.name);
    const higher = this.options.ladder.slice(0, current).filter((name) => this.#supported(name));
    if (higher.length === 0) return;
    // Each higher rung gets its turn, so a client on long-poll behind a proxy that refuses upgrades still
    // climbs back to SSE.
    const target = higher[this.#probeAttempt % higher.length]!;
    const delay = backoffDelay(this.#probeAttempt, this.options.probe, this.options.random) + this.options.probe.minMs;
    this.#probeTimer.set(delay, () => {
      if (this.#state !== "connected" || this.#probe) return;
      const probe = this.#create(target);
      this.#probe = probe;
      probe.open();
    });
  }

  #takeOver(probe: Rung): void {
    const old = this.#rung;
    this.#probe = null;
    this.#rung = probe;
    this.#failed.delete(probe.name);
    this.#probeAttempt = 0;
    // Both rungs resumed from the same cursors; whatever the old one still brings is dropped as seen.
    old?.close();
    this.#announce(probe.name, `upgrade from ${old?.name ?? "none"}`);
    this.#setState("connected");
    this.#scheduleProbe();
    this.#pollMembers();
    this.#outbox.drain();
  }

  #leave(subscription: Subscription<never>): void {
    const state = this.#channels.get(subscription.channel);
    if (!state || !state.subscriptions.delete(subscription) || state.subscriptions.size > 0) return;
    this.#channels.delete(subscription.channel);
    this.#rung?.remove(subscription.channel);
    this.#probe?.remove(subscription.channel);
  }

  /** The `transport` event says when the rung changes; retries on the same rung are `error` events. */
  #announce(transport: TransportName, reason: string): void {
    if (transport === this.#announced) return;
    this.#announced = transport;
    this.emit("transport", { transport, reason });
  }

  #setState(newState: ClientState): void {
    const oldState = this.#state;
    if (oldState === newState) return;
    this.#state = newState;
    this.emit("state", { oldState, newState });
  }

  #listenToEnvironment(): void {
    const target = globalThis as { addEventListener?: (t: string, f: () => void) => void; removeEventListener?: (t: string, f: () => void) => void };
    const doc = (globalThis as { document?: { visibilityState?: string; addEventListener(t: string, f: () => void): void; removeEventListener(t: string, f: () => void): void } }).document;
    if (typeof target.addEventListener === "function" && typeof target.removeEventListener === "function") {
      const online = (): void => this.#hurry();
      target.addEventListener("online", online);
      this.#unlisten.push(() => target.removeEventListener!("online", online));
    }
    if (doc) {
      const visible = (): void => {
        if (doc.visibilityState === "visible") this.#hurry();
      };
      doc.addEventListener("visibilitychange", visible);
      this.#unlisten.push(() => doc.removeEventListener("visibilitychange", visible));
    }
  }
}

/** A client; `M` types every channel it names (`createClient<{ prices: Price; chat: ChatLine }>()`). */
export function createClient<M extends ChannelMap = ChannelMap>(options: ClientOptions = {}): LadderClient<M> {
  return new LadderClient<M>(options);
}
