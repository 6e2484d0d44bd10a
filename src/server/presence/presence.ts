/**
 * Presence over many nodes without shared storage. Each node is the only authority for its own members
 * and announces changes on the bus; reading a list asks every node (scatter-gather) and merges the
 * answers; a node that watches a channel for live join/leave events keeps a view of it (who is in, on
 * which nodes) from one read plus the announcements after it.
 *
 * - **Reconnects do not flap.** A member stays while any connection of its client is subscribed, on any
 *   node, and leaves only `leaveDelayMs` after its last one ended: a client that comes back within that
 *   time — on this node or another — produces no leave and no join.
 * - **Crashed nodes are cleaned up.** Every node sends a heartbeat every `heartbeatMs`; a node not heard
 *   from for `nodeTimeoutMs` is dead and its members leave every view (with leave events). A node that
 *   closes gracefully says so, and its members leave after `leaveDelayMs` unless they reappear elsewhere.
 * - **Lost announcements heal.** A watcher re-reads its channel every `resyncMs` and sends the joins and
 *   leaves the difference implies (a broker outage loses announcements; it cannot corrupt a view for ever).
 * - **Member webhooks** (`onMember`): every node keeps a ledger of all channels' members from one more
 *   topic, `members`, and one node reports each cluster-wide first join and last leave (ledger.ts).
 */
import type { Logger } from "pino";
import { LadderError, type Member, type PresenceEvent } from "../../protocol/index.js";
import { subjectToken } from "../../engines/nats.js";
import type { PresenceBus } from "./bus.js";
import { MemberLedger, type LedgerChange, type MemberReporter } from "./ledger.js";

export interface PresenceOptions {
  /** The bus, or its connection still being made: announcements wait for it. */
  readonly bus: PresenceBus | Promise<PresenceBus>;
  /** Leave this long after a client's last subscription ends (reconnect grace). Default 5000 ms. */
  readonly leaveDelayMs?: number;
  /** Heartbeat period. Default 3000 ms. */
  readonly heartbeatMs?: number;
  /** A node silent this long is dead: its members are dropped. Default 15000 ms. */
  readonly nodeTimeoutMs?: number;
  /** How long a read waits for every node's answer. Default 300 ms. */
  readonly gatherMs?: number;
  /** How often a watched channel is re-read to heal lost announcements. Default 30000 ms. */
  readonly resyncMs?: number;
  readonly logger?: Pick<Logger, "warn" | "debug">;
  /** Told of each member's first connection and last leave over all nodes, by one node (ledger.ts). */
  readonly onMember?: MemberReporter;
}

export type PresenceListener = (event: PresenceEvent) => void;

type Wire =
  | { readonly op: "add"; readonly node: string; readonly member: Member }
  | { readonly op: "remove"; readonly node: string; readonly key: string }
  /** `ledger`: the node keeps a member ledger, so it may be the one that reports (ledger.ts). */
  | { readonly op: "alive"; readonly node: string; readonly ledger?: true }
  | { readonly op: "bye"; readonly node: string }
  | { readonly op: "list"; readonly node: string; readonly req: string; readonly channel: string; readonly keysOnly: boolean; readonly all?: boolean }
  | {
      readonly op: "reply";
      readonly node: string;
      readonly req: string;
      readonly members?: readonly Member[];
      readonly keys?: readonly string[];
      /** To a list of every channel (`all`): each channel this node has members in, with them. */
      readonly all?: ReadonlyArray<readonly [string, readonly Member[]]>;
    };

interface LocalMember {
  readonly member: Member;
  conns: number;
  timer: NodeJS.Timeout | null;
}

interface View {
  /** Member key → the nodes it is on, with what each node says of it. */
  readonly entries: Map<string, Map<string, Member>>;
  readonly listeners: Set<PresenceListener>;
  ready: Promise<void>;
  stop: () => void;
}

interface Gather {
  readonly replies: Map<string, Wire & { op: "reply" }>;
  readonly done: () => void;
}

/** Members of one client of one user are one member; the user is part of the key so ids cannot be borrowed across users. */
export function memberKey(member: Pick<Member, "client" | "user">): string {
  return member.user === undefined ? `a:${member.client}` : `u:${member.user}:${member.client}`;
}

