// gateway: the entry point. Serves gateway.v1 and calls route and stats.
import { serviceAuth } from "@cloudrun-grpc/auth-client";
import { createRouteGuideClient, createStatsClient, gatewayService } from "@cloudrun-grpc/proto";
import { connectPeer, runService } from "@cloudrun-grpc/runtime";
import { gatewayConfigSchema } from "./config.js";
import { gatewayHandlers } from "./handlers.js";

await runService("gateway", gatewayConfigSchema, (config, logger) => {
  const auth = serviceAuth(config, logger);
  const route = connectPeer(config.ROUTE_URL, createRouteGuideClient, {
    interceptors: auth.clientInterceptors(config.ROUTE_URL.url),
  });
  const stats = connectPeer(config.STATS_URL, createStatsClient, {
    interceptors: auth.clientInterceptors(config.STATS_URL.url),
  });
  const gateway = gatewayHandlers({ route, stats, logger });
  logger.info({ route: config.ROUTE_URL.url, stats: config.STATS_URL.url }, "peers");
  return {
    services: [gatewayService(gateway.handlers)],
    interceptors: auth.serverInterceptors,
    onDrain: () => gateway.endWatches(),
    afterShutdown: async () => {
      route.close();
      stats.close();
    },
  };
});
