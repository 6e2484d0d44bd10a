/** `ladder serve`: a hub on a port, the demo page beside it, drained on SIGTERM or SIGINT. */
import cluster from "node:cluster";
import { pino } from "pino";
import { serveWorker } from "../cluster/worker.js";
import { serve } from "../server/server.js";
import type { HubRequest, HubResponse } from "../server/edge/http.js";
import { sendError } from "../server/edge/refusal.js";
import { staticFiles } from "../server/edge/static.js";
import { METRICS_OFF, METRICS_PATH } from "../server/metrics.js";
import { DemoBoard } from "./demo-backfill.js";
import { DemoNetwork, demoNetworkRoutes } from "./demo-network.js";
import { DemoPublisher, demoRoutes } from "./demo-publisher.js";
import { RuntimeError } from "./remote.js";
import { SettingsError, type resolveSettings } from "./settings.js";
import { stopOnSignals } from "./signals.js";
import { runPrimary } from "./workers.js";

/** What listen() throws, said for the person who typed the command. */
function listenError(error: unknown, host: string, port: number): Error {
  const code = (error as { code?: string }).code;
  const where = `port ${port} on ${host}`;
  if (code === "EADDRINUSE") return new RuntimeError(`${where} is already in use: stop what holds it, or choose another with --port (0 picks a free one)`);
  if (code === "EACCES") return new RuntimeError(`not allowed to listen on ${where}: ports below 1024 need privileges; choose another with --port`);
  if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND" || code === "EAI_AGAIN") return new RuntimeError(`cannot listen on host ${host} (${code}): check --host (127.0.0.1, 0.0.0.0, or an address of this machine)`);
  // serve() refuses bad options (a certificate that does not parse, a key that does not fit) with a TypeError.
  if (error instanceof TypeError) return new SettingsError(error.message);
  return error as Error;
}

export async function runServe(resolved: ReturnType<typeof resolveSettings>): Promise<void> {
  const { workers = 1, ...settings } = resolved;
  const logger = pino({ level: settings.logLevel, base: undefined });
  if (workers > 1 && cluster.isPrimary) return runPrimary(workers, settings, logger);
  // The demo page and its publisher (POST /demo/publisher), only when the demo is on.
  const demo = settings.demo === false ? null : new DemoPublisher();
  // Its network conditions (GET/POST /demo/network, the lanes under /demo/net/) in one process only: with
  // workers, a toggle would reach one worker and the page's connections others.
  const network = demo && workers === 1 ? new DemoNetwork() : null;
  const host = settings.host ?? "127.0.0.1";
  // The backfill panel: its board and the hook that repairs a gap in it, unless the operator has a backfill hook.
  let historySize = settings.historySize ?? 0;
  const board = demo ? new DemoBoard(() => historySize) : null;
  const hooks = board && !settings.hooks?.backfill ? { ...settings.hooks, backfill: { url: await board.listenHook() } } : settings.hooks;
  const pages = demo ? demoRoutes(demo, board!.routes(network ? demoNetworkRoutes(network, staticFiles()) : staticFiles())) : undefined;
  const fallbackUpgrade = network ? network.handleUpgrade.bind(network) : undefined;
  // The hub answers /metrics itself when metrics are on; off, the demo's routes would call it a missing page.
  const fallback = pages && !settings.metrics ? (req: HubRequest, res: HubResponse) => (new URL(req.url ?? "/", "http://x").pathname === METRICS_PATH ? sendError(res, METRICS_OFF) : pages(req, res)) : pages;
  // The demo's chat shows who is in the room; its anonymous tabs may name themselves (info, unverified).
  // (Not with workers on the memory engine, where each worker would list only its own members.)
  const sharedPresence = workers === 1 || /^(redis|rediss|nats):/.test(String(settings.engine ?? "memory"));
  const presence = settings.presence ?? (demo && sharedPresence ? { channels: ["demo.*"], anonymousInfo: true } : undefined);
  const running = await (workers > 1 ? serveWorker : serve)({ ...settings, presence, logger, fallback, fallbackUpgrade, ...(hooks ? { hooks } : {}) }).catch((error: unknown) => {
    board?.close();
    throw listenError(error, host, settings.port ?? 8080);
  });
  demo?.attach((channel, data) => running.hub.publish(channel, data));
  historySize = running.hub.options.historySize;
  board?.attach((channel, data) => running.hub.publish(channel, data));
  await network?.start(running.hub).catch(async (error: unknown) => {
    board?.close();
    await running.close();
    throw error;
  });
  logger.info({ url: running.url, engine: running.hub.engine.name }, `ladder listening on ${running.url}`);
  // With workers, the primary says it once every worker listens.
  if (!logger.isLevelEnabled("info") && workers === 1) process.stdout.write(`ladder listening on ${running.url}\n`);
  if (running.tls?.selfSigned) {
    // Printed so a developer can compare it with what the browser shows before accepting its warning.
    const note = `self-signed development certificate, SHA-256 fingerprint ${running.tls.fingerprint256} (not for production)`;
    logger.warn({ fingerprint256: running.tls.fingerprint256 }, note);
    if (!logger.isLevelEnabled("warn")) process.stdout.write(`ladder: ${note}\n`);
  }
  stopOnSignals(logger, "draining", async () => {
    demo?.close();
    board?.close();
    await running.close();
    await network?.close();
  });
}
