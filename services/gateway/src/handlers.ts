// The gateway's API: RouteGuide and stats calls passed through to the peers, and
// DescribeArea, which asks both at once and combines the answers.

import { maxTopN, pointKey, requireRectangle, requireTopN } from "@cloudrun-grpc/domain";
import {
  endOfRouteBytes,
  explicitRouteEnd,
  type GatewayHandlers as GatewayServiceHandlers,
  idempotencyKeyHeader,
  keepBytes,
  peerPath,
  type RecordRouteRequestShape,
  type RouteGuideServiceClient,
  recordRouteRequestShape,
  routeEndHeader,
  type routeguide,
  type StatsServiceClient,
  type stats,
} from "@cloudrun-grpc/proto";
import {
  downstream,
  fromPeer,
  handlerStatus,
  idempotencyKeyOf,
  invalidArgument,
  type Logger,
  OpenStreams,
  StatusError,
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

export function gatewayHandlers({ route, stats, logger }: GatewayDependencies): GatewayHandlers {
  const watches = new OpenStreams();

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

  const failed = (method: string, error: unknown) => handlerStatus(logger, method, error);

  const handlers: GatewayServiceHandlers = {
    // The pass-through methods (GetFeature, ListFeatures, RecordRoute, RouteChat, WatchStats)
    // hand the peer the client's message bytes and the client the peer's (@cloudrun-grpc/proto
    // pass-through.ts): the same wire layout, so nothing is decoded and encoded again.
    GetFeature(call, callback) {
      const metadata = routeMetadata(call.metadata, (error) =>
        callback(failed("GetFeature", error)),
      );
      if (!metadata) return;
      ask<Buffer>("route", (done) =>
        route.makeUnaryRequest(
          peerPath("GetFeature"),
          keepBytes,
          keepBytes,
          call.request,
          metadata,
          downstream(call),
          done,
        ),
      ).then(
        (response) => callback(null, response),
        (error) => callback(failed("GetFeature", error)),
      );
    },

    ListFeatures(call) {
      const upstream = route.makeServerStreamRequest(
        peerPath("ListFeatures"),
        keepBytes,
        keepBytes,
        call.request,
        new grpc.Metadata(),
        downstream(call),
      );
      forwardResponses("route", upstream, call, keepBytes);
    },

    RecordRoute(call, callback) {
      const metadata = routeMetadata(call.metadata, (error) =>
        callback(failed("RecordRoute", error)),
      );
      if (!metadata) return;
      // route is called with explicit ends, and the gateway alone sends route the end_of_route
      // message, once its own client's stream has ended complete (no reset with its
      // half-close). A client's own end_of_route is never passed on: a client that sends it
      // and then cancels has not finished its route, and a cancel of this call (grpc-js sends
      // a half-close and a reset) never reaches route with the message before it.
      metadata.set(routeEndHeader, explicitRouteEnd);
      const clientEndsExplicitly = call.metadata.get(routeEndHeader)[0] === explicitRouteEnd;
      let clientSaidEnd = false;
      let answered = false;
      const answer = (error: grpc.ServiceError | StatusError | null, response?: Buffer) => {
        if (answered) return;
        answered = true;
        // The route call is over; stop reading what the client still sends.
        stopReading();
        if (error) callback(error);
        else if (response === undefined)
          callback(new StatusError(grpc.status.INTERNAL, "route: empty response"));
        else callback(null, response);
      };
      const upstream = route.makeClientStreamRequest(
        peerPath("RecordRoute"),
        keepBytes,
        keepBytes,
        metadata,
        downstream(call),
        (error, response) => answer(error ? fromPeer("route", error) : null, response),
      );
      /** Refuses the client's stream: route's call is cancelled, the client told why. */
      const refuse = (details: string) => {
        answer(invalidArgument(details));
        upstream.cancel();
      };
      const stopReading = forwardRequests(
        call,
        upstream,
        (message: Buffer) => {
          if (clientSaidEnd) {
            refuse("nothing may follow the end_of_route message");
            return undefined;
          }
          // Well-formed already (the method's deserializer checked it); a known field with
          // another wire type than the contract's is refused.
          let shape: RecordRouteRequestShape;
          try {
            shape = recordRouteRequestShape(message);
          } catch (error) {
            refuse(`a RecordRouteRequest's ${(error as Error).message}`);
            return undefined;
          }
          const { hasPoint, endOfRoute } = shape;
          if (endOfRoute) {
            if (hasPoint) refuse("the end_of_route message carries no point");
            clientSaidEnd = true;
            return undefined;
          }
          return message;
        },
        {
          // In explicit mode the client's stream is a route only with its end_of_route; without
          // it, route (told no end) refuses it.
          lastMessage: () => (clientEndsExplicitly && !clientSaidEnd ? undefined : endOfRouteBytes),
        },
      );
    },

    RouteChat(call) {
      const upstream = route.makeBidiStreamRequest(
        peerPath("RouteChat"),
        keepBytes,
        keepBytes,
        new grpc.Metadata(),
        downstream(call),
      );
      forwardRequests(call, upstream, keepBytes);
      forwardResponses("route", upstream, call, keepBytes);
    },

    GetStats(call, callback) {
      ask<stats.GetStatsResponse__Output>("stats", (done) =>
        stats.GetStats({ topN: call.request.topN }, downstream(call), done),
      ).then(
        ({ snapshot }) => callback(null, { snapshot }),
        (error) => callback(failed("GetStats", error)),
      );
    },

    WatchStats(call) {
      const upstream = stats.makeServerStreamRequest(
        peerPath("WatchStats"),
        keepBytes,
        keepBytes,
        call.request,
        new grpc.Metadata(),
        downstream(call),
      );
      watches.add(call, () => upstream.cancel());
      forwardResponses("stats", upstream, call, keepBytes);
    },

    async DescribeArea(call, callback) {
      try {
        // Checked here, not left to the peers: both get the rectangle, and which one's
        // INVALID_ARGUMENT arrived first would decide the answer.
        const { rectangle } = call.request;
        requireRectangle(rectangle);
        const topN = requireTopN(call.request.topN);
        const listing = route.ListFeatures({ rectangle }, downstream(call));
        let lookup: grpc.ClientUnaryCall | undefined;
        const lookups = ask<stats.GetStatsResponse__Output>("stats", (done) => {
          lookup = stats.GetStats(
            { topN: maxTopN, within: rectangle, namedOnly: true },
            downstream(call),
            done,
          );
          return lookup;
        });
        // When one fails the answer is that failure: stop the other's work at once.
        const [named, looked] = await Promise.all([collectFeatures(listing), lookups]).catch(
          (error: unknown) => {
            listing.cancel();
            lookup?.cancel();
            throw error;
          },
        );
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
    endWatches: () => watches.endAll("gateway instance is shutting down; watch again"),
  };
}

/**
 * Metadata for a call to route on behalf of a client's call: the client's idempotency key,
 * so a repeat of the client's call counts once at route. A malformed key goes to `refuse`
 * (INVALID_ARGUMENT) and there is no call to make: undefined.
 */
function routeMetadata(
  incoming: grpc.Metadata,
  refuse: (error: unknown) => void,
): grpc.Metadata | undefined {
  let key: string | undefined;
  try {
    key = idempotencyKeyOf(incoming);
  } catch (error) {
    refuse(error);
    return undefined;
  }
  const metadata = new grpc.Metadata();
  if (key !== undefined) metadata.set(idempotencyKeyHeader, key);
  return metadata;
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
