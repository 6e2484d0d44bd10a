/**
 * Who is in every presence channel, cluster-wide, for the `member_added` / `member_removed` webhooks: a
 * member is added when its first connection on any node appears and removed when its last one is gone,
 * so a member with connections on two nodes is added once and removed once.
 *
 * Every node keeps the same ledger from the same announcements (one bus topic, which a single Redis or
 * NATS server delivers to everyone in one order), so every node sees the same transitions; exactly one
 * reports each of them:
 * - a transition an announcement causes is reported by the node that announced it — the node where the
 *   member's connection is (or was);
 * - a transition found without an announcement — a node that died or closed, or a difference a periodic
 *   re-read finds after announcements were lost — is reported by the live node with the lowest id.
 * Races (two nodes that disagree for a moment on who is alive, a broker that reorders) can send an event
 * twice: delivery is at least once and the event's id is not shared, so apps key on (channel, member).
 */
import type { Member } from "../../protocol/index.js";

export type MemberEventName = "member_added" | "member_removed";
export type MemberReporter = (event: MemberEventName, channel: string, member: Member) => void;

/** One announcement on the ledger's topic. */
export type LedgerChange =
  | { readonly op: "add"; readonly node: string; readonly channel: string; readonly member: Member }
  | { readonly op: "remove"; readonly node: string; readonly channel: string; readonly key: string };

/** What a node said it holds: channel → its members there. */
export type LedgerSnapshot = ReadonlyMap<string, ReadonlyArray<readonly [string, readonly Member[]]>>;

interface Entry {
  /** As first announced: what member_removed reports. */
  readonly member: Member;
  readonly nodes: Set<string>;
}

export class MemberLedger {
  readonly #self: string;
  readonly #key: (member: Member) => string;
  readonly #report: MemberReporter;
  readonly #responsible: () => boolean;
  readonly #channels = new Map<string, Map<string, Entry>>();
  /** Announcements that arrive while a snapshot is read wait here and go on top of it; held until the first one. */
  #held: LedgerChange[] | null = [];

  constructor(self: string, key: (member: Member) => string, report: MemberReporter, responsible: () => boolean) {
    this.#self = self;
    this.#key = key;
    this.#report = report;
    this.#responsible = responsible;
  }

  /** Whether a snapshot is being read (announcements are held). */
  get holding(): boolean {
    return this.#held !== null;
  }

  /** A snapshot is about to be read: announcements wait for it. */
  hold(): void {
    this.#held ??= [];
  }

  change(change: LedgerChange): void {
    if (this.#held) this.#held.push(change);
    else this.#apply(change);
  }

  /**
   * The nodes that answered hold exactly what they said. `announce` is false for a node's first read,
   * whose members were reported when they came (before this node was there to see it).
   */
  sync(snapshot: LedgerSnapshot, announce: boolean): void {
    const report = announce && this.#responsible();
    const said = new Set<string>();
    for (const [node, channels] of snapshot) for (const [channel, members] of channels) for (const member of members) said.add(`${node}\n${channel}\n${this.#key(member)}`);
    for (const [channel, entries] of this.#channels) {
      for (const [key, entry] of [...entries]) {
        for (const node of [...entry.nodes]) if (snapshot.has(node) && !said.has(`${node}\n${channel}\n${key}`)) this.#drop(channel, key, node, report);
      }
    }
    for (const [node, channels] of snapshot) for (const [channel, members] of channels) for (const member of members) this.#put(channel, node, member, report);
    const held = this.#held ?? [];
    this.#held = null;
    for (const change of held) this.#apply(change);
  }

  /** A node is gone: its members leave; the last connection of a member gone is reported by the responsible node. */
  dropNode(node: string): void {
    const report = this.#responsible();
    for (const [channel, entries] of [...this.#channels]) for (const [key, entry] of [...entries]) if (entry.nodes.has(node)) this.#drop(channel, key, node, report);
  }

  /** Members known, over all channels (tests, and the size a node pays for the webhooks). */
  get size(): number {
    let n = 0;
    for (const entries of this.#channels.values()) n += entries.size;
    return n;
  }

  clear(): void {
    this.#channels.clear();
    this.#held = null;
  }

  #apply(change: LedgerChange): void {
    const own = change.node === this.#self;
    if (change.op === "add") this.#put(change.channel, change.node, change.member, own);
    else this.#drop(change.channel, change.key, change.node, own);
  }

  #put(channel: string, node: string, member: Member, report: boolean): void {
    let entries = this.#channels.get(channel);
    if (!entries) this.#channels.set(channel, (entries = new Map()));
    const key = this.#key(member);
    const entry = entries.get(key);
    if (entry) {
      entry.nodes.add(node);
      return;
    }
    entries.set(key, { member, nodes: new Set([node]) });
    if (report) this.#report("member_added", channel, member);
  }

  #drop(channel: string, key: string, node: string, report: boolean): void {
    const entries = this.#channels.get(channel);
    const entry = entries?.get(key);
    if (!entries || !entry || !entry.nodes.delete(node) || entry.nodes.size > 0) return;
    entries.delete(key);
    if (entries.size === 0) this.#channels.delete(channel);
    if (report) this.#report("member_removed", channel, entry.member);
  }
}
