/**
 * Picks an engine from a URL, as `--engine` / `LADDER_ENGINE` / `createHub({ engine: "…" })` give it:
 * `memory` (the default), `redis://…` / `rediss://…` (Redis or Redis Cluster), `nats://…` (JetStream).
 */
import type { Logger } from "pino";
import type { Engine, HistoryLimits } from "./engine.js";
import { MemoryEngine, type MemoryBudget } from "./memory.js";
import { NatsEngine } from "./nats.js";
import { RedisEngine } from "./redis.js";

export interface EngineContext extends HistoryLimits, MemoryBudget {
  readonly logger?: Logger;
}

export const ENGINE_URL_HELP = "memory, redis://host:port or nats://host:port";

export function createEngine(url: string, context: EngineContext): Engine {
  const limits = { maxCount: context.maxCount, maxAgeMs: context.maxAgeMs };
  const logger = context.logger ? { logger: context.logger } : {};
  if (url === "memory" || url === "memory:" || url === "memory://") {
    return new MemoryEngine({ ...limits, maxLogBytes: context.maxLogBytes, maxChannels: context.maxChannels });
  }
  let scheme: string;
  try {
    scheme = new URL(url).protocol;
  } catch {
    throw new TypeError(`engine must be ${ENGINE_URL_HELP}; got ${JSON.stringify(url)}`);
  }
  switch (scheme) {
    case "redis:":
    case "rediss:":
      return new RedisEngine({ url, ...limits, ...logger });
    case "nats:":
      return new NatsEngine({ url, ...limits, ...logger });
    default:
      throw new TypeError(`engine must be ${ENGINE_URL_HELP}; got scheme ${scheme}`);
  }
}
