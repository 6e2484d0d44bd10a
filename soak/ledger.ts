/**
 * The soak's ground truth and its checks. Every publish attempt carries a unique key; an ack (or the first
 * subscriber that sees the message, when the ack was lost to a fault) binds the key to the channel id. Each
 * subscriber keeps, per channel, a position that only moves by receiving a message or by a gap signal, so:
 *
 * - a message at or before the position is a duplicate or out of order;
 * - a known id between the old position and a new message, not covered by a gap, is a silent loss — checked
 *   when the message arrives and again when an id becomes known later (an ack slower than the delivery);
 * - a gap must be justified: `trimmed` only when at least `historySize` messages followed its `since`,
 *   `unknown` only when a memory node restarted after the subscriber reached its position.
 */
import { compareIds, type MessageId } from "../src/protocol/index.js";

const RESTART_MARGIN_MS = 200;

export interface Violation {
  readonly at: number;
  readonly kind: "duplicate" | "out-of-order" | "lost" | "phantom" | "wrong-data" | "unexpected-gap" | "stalled" | "leak";
  readonly channel: string;
  readonly subscriber: string;
  readonly ids: readonly string[];
  readonly detail: string;
}

export interface GapSeen {
  readonly reason: string;
  readonly since: string;
  readonly resume: string;
}

/** What a publish carries: its key, and the time it was sent (for the report's latency, not for checks). */
export interface Payload {
  readonly k: string;
  readonly t: number;
  readonly pad?: string;
}

class ChannelLog {
  /** Every id known to be in the channel (acked, or observed for a publish whose ack was lost), sorted. */
  readonly ids: MessageId[] = [];
  readonly knownAt = new Map<MessageId, number>();
  readonly keyOf = new Map<MessageId, string>();
  readonly idOf = new Map<string, MessageId>();
  /** Publish attempts whose outcome is unknown (error or timeout): they may be in the log. */
  readonly ambiguous: number[] = [];
  readonly tracks = new Set<Track>();
  constructor(readonly name: string) {}

  /** Index of the first id greater than `id`. */
  after(id: MessageId): number {
    let lo = 0;
    let hi = this.ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareIds(this.ids[mid]!, id) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  last(): MessageId | null {
    return this.ids.length > 0 ? this.ids[this.ids.length - 1]! : null;
  }
}

/** One subscriber's view of one channel. */
export class Track {
  /** Ids received, strictly increasing (anything else is reported and not stored). */
  readonly received: MessageId[] = [];
  readonly gaps: Array<GapSeen & { readonly at: number }> = [];
  pos: MessageId;
  posAt: number;
  lastProgressAt: number;
  stalledReported = false;
  /** Exempt from the stall watchdog (a consumer deliberately not reading). */
  paused = false;
  constructor(
    readonly subscriber: string,
    readonly channel: string,
    readonly start: MessageId,
    now: number,
  ) {
    this.pos = start;
    this.posAt = now;
    this.lastProgressAt = now;
  }

