export { createHub, Hub, type HubStats, type NextFunction } from "./server/hub.js";
export { serve, type RunningServer, type ServeOptions } from "./server/server.js";
export { DEFAULTS, type ChannelPolicy, type HubOptions, type SlowConsumerPolicy } from "./server/options.js";
export type { Engine, HistoryLimits, MessageListener, ReadResult } from "./engines/engine.js";
export { MemoryEngine, type MemoryEngineOptions } from "./engines/memory.js";
export * from "./protocol/index.js";
