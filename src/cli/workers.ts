/** `ladder serve --workers N`: the primary process, which forks the workers (each runs `ladder serve` again). */
import type { Logger } from "pino";
import { startPrimary } from "../cluster/primary.js";
import type { ServeOptions } from "../server/server.js";
import { stopOnSignals } from "./signals.js";

export async function runPrimary(workers: number, settings: ServeOptions, logger: Logger): Promise<void> {
  const engine = typeof settings.engine === "string" ? settings.engine : undefined;
  const primary = await startPrimary({
    workers,
    logger,
    ...(engine !== undefined ? { engine } : {}),
    ...(settings.historySize !== undefined ? { historySize: settings.historySize } : {}),
    ...(settings.historyMaxAgeMs !== undefined ? { historyMaxAgeMs: settings.historyMaxAgeMs } : {}),
    ...(settings.maxLogBytes !== undefined ? { maxLogBytes: settings.maxLogBytes } : {}),
    ...(settings.maxChannels !== undefined ? { maxChannels: settings.maxChannels } : {}),
  });
  logger.info({ url: primary.url, workers, pids: primary.pids() }, `ladder listening on ${primary.url} with ${workers} workers`);
  if (!logger.isLevelEnabled("info")) process.stdout.write(`ladder listening on ${primary.url} with ${workers} workers\n`);
  stopOnSignals(logger, "draining every worker", () => primary.close());
}