  /** Whether `id` was received or lies inside a gap the subscriber was told about. */
  accounted(id: MessageId): boolean {
    if (search(this.received, id)) return true;
    return this.gaps.some((g) => compareIds(id, g.since) > 0 && compareIds(id, g.resume) <= 0);
  }
}

function search(sorted: readonly MessageId[], id: MessageId): boolean {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const c = compareIds(sorted[mid]!, id);
    if (c === 0) return true;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

export interface LedgerOptions {
  readonly historySize: number;
  /** Memory engine: a restart loses the log, so an `unknown` gap after one is expected. */
  readonly memory: boolean;
  readonly now?: () => number;
}

export class Ledger {
  readonly violations: Violation[] = [];
  readonly #channels = new Map<string, ChannelLog>();
  readonly #attempts = new Set<string>();
  readonly #restarts: number[] = [];
  readonly #now: () => number;
  publishesAcked = 0;
  publishesFailed = 0;
  deliveriesChecked = 0;
  gapsSeen = 0;
  gapsExpected = 0;
  readonly gapsByReason: Record<string, number> = {};
  onViolation: (v: Violation) => void = () => {};

  constructor(readonly options: LedgerOptions) {
    this.#now = options.now ?? Date.now;
  }

  channel(name: string): ChannelLog {
    let log = this.#channels.get(name);
    if (!log) {
      log = new ChannelLog(name);
      this.#channels.set(name, log);
    }
    return log;
  }

  channels(): string[] {
    return [...this.#channels.keys()];
  }

  /** The newest id known on a channel. */
  head(channel: string): MessageId | null {
    return this.channel(channel).last();
  }

  track(subscriber: string, channel: string, start: MessageId): Track {
    const track = new Track(subscriber, channel, start, this.#now());
    this.channel(channel).tracks.add(track);
    return track;
  }

  tracks(): Track[] {
    return [...this.#channels.values()].flatMap((c) => [...c.tracks]);
  }

  /** A memory node is being started again (its log is gone): cursors reached before now may get an `unknown` gap. */
  noteRestart(): void {
    this.#restarts.push(this.#now());
  }

  attempt(key: string): void {
    this.#attempts.add(key);
  }

  acked(channel: string, key: string, id: MessageId): void {
    this.publishesAcked++;
    this.#bind(this.channel(channel), key, id, "ack");
  }

  failed(channel: string): void {
    this.publishesFailed++;
    this.channel(channel).ambiguous.push(this.#now());
  }

  message(track: Track, id: MessageId, data: unknown): void {
    const log = this.channel(track.channel);
    const key = keyOfData(data);
    if (key === null || !this.#attempts.has(key)) {
      this.#violate("phantom", track, [id], `received data ${JSON.stringify(data)?.slice(0, 120)} that no publisher sent`);
    } else {
      this.#bind(log, key, id, track.subscriber, track);
    }
    const order = compareIds(id, track.pos);
    if (order <= 0) {
      const dup = track.accounted(id);
      this.#violate(dup ? "duplicate" : "out-of-order", track, [id, track.pos], dup ? `received ${id} again` : `received ${id} after position ${track.pos}`);
      return;
    }
    for (let i = log.after(track.pos); i < log.ids.length && compareIds(log.ids[i]!, id) < 0; i++) {
      this.#violate("lost", track, [log.ids[i]!], `jumped from ${track.pos} to ${id} without ${log.ids[i]} and without a gap signal`);
    }
    track.received.push(id);
    this.#advance(track, id);
    this.deliveriesChecked++;
  }

  gap(track: Track, gap: GapSeen): void {
    const log = this.channel(track.channel);
    const now = this.#now();
    this.gapsSeen++;
    this.gapsByReason[gap.reason] = (this.gapsByReason[gap.reason] ?? 0) + 1;
    track.gaps.push({ ...gap, at: now });
    const why = this.#unjustified(log, track, gap);
    if (why) this.#violate("unexpected-gap", track, [gap.since, gap.resume], `${gap.reason} gap ${why}`);
    else this.gapsExpected++;
    if (compareIds(gap.since, track.pos) > 0) {
      for (let i = log.after(track.pos); i < log.ids.length && compareIds(log.ids[i]!, gap.since) <= 0; i++) {
        this.#violate("lost", track, [log.ids[i]!], `gap from ${gap.since} skipped ${log.ids[i]} before it (position ${track.pos})`);
      }
    }
    if (compareIds(gap.resume, track.pos) > 0) this.#advance(track, gap.resume);
    else track.lastProgressAt = now;
  }

  /** Records a stall (a subscriber behind a target for too long), once per episode. */
  stalled(track: Track, detail: string, ids: string[]): void {
    if (track.stalledReported) return;
    track.stalledReported = true;
    this.#violate("stalled", track, ids, detail);
  }

  leak(node: string, detail: string): void {
    this.#record({ at: this.#now(), kind: "leak", channel: "-", subscriber: node, ids: [], detail });
  }

  /** Positions behind the channel's newest id known since `olderThanMs` or longer. */
  behind(track: Track, target: MessageId | null): boolean {
    return target !== null && compareIds(track.pos, target) < 0;
  }

  /** Time the first id after a track's position became known (null: the track is caught up). */
  waitingSince(track: Track): number | null {
    const log = this.channel(track.channel);
    const next = log.ids[log.after(track.pos)];
    return next === undefined ? null : log.knownAt.get(next) ?? null;
  }

  #advance(track: Track, to: MessageId): void {
    track.pos = to;
    track.posAt = this.#now();
    track.lastProgressAt = track.posAt;
    track.stalledReported = false;
  }

  #unjustified(log: ChannelLog, track: Track, gap: GapSeen): string | null {
    if (gap.reason === "trimmed") {
      const followed = log.ids.length - log.after(gap.since);
      const maybe = log.ambiguous.filter((t) => t >= track.posAt - 1000).length;
      return followed + maybe >= this.options.historySize ? null : `after only ${followed} (+${maybe} unacknowledged) messages with historySize ${this.options.historySize}`;
    }
    if (gap.reason === "unknown") {
      if (!this.options.memory) return "on a broker engine (history is shared and survives node restarts)";
      // The margin covers this process's own event-loop lag; a new node needs far longer to start serving.
      return this.#restarts.some((t) => t >= track.posAt - RESTART_MARGIN_MS) ? null : "with no memory-node restart since the subscriber reached its position";
    }
    return "(no channel has the latest policy)";
  }

  /** Binds a publish to its id; `receiver` (the track it just arrived on) is judged by `message` instead. */
  #bind(log: ChannelLog, key: string, id: MessageId, by: string, receiver?: Track): void {
    const known = log.idOf.get(key);
    if (known !== undefined) {
      if (known !== id) this.#record({ at: this.#now(), kind: "wrong-data", channel: log.name, subscriber: by, ids: [known, id], detail: `publish ${key} is ${known} but arrived as ${id}` });
      return;
    }
    const other = log.keyOf.get(id);
    if (other !== undefined) {
      this.#record({ at: this.#now(), kind: "wrong-data", channel: log.name, subscriber: by, ids: [id], detail: `id ${id} carries ${key} and ${other}` });
      return;
    }
    log.idOf.set(key, id);
    log.keyOf.set(id, key);
    log.knownAt.set(id, this.#now());
    const at = log.after(id);
    log.ids.splice(at, 0, id);
    // An id learnt late: every subscriber already past it must have received it or been told of a gap.
    for (const track of log.tracks) {
      if (track !== receiver && compareIds(id, track.start) > 0 && compareIds(id, track.pos) <= 0 && !track.accounted(id)) {
        this.#violate("lost", track, [id], `position ${track.pos} is past ${id}, which it never received and no gap covered`);
      }
    }
  }

  #violate(kind: Violation["kind"], track: Track, ids: string[], detail: string): void {
    this.#record({ at: this.#now(), kind, channel: track.channel, subscriber: track.subscriber, ids, detail });
  }

  #record(violation: Violation): void {
    this.violations.push(violation);
    this.onViolation(violation);
  }
}

function keyOfData(data: unknown): string | null {
  if (typeof data !== "object" || data === null) return null;
  const k = (data as { k?: unknown }).k;
  return typeof k === "string" ? k : null;
}