export class Presence {
  readonly node = `n${Math.random().toString(36).slice(2, 10)}`;
  readonly #busReady: Promise<PresenceBus>;
  #bus: PresenceBus | null = null;
  /** Announcements made before the bus was connected, sent once it is. */
  #queued: Array<[string, string]> | null = [];
  readonly #leaveDelayMs: number;
  readonly #heartbeatMs: number;
  readonly #nodeTimeoutMs: number;
  readonly #gatherMs: number;
  readonly #resyncMs: number;
  readonly #logger: Pick<Logger, "warn" | "debug"> | undefined;
  readonly #local = new Map<string, Map<string, LocalMember>>();
  readonly #views = new Map<string, View>();
  readonly #nodes = new Map<string, number>();
  readonly #gathers = new Map<string, Gather>();
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #unsubscribe: Array<() => void> = [];
  readonly #started: Promise<void>;
  /** When this node first heard the bus: until a heartbeat period has passed, it may not know every node yet. */
  #listeningSince = Number.POSITIVE_INFINITY;
  readonly #ledger: MemberLedger | null;
  /** Nodes that said they keep a ledger: only they can be responsible for reports. */
  readonly #ledgerNodes = new Set<string>();
  #closed = false;

  constructor(options: PresenceOptions) {
    this.#busReady = Promise.resolve(options.bus);
    this.#leaveDelayMs = options.leaveDelayMs ?? 5000;
    this.#heartbeatMs = options.heartbeatMs ?? 3000;
    this.#nodeTimeoutMs = options.nodeTimeoutMs ?? 15_000;
    this.#gatherMs = options.gatherMs ?? 300;
    this.#resyncMs = options.resyncMs ?? 30_000;
    this.#logger = options.logger;
    this.#nodes.set(this.node, Date.now());
    this.#ledger = options.onMember ? new MemberLedger(this.node, memberKey, options.onMember, () => this.#responsible()) : null;
    this.#started = this.#start();
    this.#started.catch((error: unknown) => this.#logger?.warn({ err: error }, "presence: could not subscribe to the bus"));
  }

  /** Resolves once this node hears the bus (tests and start-up). */
  whenStarted(): Promise<void> {
    return this.#started;
  }

