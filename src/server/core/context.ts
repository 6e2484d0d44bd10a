import type { Engine } from "../../engines/engine.js";
import type { ResolvedOptions } from "../options.js";
import type { WriteBatcher } from "./cork.js";
import type { Fanout } from "./fanout.js";
import type { Presence } from "../presence/presence.js";
import type { Gap } from "../../protocol/index.js";
import type { Backfill } from "../hooks/backfill.js";

/** Asks the app's backfill hook about a gap; null for nothing (or a failure): the plain gap goes out. */
export type Backfiller = (gap: Gap) => Promise<Backfill | null>;

/** What every transport works with, polls and streams alike: the engine, this node's fan-out, and the hub's options. */
export interface TransportContext {
  readonly engine: Engine;
  readonly fanout: Fanout;
  readonly options: ResolvedOptions;
  /** Null unless the hub has presence channels. */
  readonly presence: Presence | null;
  /** Batches the fan-out's writes per socket (`writeDelayMs`). */
  readonly batcher: WriteBatcher;
  /** Null without the backfill hook. */
  readonly backfill: Backfiller | null;
}
