// gateway: the entry point. Serves gateway.v1 and calls route and stats.
import { serviceAuth } from "@cloudrun-grpc/auth-client";
import {
  createRouteGuideClient,
  createStatsClient,
  gatewayService,
  serviceNames,
} from "@cloudrun-grpc/proto";
import { connectPeer, logOutgoingCalls, runService, withAddresses } from "@cloudrun-grpc/runtime";
import { gatewayConfigSchema } from "./config.js";
import { gatewayHandlers } from "./handlers.js";

await runService("gateway", gatewayConfigSchema, (config, logger) => {
  const auth = serviceAuth(config, logger);
  const rpcLog = { logger, sampleRate: config.LOG_RPC_SAMPLE_RATE };
  // Logging first: it carries the trace on and times the whole call, token included.
  const routePeer = withAddresses(config.ROUTE_URL, config.ROUTE_ADDRESSES);
  const route = connectPeer(routePeer, createRouteGuideClient, {
    service: serviceNames.routeGuide,
    interceptors: [
      logOutgoingCalls("route", rpcLog),
      ...auth.clientInterceptors(config.ROUTE_URL.url),
    ],
  });
  const stats = connectPeer(config.STATS_URL, createStatsClient, {
    service: serviceNames.stats,
    interceptors: [
      logOutgoingCalls("stats", rpcLog),
      ...auth.clientInterceptors(config.STATS_URL.url),
    ],
  });
  const gateway = gatewayHandlers({ route, stats, logger });
  logger.info(
    { route: config.ROUTE_URL.url, routeTarget: routePeer.target, stats: config.STATS_URL.url },
    "peers",
  );
  return {
    services: [gatewayService(gateway.handlers)],
    interceptors: auth.serverInterceptors,
    callerOf: auth.callerOf,
    onDrain: () => gateway.endWatches(),
    afterShutdown: async () => {
      route.close();
      stats.close();
    },
  };
});
