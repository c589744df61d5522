// gateway, built: the entry point. Serves gateway.v1 and calls route and stats.
// main.ts runs it as a process; a test builds it with createGatewayService and starts it
// in-process (startService).
import { forwardEndUser, serviceAuth } from "@cloudrun-grpc/auth-client";
import {
  createRouteGuideClient,
  createStatsClient,
  gatewayService,
  serviceNames,
} from "@cloudrun-grpc/proto";
import {
  rpcLogOptions,
  type ServiceFactory,
  servicePeers,
  withAddresses,
} from "@cloudrun-grpc/runtime";
import type { GatewayConfig } from "./config.js";
import { gatewayHandlers } from "./handlers.js";

export const createGatewayService: ServiceFactory<GatewayConfig> = (config, { logger }) => {
  const auth = serviceAuth(config, logger);
  const peers = servicePeers({
    rpcLog: rpcLogOptions(config, logger),
    tokenFor: auth.peerToken,
    // route and stats count each call for the gateway's verified caller, named on every peer
    // call. Not with AUTH_MODE=off: nothing is verified, and the peers trust no one then.
    ...(config.AUTH_MODE === "off" ? {} : { headers: forwardEndUser }),
  });
  const routePeer = withAddresses(config.ROUTE_URL, config.ROUTE_ADDRESSES);
  const route = peers.connect(routePeer, createRouteGuideClient, {
    service: serviceNames.routeGuide,
    name: "route",
    // The streams forwarded to route are paced by HTTP/2 flow control, not grpc-js's retry
    // buffer: grpc-js acknowledges writes at once until a call's buffer is full, then holds the
    // next write until everything buffered before it is sent (retrying-call.ts,
    // sendMessageWithContext), so a 1 MiB buffer (the default) makes the gateway take a
    // client's stream in 1 MiB bursts. route's retried requests (GetFeature, ListFeatures) are
    // a few bytes; a RecordRoute or RouteChat refused before route saw it is still replayed
    // while under 64 KiB sent.
    channelOptions: { "grpc.per_rpc_retry_buffer_size": 64 * 1024 },
  });
  const stats = peers.connect(config.STATS_URL, createStatsClient, {
    service: serviceNames.stats,
    name: "stats",
  });
  const gateway = gatewayHandlers({ route, stats, logger });
  logger.info(
    { route: config.ROUTE_URL.url, routeTarget: routePeer.target, stats: config.STATS_URL.url },
    "peers",
  );
  return {
    services: [gatewayService(gateway.handlers)],
    // The gateway trusts no caller's x-end-user (its config has no AUTH_END_USER_FROM): a
    // client's is dropped, with a warning.
    interceptors: auth.serverInterceptors,
    callerOf: auth.callerOf,
    onDrain: () => gateway.endWatches(),
    afterShutdown: async () => {
      route.close();
      stats.close();
    },
  };
};
