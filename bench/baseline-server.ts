// The baselines, each run as a process of its own (so its CPU and memory are its own):
//   echo          bare grpc-js serving gateway.v1 and routeguide.v1's GetFeature, ListFeatures and
//                 RecordRoute from the same features file as route, with the same messages
//                 (baseline A, and the backend of baseline B)
//   proxy <port>  bare grpc-js serving gateway.v1 by calling the echo server at <port> with a
//                 plain grpc-js client: no interceptors, no auth, no logs, no retry policy
//                 (baseline B's middle hop)
//                 With BENCH_PROXY_ADD (comma-separated), the proxy takes on pieces of our
//                 runtime one at a time, to measure each (pnpm bench ablation): `policy` (the
//                 peer channel of connectPeer: round_robin, retry policy, keepalive),
//                 `downstream` (deadline and cancellation bound to the served call), `log`
//                 (the call observer logging its ends, the peer interceptor outgoingCalls, a line per
//                 call), `log0` (the same with LOG_RPC_SAMPLE_RATE=0), `logAsync` (as log,
//                 the logger writing through a 16 KiB buffer instead of a write per line),
//                 `als` (an AsyncLocalStorage.run around each handler, as call-context.ts
//                 does), `passthrough` (a server and a client interceptor that only pass on),
//                 `telemetry` (with `log`: OpenTelemetry on, exporting to
//                 OTEL_EXPORTER_OTLP_ENDPOINT at the default sampling ratio, with the RPC
//                 duration histograms; without it the call observer's telemetry subscriber is
//                 still there, off, as in every service)
//   rest-h1       the same GetFeature as JSON over HTTP/1.1 (node:http, keep-alive)
//   rest-h2       the same over h2c (node:http2)
// Prints one JSON line {"port": n} once it listens.
import { AsyncLocalStorage } from "node:async_hooks";
import { readFileSync, write, writeSync } from "node:fs";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type OutgoingHttpHeaders,
} from "node:http";
import { createServer as createHttp2Server, type Http2ServerRequest } from "node:http2";
import type { AddressInfo } from "node:net";
import { packageDefinition, serviceNames } from "@cloudrun-grpc/proto";
import {
  connectPeer,
  createLogger,
  downstream,
  envSchema,
  logCallEnds,
  observeCalls,
  outgoingCalls,
  parseConfig,
  parsePeerUrl,
  recordServerCalls,
  silentLogger,
  startTelemetry,
  telemetryEnv,
} from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";

interface Point {
  latitude: number;
  longitude: number;
}
interface Feature {
  name: string;
  location: Point;
}

const features: Feature[] = JSON.parse(
  readFileSync(new URL("../services/route/data/features.json", import.meta.url), "utf8"),
);
const byLocation = new Map(
  features.map((f) => [`${f.location.latitude},${f.location.longitude}`, f]),
);

function lookup(point: Point | null | undefined): { feature: Feature } {
  const location = { latitude: point?.latitude ?? 0, longitude: point?.longitude ?? 0 };
  const found = byLocation.get(`${location.latitude},${location.longitude}`);
  return { feature: { name: found?.name ?? "", location } };
}

function within(rectangle: { lo?: Point | null; hi?: Point | null } | null | undefined): Feature[] {
  const lo = rectangle?.lo ?? { latitude: 0, longitude: 0 };
  const hi = rectangle?.hi ?? { latitude: 0, longitude: 0 };
  const [minLat, maxLat] = [Math.min(lo.latitude, hi.latitude), Math.max(lo.latitude, hi.latitude)];
  const [minLon, maxLon] = [
    Math.min(lo.longitude, hi.longitude),
    Math.max(lo.longitude, hi.longitude),
  ];
  return features.filter(
    ({ location: { latitude, longitude } }) =>
      latitude >= minLat && latitude <= maxLat && longitude >= minLon && longitude <= maxLon,
  );
}

