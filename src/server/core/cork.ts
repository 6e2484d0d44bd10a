/**
 * Write coalescing for the fan-out hot path. Sockets written to while messages are fanned out are corked
 * until the end of this turn of the event loop (setImmediate runs after the I/O callbacks of the turn), so
 * every message that arrived in the same turn reaches the kernel in one writev per socket instead of one
 * write per message. Under load that is most of the per-delivery syscall cost; when idle it adds nothing
 * but the wait until the turn ends.
 */

export interface Corkable {
  cork(): void;
  uncork(): void;
  readonly destroyed?: boolean;
}

const corked = new Set<Corkable>();
let scheduled = false;

function flush(): void {
  scheduled = false;
  for (const stream of corked) if (!stream.destroyed) stream.uncork();
  corked.clear();
}

/** Corks the stream until the end of the current event-loop turn (once, however often it is called). */
export function corkForTurn(stream: Corkable): void {
  if (corked.has(stream)) return;
  stream.cork();
  corked.add(stream);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
}
