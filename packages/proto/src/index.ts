// The contracts, loaded once per process. This is the only module that knows where the
// .proto files are; everything else asks it for service definitions and clients.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { GatewayServiceClient, GatewayServiceHandlers } from "./generated/gateway/v1/index.js";
import type { ProtoGrpcType as GatewayProto } from "./generated/gateway.js";
import type { ProtoGrpcType as RouteGuideProto } from "./generated/route_guide.js";
import type {
  RouteGuideServiceClient,
  RouteGuideServiceHandlers,
} from "./generated/routeguide/v1/index.js";
import type { StatsServiceClient, StatsServiceHandlers } from "./generated/stats/v1/index.js";
import type { ProtoGrpcType as StatsProto } from "./generated/stats.js";
import loaderOptions from "./loader-options.json" with { type: "json" };
import { withPassThrough } from "./pass-through.js";

export type * as gateway from "./generated/gateway/v1/index.js";
export type * as routeguide from "./generated/routeguide/v1/index.js";
export type * as stats from "./generated/stats/v1/index.js";
export * from "./pass-through.js";

/** Where the .proto files live: copied next to dist/ by the build (scripts/copy-protos.mjs). */
export const protosDir = fileURLToPath(new URL("../protos/", import.meta.url));

const protoFiles = [
  "routeguide/v1/route_guide.proto",
  "stats/v1/stats.proto",
  "gateway/v1/gateway.proto",
];

// The JSON names the types the generator was told to use ("Number", "String"); the loader
// wants the constructors themselves.
const typeByName = { Number, String } as const;

/** The proto-loader definition of every contract (also what server reflection serves). */
export const packageDefinition: protoLoader.PackageDefinition = protoLoader.loadSync(protoFiles, {
  keepCase: loaderOptions.keepCase,
  longs: typeByName[loaderOptions.longs as keyof typeof typeByName],
  enums: typeByName[loaderOptions.enums as keyof typeof typeByName],
  defaults: loaderOptions.defaults,
  oneofs: loaderOptions.oneofs,
  includeDirs: [protosDir],
});

const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as GatewayProto &
  RouteGuideProto &
  StatsProto;

/** Fully qualified service names, as health checks and reflection know them. */
export const serviceNames = {
  routeGuide: "routeguide.v1.RouteGuideService",
  stats: "stats.v1.StatsService",
  gateway: "gateway.v1.GatewayService",
} as const;

export type ServiceName = (typeof serviceNames)[keyof typeof serviceNames];

/**
 * Metadata the contracts define (see the .proto comments): a client's idempotency key, and
 * the RecordRoute mode in which a route ends with an explicit end_of_route message.
 */
export const idempotencyKeyHeader = "idempotency-key";
export const routeEndHeader = "x-route-end";
export const explicitRouteEnd = "explicit";

/**
 * The methods of `service` that the contract marks safe to call again (`idempotency_level`
 * IDEMPOTENT or NO_SIDE_EFFECTS in the .proto) and whose request is one message: what a
 * client may retry by itself. Client streams are never retried.
 */
export function retryableMethods(service: ServiceName): string[] {
  const definition = packageDefinition[service] as protoLoader.ServiceDefinition;
  return Object.entries(definition)
    .filter(([, method]) => {
      const level = (method.options as { idempotency_level?: string }).idempotency_level;
      return !method.requestStream && (level === "IDEMPOTENT" || level === "NO_SIDE_EFFECTS");
    })
    .map(([, method]) => method.path.split("/")[2] as string);
}

/** A service as a server registers it: its name, its definition, and its typed handlers. */
export interface ServiceRegistration<Handlers extends grpc.UntypedServiceImplementation> {
  name: ServiceName;
  definition: grpc.ServiceDefinition;
  handlers: Handlers;
}

export function routeGuideService(
  handlers: RouteGuideServiceHandlers,
): ServiceRegistration<RouteGuideServiceHandlers> {
  return {
    name: serviceNames.routeGuide,
    definition: loaded.routeguide.v1.RouteGuideService.service,
    handlers,
  };
}

export function statsService(
  handlers: StatsServiceHandlers,
): ServiceRegistration<StatsServiceHandlers> {
  return { name: serviceNames.stats, definition: loaded.stats.v1.StatsService.service, handlers };
}

/**
 * The gateway's handlers: the pass-through methods (pass-through.ts) take and give the
 * messages' bytes, the others decoded messages.
 */
export interface GatewayHandlers extends grpc.UntypedServiceImplementation {
  GetFeature: grpc.handleUnaryCall<Buffer, Buffer>;
  ListFeatures: grpc.handleServerStreamingCall<Buffer, Buffer>;
  RecordRoute: grpc.handleClientStreamingCall<Buffer, Buffer>;
  RouteChat: grpc.handleBidiStreamingCall<Buffer, Buffer>;
  WatchStats: grpc.handleServerStreamingCall<Buffer, Buffer>;
  GetStats: GatewayServiceHandlers["GetStats"];
  DescribeArea: GatewayServiceHandlers["DescribeArea"];
}

export function gatewayService(handlers: GatewayHandlers): ServiceRegistration<GatewayHandlers> {
  return {
    name: serviceNames.gateway,
    definition: withPassThrough(loaded.gateway.v1.GatewayService.service),
    handlers,
  };
}

/** Typed client constructors; `target` is a grpc-js target such as `127.0.0.1:50052`. */
export function createRouteGuideClient(
  target: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
): RouteGuideServiceClient {
  return new loaded.routeguide.v1.RouteGuideService(target, credentials, options);
}

export function createStatsClient(
  target: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
): StatsServiceClient {
  return new loaded.stats.v1.StatsService(target, credentials, options);
}

export function createGatewayClient(
  target: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
): GatewayServiceClient {
  return new loaded.gateway.v1.GatewayService(target, credentials, options);
}

export type {
  GatewayServiceClient,
  GatewayServiceHandlers,
  RouteGuideServiceClient,
  RouteGuideServiceHandlers,
  StatsServiceClient,
  StatsServiceHandlers,
};
