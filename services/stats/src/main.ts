// stats: records what route reports, serves the aggregates to the gateway.
import { serviceAuth } from "@cloudrun-grpc/auth-client";
import { statsService } from "@cloudrun-grpc/proto";
import { runService } from "@cloudrun-grpc/runtime";
import { statsConfigSchema } from "./config.js";
import { statsHandlers } from "./handlers.js";
import { MemoryStatsStore } from "./store.js";

await runService("stats", statsConfigSchema, (config, logger) => {
  const store = new MemoryStatsStore();
  const stats = statsHandlers({ store, logger, watchCoalesceMs: config.STATS_WATCH_COALESCE_MS });
  return {
    services: [statsService(stats.handlers)],
    interceptors: serviceAuth(config, logger).serverInterceptors,
    onDrain: () => stats.endWatches(),
  };
});
