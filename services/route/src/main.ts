// route: the RouteGuide service. Reports what it did to stats, off the client's path.
import { createStatsClient, routeGuideService } from "@cloudrun-grpc/proto";
import {
  connectPeer,
  createLogger,
  loadConfigOrExit,
  runUntilSignalled,
  startGrpcServer,
} from "@cloudrun-grpc/runtime";
import { routeConfigSchema } from "./config.js";
import { FeatureIndex } from "./features.js";
import { routeGuideHandlers } from "./handlers.js";
import { StatsReporter } from "./stats-reporter.js";

const config = loadConfigOrExit("route", routeConfigSchema);
const logger = createLogger("route", config.LOG_LEVEL);

await runUntilSignalled(logger, async () => {
  const features = FeatureIndex.load();
  const stats = connectPeer(config.STATS_URL, createStatsClient);
  const reporter = new StatsReporter(stats, logger);
  const server = await startGrpcServer({
    host: config.HOST,
    port: config.PORT,
    logger,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
    services: [
      routeGuideService(
        routeGuideHandlers({
          features,
          logger,
          report: (event) => reporter.report(event),
          limits: { maxRoutePoints: config.ROUTE_MAX_POINTS, maxChatNotes: config.CHAT_MAX_NOTES },
        }),
      ),
    ],
  });
  logger.info({ features: features.features.length, stats: config.STATS_URL.url }, "route ready");
  return {
    ...server,
    async shutdown() {
      await server.shutdown();
      // Calls are over; give the last reports the rest of the grace period to reach stats.
      const lost = await reporter.flush(Math.max(1000, config.SHUTDOWN_GRACE_MS / 4));
      if (lost > 0) logger.error({ lost }, "stats unreachable at shutdown: reports lost");
      stats.close();
    },
  };
});