const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  gateway: { v1: { GatewayService: grpc.ServiceClientConstructor } };
  routeguide: { v1: { RouteGuideService: grpc.ServiceClientConstructor } };
};

async function writeAll(call: grpc.ServerWritableStream<unknown, unknown>, list: Feature[]) {
  for (const feature of list) {
    if (call.cancelled) return;
    if (!call.write({ feature })) await new Promise((resolve) => call.once("drain", resolve));
  }
  call.end();
}

// biome-ignore lint/suspicious/noExplicitAny: untyped handlers over the loaded definitions
type Any = any;

const echoHandlers: grpc.UntypedServiceImplementation = {
  GetFeature(call: Any, callback: Any) {
    callback(null, lookup(call.request.point));
  },
  ListFeatures(call: Any) {
    void writeAll(call, within(call.request.rectangle));
  },
  RecordRoute(call: Any, callback: Any) {
    let points = 0;
    let featureCount = 0;
    call.on("data", (message: Any) => {
      points += 1;
      if (lookup(message.point).feature.name) featureCount += 1;
    });
    call.on("end", () =>
      callback(null, {
        summary: { pointCount: points, featureCount, distanceMeters: 0, elapsedSeconds: 0 },
      }),
    );
  },
};

const added = new Set((process.env.BENCH_PROXY_ADD ?? "").split(",").filter(Boolean));
const logging = added.has("log") || added.has("log0") || added.has("logAsync");
/** Lines gathered and written to stdout in one write per 16 KiB or per turn of the loop. */
function bufferedStdout() {
  let pending: string[] = [];
  let size = 0;
  let writing = false;
  const flush = () => {
    if (writing || pending.length === 0) return;
    const chunk = pending.join("");
    pending = [];
    size = 0;
    writing = true;
    write(1, chunk, () => {
      writing = false;
      flush();
    });
  };
  process.on("exit", () => {
    if (pending.length > 0) writeSync(1, pending.join(""));
  });
  return {
    write(line: string) {
      pending.push(line);
      size += line.length;
      if (size >= 16 * 1024) flush();
      else if (pending.length === 1) setImmediate(flush);
    },
  };
}

const logger = createLogger({
  service: "proxy",
  level: "info",
  ...(added.has("logAsync") ? { destination: bufferedStdout() } : {}),
});
const rpcLog = { logger, sampleRate: added.has("log0") ? 0 : 1 };
const storage = new AsyncLocalStorage<object>();
const inContext = <T>(work: () => T): T => (added.has("als") ? storage.run({}, work) : work());

const passServer: grpc.ServerInterceptor = (_method, call) =>
  new grpc.ServerInterceptingCall(call, {
    start: (next) => next({ onReceiveMessage: (message, pass) => pass(message) }),
    sendMessage: (message, pass) => pass(message),
  });
const passClient: grpc.Interceptor = (options, nextCall) =>
  new grpc.InterceptingCall(nextCall(options), {
    start: (metadata, listener, next) => next(metadata, listener),
    sendMessage: (message, pass) => pass(message),
  });
if (added.has("telemetry")) {
  // Its start line would come before {"port": n}, which the bench reads first.
  await startTelemetry(parseConfig(envSchema(telemetryEnv), process.env), {
    serviceName: "proxy",
    logger: silentLogger(),
  });
}
const logEnd = logCallEnds(rpcLog);
const recordEnd = recordServerCalls({
  served: new Set(
    Object.values(loaded.gateway.v1.GatewayService.service as grpc.ServiceDefinition).map(
      (method) => method.path,
    ),
  ),
});
const serverInterceptors = [
  ...(logging
    ? [
        observeCalls({
          logger: rpcLog.logger,
          onEnd: (ended) => {
            logEnd(ended);
            recordEnd(ended);
          },
        }),
      ]
    : []),
  ...(added.has("passthrough") ? [passServer] : []),
];

