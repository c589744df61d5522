// stats: records what route reports, serves the aggregates to the gateway.
import { statsService } from "@cloudrun-grpc/proto";
import {
  createLogger,
  loadConfigOrExit,
  runUntilSignalled,
  startGrpcServer,
} from "@cloudrun-grpc/runtime";
import { statsConfigSchema } from "./config.js";
import { statsHandlers } from "./handlers.js";
import { MemoryStatsStore } from "./store.js";

const config = loadConfigOrExit("stats", statsConfigSchema);
const logger = createLogger("stats", config.LOG_LEVEL);

await runUntilSignalled(logger, async () => {
  const store = new MemoryStatsStore();
  const stats = statsHandlers({ store, logger, watchCoalesceMs: config.STATS_WATCH_COALESCE_MS });
  return startGrpcServer({
    host: config.HOST,
    port: config.PORT,
    logger,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
    services: [statsService(stats.handlers)],
    onDrain: () => stats.endWatches(),
  });
});
