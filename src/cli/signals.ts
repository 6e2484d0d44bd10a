/** SIGTERM or SIGINT: one graceful stop (a second signal while it runs changes nothing), then exit 0, or 1 if it failed. */
import type { Logger } from "pino";

export function stopOnSignals(logger: Logger, message: string, stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, message);
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
}