function proxyHandlers(backendPort: number): grpc.UntypedServiceImplementation {
  const target = `127.0.0.1:${backendPort}`;
  const interceptors = [
    ...(logging ? [outgoingCalls({ peer: "backend", rpcLog })] : []),
    ...(added.has("passthrough") ? [passClient] : []),
  ];
  const backend = (
    added.has("policy")
      ? connectPeer(
          parsePeerUrl(`http://${target}`),
          (address, credentials, options) =>
            new loaded.routeguide.v1.RouteGuideService(address, credentials, options),
          { service: serviceNames.routeGuide, interceptors },
        )
      : new loaded.routeguide.v1.RouteGuideService(target, grpc.credentials.createInsecure(), {
          interceptors,
        })
  ) as Any;
  const options = (call: Any): grpc.CallOptions =>
    added.has("downstream") ? downstream(call) : {};
  return {
    GetFeature(call: Any, callback: Any) {
      inContext(() =>
        backend.GetFeature(
          { point: call.request.point },
          options(call),
          (error: Any, response: Any) =>
            error ? callback(error) : callback(null, { feature: response.feature }),
        ),
      );
    },
    ListFeatures(call: Any) {
      const upstream = backend.ListFeatures({ rectangle: call.request.rectangle }, options(call));
      upstream.on("data", (message: Any) => {
        if (!call.write({ feature: message.feature })) {
          upstream.pause();
          call.once("drain", () => upstream.resume());
        }
      });
      upstream.on("error", (error: Any) => call.destroy(error));
      upstream.on("end", () => call.end());
    },
    RecordRoute(call: Any, callback: Any) {
      const upstream = backend.RecordRoute(options(call), (error: Any, response: Any) =>
        error ? callback(error) : callback(null, { summary: response.summary }),
      );
      call.on("data", (message: Any) => {
        if (!upstream.write({ point: message.point })) {
          call.pause();
          upstream.once("drain", () => call.resume());
        }
      });
      call.on("end", () => upstream.end());
    },
  };
}

function listen(server: grpc.Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) =>
      error ? reject(error) : resolve(port),
    ),
  );
}

/** What the handler uses of an HTTP/1.1 or an HTTP/2 response. (A union of the two is not
 * callable under @types/node 26: their writeHead overloads differ.) */
interface JsonResponse {
  writeHead(statusCode: number, headers: OutgoingHttpHeaders): unknown;
  end(body: string): unknown;
}

function restHandler(request: IncomingMessage | Http2ServerRequest, response: JsonResponse) {
  const chunks: Buffer[] = [];
  request.on("data", (chunk: Buffer) => chunks.push(chunk));
  request.on("end", () => {
    let body: string;
    try {
      const { point } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { point?: Point };
      body = JSON.stringify(lookup(point));
    } catch {
      response.writeHead(400, { "content-type": "application/json" });
      response.end('{"error":"bad JSON"}');
      return;
    }
    response.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
    });
    response.end(body);
  });
}

const [mode, backendPort] = process.argv.slice(2);
let port: number;
if (mode === "echo" || mode === "proxy") {
  const server = new grpc.Server(mode === "proxy" ? { interceptors: serverInterceptors } : {});
  const handlers = mode === "echo" ? echoHandlers : proxyHandlers(Number(backendPort));
  server.addService(loaded.gateway.v1.GatewayService.service, handlers);
  if (mode === "echo") server.addService(loaded.routeguide.v1.RouteGuideService.service, handlers);
  port = await listen(server);
} else if (mode === "rest-h1" || mode === "rest-h2") {
  const server =
    mode === "rest-h1"
      ? createHttpServer({ keepAliveTimeout: 60_000 }, restHandler)
      : createHttp2Server({ peerMaxConcurrentStreams: 1000 }, restHandler);
  port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
} else {
  throw new Error(`unknown mode ${mode}: echo | proxy <port> | rest-h1 | rest-h2`);
}
console.log(JSON.stringify({ port }));
process.on("SIGTERM", () => process.exit(0));
