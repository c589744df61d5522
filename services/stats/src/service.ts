// stats, built: records what route reports and serves the aggregates to the gateway.
// main.ts runs it as a process; a test builds it with createStatsService and starts it
// in-process (startService).
import { serviceAuth } from "@cloudrun-grpc/auth-client";
import { statsService } from "@cloudrun-grpc/proto";
import { Readiness, type ServiceFactory } from "@cloudrun-grpc/runtime";
import type { StatsConfig } from "./config.js";
import { statsHandlers } from "./handlers.js";
import { SqlStatsStore } from "./sql-store.js";

export const createStatsService: ServiceFactory<StatsConfig> = (config, { logger }) => {
  // NOT_SERVING until the database is reachable and migrated: the server starts at once, so
  // the health check can say so, and the store keeps trying in the background.
  const readiness = new Readiness(false);
  const store = new SqlStatsStore({
    target: config.STATS_DATABASE_URL,
    database: {
      poolMax: config.STATS_DATABASE_POOL_MAX,
      timeoutMs: config.STATS_DATABASE_TIMEOUT_MS,
      iamUser: config.STATS_DATABASE_IAM_USER,
    },
    logger,
    readiness,
    eventIdRetentionMs: config.STATS_EVENT_ID_RETENTION_HOURS * 3_600_000,
  });
  store.start();
  const stats = statsHandlers({
    store,
    logger,
    watchCoalesceMs: config.STATS_WATCH_COALESCE_MS,
    logSampleRate: config.LOG_RPC_SAMPLE_RATE,
  });
  const auth = serviceAuth(config, logger);
  return {
    services: [statsService(stats.handlers)],
    // The token, the invoker, then the end user: stats counts per event.caller (set by route);
    // the end-user policy only keeps a caller other than the gateway from naming one.
    interceptors: auth.serverInterceptors,
    callerOf: auth.callerOf,
    readiness,
    onDrain: () => stats.endWatches(),
    // Bounded: a pool waiting on a connection a stuck database holds must not outlast the
    // grace period (the database gets no more work from this process either way).
    afterShutdown: async (remainingMs) => {
      let timer: NodeJS.Timeout | undefined;
      const outOfTime = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), Math.max(0, remainingMs - 250));
      });
      const closed = await Promise.race([store.close().then(() => "closed" as const), outOfTime]);
      clearTimeout(timer);
      if (closed === "timeout") logger.warn("stats database connections not closed in time");
    },
  };
};
