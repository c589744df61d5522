// route, built: the RouteGuide service and its reports to stats, off the client's path.
// main.ts runs it as a process; a test builds it with createRouteService and starts it
// in-process (startService).
import { serviceAuth } from "@cloudrun-grpc/auth-client";
import { createStatsClient, routeGuideService, serviceNames } from "@cloudrun-grpc/proto";
import { rpcLogOptions, type ServiceFactory, servicePeers } from "@cloudrun-grpc/runtime";
import type { RouteConfig } from "./config.js";
import { FeatureIndex } from "./features.js";
import { routeGuideHandlers } from "./handlers.js";
import { reporterChannelOptions, StatsReporter } from "./stats-reporter.js";

export const createRouteService: ServiceFactory<RouteConfig> = (config, { logger }) => {
  const features = FeatureIndex.load(config.ROUTE_FEATURES_FILE);
  const auth = serviceAuth(config, logger);
  const peers = servicePeers({
    rpcLog: rpcLogOptions(config, logger),
    tokenFor: auth.peerToken,
  });
  const stats = peers.connect(config.STATS_URL, createStatsClient, {
    service: serviceNames.stats,
    name: "stats",
    channelOptions: reporterChannelOptions,
  });
  const reporter = new StatsReporter(stats, logger);
  logger.info({ features: features.features.length, stats: config.STATS_URL.url }, "peers");
  const handlers = routeGuideHandlers({
    features,
    logger,
    report: (event, idempotencyKey) => reporter.report(event, idempotencyKey),
    limits: { maxRoutePoints: config.ROUTE_MAX_POINTS, maxChatNotes: config.CHAT_MAX_NOTES },
  });
  return {
    services: [routeGuideService(handlers)],
    // The token, the invoker, then the end user (believed only from the verified gateway).
    interceptors: auth.serverInterceptors,
    callerOf: auth.callerOf,
    afterShutdown: async (remainingMs) => {
      // Calls are over; the last reports get the rest of the grace period to reach stats.
      const lost = await reporter.flush(remainingMs);
      if (lost > 0) logger.error({ lost }, "stats unreachable at shutdown: reports lost");
      stats.close();
    },
  };
};
