// gateway: the entry point. Serves gateway.v1 and calls route and stats.
import { createRouteGuideClient, createStatsClient, gatewayService } from "@cloudrun-grpc/proto";
import {
  connectPeer,
  createLogger,
  loadConfigOrExit,
  runUntilSignalled,
  startGrpcServer,
} from "@cloudrun-grpc/runtime";
import { gatewayConfigSchema } from "./config.js";
import { gatewayHandlers } from "./handlers.js";

const config = loadConfigOrExit("gateway", gatewayConfigSchema);
const logger = createLogger("gateway", config.LOG_LEVEL);

await runUntilSignalled(logger, async () => {
  const route = connectPeer(config.ROUTE_URL, createRouteGuideClient);
  const stats = connectPeer(config.STATS_URL, createStatsClient);
  const gateway = gatewayHandlers({ route, stats, logger });
  const server = await startGrpcServer({
    host: config.HOST,
    port: config.PORT,
    logger,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
    services: [gatewayService(gateway.handlers)],
    onDrain: () => gateway.endWatches(),
  });
  logger.info({ route: config.ROUTE_URL.url, stats: config.STATS_URL.url }, "gateway ready");
  return server;
});