  async #start(): Promise<void> {
    const bus = await this.#busReady;
    const handle = (payload: string): void => this.#onWire(payload);
    this.#unsubscribe.push(await bus.subscribe("nodes", handle), await bus.subscribe("list", handle), await bus.subscribe(`reply.${this.node}`, handle));
    // Subscribed before this node's own queued announcements go out, so the ledger hears every one of them.
    if (this.#ledger) this.#unsubscribe.push(await bus.subscribe("members", (payload) => this.#onLedgerWire(payload)));
    this.#bus = bus;
    this.#listeningSince = Date.now();
    for (const [topic, payload] of this.#queued ?? []) bus.publish(topic, payload);
    this.#queued = null;
    if (this.#closed) return this.#stopSubscriptions();
    this.#send("nodes", this.#alive());
    const heartbeat = setInterval(() => this.#beat(), this.#heartbeatMs);
    heartbeat.unref();
    const resync = setInterval(() => this.#resyncAll(), this.#resyncMs);
    resync.unref();
    this.#timers.push(heartbeat, resync);
    if (this.#ledger) void this.#syncLedger(false);
  }

  /** A local subscription is in the channel; the function ends it. Idempotent. */
  join(channel: string, member: Member): () => void {
    let members = this.#local.get(channel);
    if (!members) this.#local.set(channel, (members = new Map()));
    const key = memberKey(member);
    let entry = members.get(key);
    if (entry) {
      entry.conns++;
      if (entry.timer) clearTimeout(entry.timer);
      entry.timer = null;
    } else {
      entry = { member, conns: 1, timer: null };
      members.set(key, entry);
      this.#send(`ev.${subjectToken(channel)}`, { op: "add", node: this.node, member });
      if (this.#ledger) this.#sendLedger({ op: "add", node: this.node, channel, member });
    }
    const own = entry;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--own.conns > 0) return;
      own.timer = setTimeout(() => {
        own.timer = null;
        if (own.conns > 0 || this.#local.get(channel)?.get(key) !== own) return;
        members.delete(key);
        if (members.size === 0 && this.#local.get(channel) === members) this.#local.delete(channel);
        this.#send(`ev.${subjectToken(channel)}`, { op: "remove", node: this.node, key });
        if (this.#ledger) this.#sendLedger({ op: "remove", node: this.node, channel, key });
      }, this.#leaveDelayMs);
      own.timer.unref();
    };
  }

  /** Every member of the channel on every node (deduplicated, earliest join first), at most `limit`. */
  async list(channel: string, limit: number): Promise<{ members: Member[]; count: number }> {
    const replies = await this.#gather(channel, false);
    const merged = new Map<string, Member>();
    for (const reply of replies.values()) {
      for (const member of reply.members ?? []) {
        const key = memberKey(member);
        const seen = merged.get(key);
        if (!seen || member.since < seen.since) merged.set(key, member);
      }
    }
    const members = [...merged.values()].sort((a, b) => a.since - b.since || (a.client < b.client ? -1 : 1));
    return { members: members.slice(0, limit), count: members.length };
  }

  /** How many members the channel has: each node sends only its keys. */
  async count(channel: string): Promise<number> {
    const keys = new Set<string>();
    for (const reply of (await this.#gather(channel, true)).values()) for (const key of reply.keys ?? []) keys.add(key);
    return keys.size;
  }

  /** Live joins and leaves of a channel; resolves once the view is read, with the members at that moment. */
  async watch(channel: string, listener: PresenceListener): Promise<{ members: Member[]; stop: () => void }> {
    let view = this.#views.get(channel);
    if (!view) {
      view = this.#openView(channel);
      this.#views.set(channel, view);
    }
    const own = view;
    await own.ready;
    own.listeners.add(listener);
    let stopped = false;
    return {
      members: viewMembers(own),
      stop: () => {
        if (stopped) return;
        stopped = true;
        own.listeners.delete(listener);
        if (own.listeners.size === 0 && this.#views.get(channel) === own) {
          this.#views.delete(channel);
          own.stop();
        }
      },
    };
  }

  /** Stops announcing: the other nodes drop this node's members after the leave delay, unless they reappear. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearInterval(timer);
    for (const members of this.#local.values()) for (const entry of members.values()) if (entry.timer) clearTimeout(entry.timer);
    this.#send("nodes", { op: "bye", node: this.node });
    this.#local.clear();
    for (const view of this.#views.values()) view.stop();
    this.#views.clear();
    for (const gather of this.#gathers.values()) gather.done();
    this.#ledger?.clear();
    this.#stopSubscriptions();
  }

  #stopSubscriptions(): void {
    for (const stop of this.#unsubscribe.splice(0)) stop();
  }

  #send(topic: string, wire: Wire): void {
    if (this.#closed && wire.op !== "bye") return;
    const payload = JSON.stringify(wire);
    if (this.#bus) this.#bus.publish(topic, payload);
    else this.#queued?.push([topic, payload]);
  }

  #sendLedger(change: LedgerChange): void {
    if (this.#closed) return;
    const payload = JSON.stringify(change);
    if (this.#bus) this.#bus.publish("members", payload);
    else this.#queued?.push(["members", payload]);
  }

  #onLedgerWire(payload: string): void {
    let change: LedgerChange;
    try {
      change = JSON.parse(payload) as LedgerChange;
    } catch {
      return;
    }
    if (typeof change.node !== "string" || typeof change.channel !== "string") return;
    this.#ledger?.change(change);
  }

  /**
   * Reads every node's members of every channel into the ledger. The first read is silent (those members
   * were reported when they came) and skips this node's own answer, which its announcements carry in order.
   */
  async #syncLedger(announce: boolean): Promise<void> {
    const ledger = this.#ledger;
    if (!ledger || this.#closed || (announce && ledger.holding)) return;
    ledger.hold();
    const replies = await this.#gather("", false, true);
    if (this.#closed) return;
    const snapshot = new Map<string, ReadonlyArray<readonly [string, readonly Member[]]>>();
    for (const [node, reply] of replies) if (announce || node !== this.node) snapshot.set(node, reply.all ?? []);
    ledger.sync(snapshot, announce);
  }

  /** Whether this node reports what no announcement says (a node gone, a resync): the live ledger node with the lowest id. */
  #responsible(): boolean {
    const now = Date.now();
    // A node not heard for two heartbeats is taken for dead here, so two nodes dying at once leave a responsible one.
    for (const [node, seen] of this.#nodes) if (node < this.node && this.#ledgerNodes.has(node) && now - seen <= 2 * this.#heartbeatMs) return false;
    return true;
  }

  #alive(): Wire {
    return this.#ledger ? { op: "alive", node: this.node, ledger: true } : { op: "alive", node: this.node };
  }

  #onWire(payload: string): void {
    let wire: Wire;
    try {
      wire = JSON.parse(payload) as Wire;
    } catch {
      return;
    }
    if (typeof wire.node !== "string") return;
    // A node heard of for the first time learns of this one at once, rather than at its next heartbeat.
    if (wire.op !== "bye" && !this.#nodes.has(wire.node) && wire.node !== this.node) this.#send("nodes", this.#alive());
    if (wire.op !== "bye") this.#nodes.set(wire.node, Date.now());
    if (wire.op === "alive" && wire.ledger === true) this.#ledgerNodes.add(wire.node);
    switch (wire.op) {
      case "list":
        this.#answer(wire);
        return;
      case "reply": {
        const gather = this.#gathers.get(wire.req);
        if (!gather) return;
        gather.replies.set(wire.node, wire);
        // Every known node answered; a node that only just started waits out the gather, as it may not know them all.
        if (gather.replies.size >= this.#nodes.size && Date.now() - this.#listeningSince > 2 * this.#heartbeatMs) gather.done();
        return;
      }
      case "bye":
        this.#nodes.delete(wire.node);
        this.#ledgerNodes.delete(wire.node);
        this.#dropNode(wire.node, this.#leaveDelayMs);
        return;
    }
  }

  #answer(request: Wire & { op: "list" }): void {
    if (request.all) {
      const all = [...this.#local].map(([channel, members]) => [channel, [...members.values()].map((entry) => entry.member)] as const);
      this.#send(`reply.${request.node}`, { op: "reply", node: this.node, req: request.req, all });
      return;
    }
    const members = [...(this.#local.get(request.channel)?.values() ?? [])].map((entry) => entry.member);
    const reply: Wire = request.keysOnly
      ? { op: "reply", node: this.node, req: request.req, keys: members.map(memberKey) }
      : { op: "reply", node: this.node, req: request.req, members };
    this.#send(`reply.${request.node}`, reply);
  }

  /** Asks every node for its members of `channel`; waits for all known nodes, or `gatherMs`. */
  async #gather(channel: string, keysOnly: boolean, all = false): Promise<Map<string, Wire & { op: "reply" }>> {
    await this.#started.catch(() => {
      throw new LadderError("unavailable", "presence is not connected to the other nodes yet");
    });
    const req = Math.random().toString(36).slice(2, 12);
    const replies = new Map<string, Wire & { op: "reply" }>();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => done(), this.#gatherMs);
      const done = (): void => {
        clearTimeout(timer);
        this.#gathers.delete(req);
        resolve();
      };
      this.#gathers.set(req, { replies, done });
      this.#send("list", all ? { op: "list", node: this.node, req, channel, keysOnly, all } : { op: "list", node: this.node, req, channel, keysOnly });
    });
    return replies;
  }

  #openView(channel: string): View {
    const entries = new Map<string, Map<string, Member>>();
    const listeners = new Set<PresenceListener>();
    let buffered: Wire[] | null = [];
    let stopTopic: (() => void) | null = null;
    let stopped = false;
    const view: View = {
      entries,
      listeners,
      ready: Promise.resolve(),
      stop: () => {
        stopped = true;
        stopTopic?.();
      },
    };
    view.ready = (async () => {
      await this.#started;
      stopTopic = await this.#bus!.subscribe(`ev.${subjectToken(channel)}`, (payload) => {
        let wire: Wire;
        try {
          wire = JSON.parse(payload) as Wire;
        } catch {
          return;
        }
        this.#nodes.set(wire.node, Date.now());
        if (buffered) buffered.push(wire);
        else this.#apply(channel, view, wire);
      });
      if (stopped) return stopTopic();
      // Announcements that arrive while the list is read wait, and are applied on top of it.
      const replies = await this.#gather(channel, false);
      for (const reply of replies.values()) for (const member of reply.members ?? []) this.#add(channel, view, reply.node, member, false);
      const pending = buffered ?? [];
      buffered = null;
      for (const wire of pending) this.#apply(channel, view, wire);
    })();
    return view;
  }

  #apply(channel: string, view: View, wire: Wire): void {
    if (wire.op === "add") this.#add(channel, view, wire.node, wire.member, true);
    else if (wire.op === "remove") this.#remove(channel, view, wire.node, wire.key);
  }

  #add(channel: string, view: View, node: string, member: Member, announce: boolean): void {
    const key = memberKey(member);
    let on = view.entries.get(key);
    if (!on) view.entries.set(key, (on = new Map()));
    const fresh = on.size === 0;
    on.set(node, member);
    if (fresh && announce) emit(view, { type: "join", channel, member });
  }

  #remove(channel: string, view: View, node: string, key: string): void {
    const on = view.entries.get(key);
    const member = on?.get(node);
    if (!on || !member) return;
    on.delete(node);
    if (on.size > 0) return;
    view.entries.delete(key);
    emit(view, { type: "leave", channel, member });
  }

  /** Every member a node holds leaves every view, now or after `afterMs` unless the node is heard again. */
  #dropNode(node: string, afterMs = 0): void {
    const drop = (): void => {
      if (afterMs > 0 && this.#nodes.has(node)) return;
      this.#ledger?.dropNode(node);
      for (const [channel, view] of this.#views) for (const [key, on] of [...view.entries]) if (on.has(node)) this.#remove(channel, view, node, key);
    };
    if (afterMs === 0) return drop();
    const timer = setTimeout(drop, afterMs);
    timer.unref();
  }

  #beat(): void {
    this.#send("nodes", this.#alive());
    const now = Date.now();
    this.#nodes.set(this.node, now);
    for (const [node, seen] of this.#nodes) {
      if (node === this.node || now - seen <= this.#nodeTimeoutMs) continue;
      this.#logger?.debug({ node }, "presence: node silent; its members leave");
      this.#nodes.delete(node);
      this.#ledgerNodes.delete(node);
      this.#dropNode(node);
    }
  }

  /** Re-reads every watched channel and sends the joins and leaves that the difference implies. */
  #resyncAll(): void {
    void this.#syncLedger(true);
    for (const [channel, view] of this.#views) {
      void this.#gather(channel, false).then((replies) => {
        if (this.#views.get(channel) !== view) return;
        const fresh = new Map<string, Map<string, Member>>();
        for (const reply of replies.values()) {
          for (const member of reply.members ?? []) {
            const key = memberKey(member);
            let on = fresh.get(key);
            if (!on) fresh.set(key, (on = new Map()));
            on.set(reply.node, member);
          }
        }
        // Only nodes that answered speak for their members; a silent one is left to the heartbeat timeout.
        for (const [key, on] of [...view.entries]) {
          for (const node of [...on.keys()]) if (replies.has(node) && !fresh.get(key)?.has(node)) this.#remove(channel, view, node, key);
        }
        for (const [, on] of fresh) for (const [node, member] of on) if (!view.entries.get(memberKey(member))?.has(node)) this.#add(channel, view, node, member, true);
      });
    }
  }
}

function emit(view: View, event: PresenceEvent): void {
  for (const listener of view.listeners) listener(event);
}

function viewMembers(view: View): Member[] {
  const out: Member[] = [];
  for (const on of view.entries.values()) {
    let first: Member | null = null;
    for (const member of on.values()) if (!first || member.since < first.since) first = member;
    if (first) out.push(first);
  }
  return out.sort((a, b) => a.since - b.since);
}
