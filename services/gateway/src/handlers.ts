// The gateway's API: RouteGuide and stats calls passed through to the peers, and
// DescribeArea, which asks both at once and combines the answers.
import type {
  GatewayServiceHandlers,
  RouteGuideServiceClient,
  routeguide,
  StatsServiceClient,
  stats,
} from "@cloudrun-grpc/proto";
import {
  endWithError,
  fromPeer,
  invalidArgument,
  type Logger,
  pointKey,
  StatusError,
  toStatus,
} from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { forwardRequests, forwardResponses } from "./forward.js";

export interface GatewayDependencies {
  route: RouteGuideServiceClient;
  stats: StatsServiceClient;
  logger: Logger;
}

export interface GatewayHandlers {
  handlers: GatewayServiceHandlers;
  /** Ends every open WatchStats with UNAVAILABLE so its client reconnects elsewhere. */
  endWatches(): void;
}

// DescribeArea asks stats for this many of the area's most looked-up locations, then keeps
// the named ones; stats' own upper bound.
const statsTopNLimit = 1000;

function requireTopN(topN: number): number {
  if (!Number.isInteger(topN) || topN < 0 || topN > statsTopNLimit) {
    throw invalidArgument(`top_n must be from 0 to ${statsTopNLimit} (0 means 10), got ${topN}`);
  }
  return topN === 0 ? 10 : topN;
}

export function gatewayHandlers({ route, stats, logger }: GatewayDependencies): GatewayHandlers {
  const watches = new Map<
    grpc.ServerWritableStream<unknown, unknown>,
    grpc.ClientReadableStream<unknown>
  >();

  /** A unary peer call as a promise, bound to the call we serve (deadline, cancellation). */
  function ask<Response>(
    peerName: string,
    start: (callback: grpc.requestCallback<Response>) => grpc.ClientUnaryCall,
  ): Promise<Response> {
    return new Promise((resolve, reject) => {
      start((error, response) => {
        if (error) reject(fromPeer(peerName, error));
        else if (response === undefined)
          reject(new StatusError(grpc.status.INTERNAL, `${peerName}: empty response`));
        else resolve(response);
      });
    });
  }

  const failed = (method: string, error: unknown) => {
    if (!(error instanceof StatusError)) logger.error({ err: error, method }, "handler failed");
    return toStatus(error);
  };

  const handlers: GatewayServiceHandlers = {
    GetFeature(call, callback) {
      route.GetFeature({ point: call.request.point }, { parent: call }, (error, response) => {
        if (error) callback(fromPeer("route", error));
        else callback(null, { feature: response?.feature ?? null });
      });
    },

    ListFeatures(call) {
      const upstream = route.ListFeatures({ rectangle: call.request.rectangle }, { parent: call });
      forwardResponses(
        "route",
        upstream,
        call,
        (message: routeguide.ListFeaturesResponse__Output) => ({
          feature: message.feature,
        }),
      );
    },

    RecordRoute(call, callback) {
      const upstream = route.RecordRoute({ parent: call }, (error, response) => {
        if (error) {
          // The route call is over; stop reading what the client still sends.
          call.pause();
          callback(fromPeer("route", error));
        } else callback(null, { summary: response?.summary ?? null });
      });
      forwardRequests(call, upstream, (message) => ({ point: message.point }));
    },

    RouteChat(call) {
      const upstream = route.RouteChat({ parent: call });
      forwardRequests(call, upstream, (message) => ({ note: message.note }));
      forwardResponses(
        "route",
        upstream,
        call,
        (message: routeguide.RouteChatResponse__Output) => ({
          note: message.note,
        }),
      );
    },

    GetStats(call, callback) {
      stats.GetStats({ topN: call.request.topN }, { parent: call }, (error, response) => {
        if (error) callback(fromPeer("stats", error));
        else callback(null, { snapshot: response?.snapshot ?? null });
      });
    },

    WatchStats(call) {
      const upstream = stats.WatchStats({ topN: call.request.topN }, { parent: call });
      watches.set(call, upstream);
      call.on("close", () => watches.delete(call));
      forwardResponses("stats", upstream, call, (message: stats.WatchStatsResponse__Output) => ({
        snapshot: message.snapshot,
      }));
    },

    async DescribeArea(call, callback) {
      try {
        const topN = requireTopN(call.request.topN);
        const { rectangle } = call.request;
        const features = collectFeatures(route.ListFeatures({ rectangle }, { parent: call }));
        const lookups = ask<stats.GetStatsResponse__Output>("stats", (done) =>
          stats.GetStats({ topN: statsTopNLimit, within: rectangle }, { parent: call }, done),
        );
        const [named, looked] = await Promise.all([features, lookups]);
        const byLocation = new Map(named.map((feature) => [pointKey(feature.location), feature]));
        const mostLookedUp = (looked.snapshot?.topFeatures ?? [])
          .flatMap((entry) => {
            const feature = entry.location && byLocation.get(pointKey(entry.location));
            return feature ? [{ feature, lookups: entry.lookups }] : [];
          })
          .slice(0, topN);
        callback(null, {
          featureCount: named.length,
          lookupsInArea: looked.lookupsWithin,
          mostLookedUp,
        });
      } catch (error) {
        callback(failed("DescribeArea", error));
      }
    },
  };

  return {
    handlers,
    endWatches() {
      for (const [call, upstream] of watches) {
        endWithError(
          call,
          new StatusError(
            grpc.status.UNAVAILABLE,
            "gateway instance is shutting down; watch again",
          ),
        );
        upstream.cancel();
      }
      watches.clear();
    },
  };
}

interface NamedFeature {
  name: string;
  location: routeguide.Point__Output;
}

/** Reads a whole ListFeatures stream (bounded by route's data set) into memory. */
function collectFeatures(
  upstream: grpc.ClientReadableStream<routeguide.ListFeaturesResponse__Output>,
): Promise<NamedFeature[]> {
  return new Promise((resolve, reject) => {
    const features: NamedFeature[] = [];
    upstream.on("data", ({ feature }: routeguide.ListFeaturesResponse__Output) => {
      if (feature?.location) features.push({ name: feature.name, location: feature.location });
    });
    upstream.on("error", (error) => reject(fromPeer("route", error)));
    upstream.on("end", () => resolve(features));
  });
}
