// The gRPC server every service runs: its own services plus grpc.health.v1 (Cloud Run's
// probes) and server reflection, on h2c at host:port, with a graceful drain.

import { packageDefinition, type ServiceRegistration } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { type EndedCall, observeCalls } from "./call-observer.js";
import type { Logger } from "./logger.js";
import { OpenCalls } from "./open-calls.js";
import type { Readiness } from "./readiness.js";

export interface GrpcServerOptions {
  host: string;
  port: number;
  // biome-ignore lint/suspicious/noExplicitAny: each registration carries its own typed handlers
  services: ServiceRegistration<any>[];
  logger: Logger;
  /** How long in-flight calls may run after a drain starts before they are cancelled. */
  shutdownGraceMs: number;
  /** Called when a drain starts: end long-lived streams (watches) so their clients reconnect. */
  onDrain?: () => void;
  /** Extra grpc-js server options (interceptors, after the call observer; limits). */
  serverOptions?: grpc.ServerOptions;
  /** Told how each call ended (the call lines): the call observer's subscriber. */
  onCallEnd?: (ended: EndedCall) => void;
  /** When given, the services' own health names follow it (NOT_SERVING while not ready). */
  readiness?: Readiness;
  /** Serve channelz (grpc.channelz.v1) too. */
  channelz?: boolean;
}

export interface RunningGrpcServer {
  /** The port actually bound (useful with PORT=0). */
  port: number;
  /**
   * Drains: health turns NOT_SERVING, new calls are refused (clients get GOAWAY), in-flight
   * calls get `shutdownGraceMs` to finish, then the rest are cancelled. Resolves when closed.
   */
  shutdown(): Promise<void>;
}

/** Largest message accepted or sent; larger ones get RESOURCE_EXHAUSTED from grpc-js. */
export const maxMessageBytes = 4 * 1024 * 1024;

function listenAddress(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Makes a call to a method the server does not have run through the interceptors (auth
 * first), answered UNIMPLEMENTED only by a handler behind them. grpc-js itself answers such a
 * path before any interceptor runs (grpc-js 1.14 src/server.ts, _streamHandler and
 * _channelzHandler: `const handler = this._retrieveHandler(path); if (!handler) {
 * this._respondWithError(getUnimplementedStatusResponse(path), …); return; }`, and only then
 * `getServerInterceptingCall([...extraInterceptors, ...this.interceptors], …)`), so a caller
 * without a token could probe which methods exist. grpc-js has no public fallback handler:
 * this wraps the private _retrieveHandler (throws at start if a grpc-js upgrade removes it;
 * test/auth.test.ts fails if it stops working).
 */
export function routeUnknownMethodsThroughInterceptors(server: grpc.Server): void {
  const internals = server as unknown as { _retrieveHandler?: (path: string) => unknown };
  const retrieve = internals._retrieveHandler;
  if (typeof retrieve !== "function") {
    throw new Error("grpc-js's Server has no _retrieveHandler: unknown methods would skip auth");
  }
  internals._retrieveHandler = function (this: grpc.Server, path: string) {
    return (
      retrieve.call(this, path) ?? {
        // A stream both ways takes any number of messages (kept as bytes, never decoded).
        type: "bidi",
        path,
        serialize: (value: Buffer) => value,
        deserialize: (bytes: Buffer) => bytes,
        func: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
          // grpc-js's own words for it (getUnimplementedStatusResponse).
          call.emit("error", {
            code: grpc.status.UNIMPLEMENTED,
            details: `The server does not implement the method ${path}`,
          });
        },
      }
    );
  };
}

export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  const { logger } = options;
  const openCalls = new OpenCalls();
  const server = new grpc.Server({
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
    // Streams open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS). Node's
    // default is 2^32 - 1, so one connection could open streams until memory runs out. 1000 is
    // Cloud Run's highest max_concurrency (requests per instance; every open stream is one):
    // Cloud Run never sends more than that, even all on one connection, so the limit never
    // refuses what Cloud Run lets through, and a client that ignores it gets its extra streams
    // refused. A peer that respects it (grpc-js, node:http2) queues them on its own side.
    "grpc.max_concurrent_streams": 1000,
    ...options.serverOptions,
    // The call observer first, always: every call's context and end, and the open calls a
    // drain ends, in one pass (it sees every status sent, the drain's included).
    interceptors: [
      observeCalls({
        logger,
        openCalls,
        ...(options.onCallEnd ? { onEnd: options.onCallEnd } : {}),
      }),
      ...(options.serverOptions?.interceptors ?? []),
    ],
  });
  routeUnknownMethodsThroughInterceptors(server);
  const names = options.services.map((service) => service.name);
  for (const service of options.services) server.addService(service.definition, service.handlers);

  // "" is the whole server (the process can answer); each service also answers by its own
  // name, SERVING only while it is ready (what the startup probe asks for).
  const healthNames = ["", ...names];
  const serviceStatus = (ready: boolean) => (ready ? "SERVING" : "NOT_SERVING");
  const health = new HealthImplementation({
    "": "SERVING",
    ...Object.fromEntries(
      names.map((name) => [name, serviceStatus(options.readiness?.ready ?? true)]),
    ),
  });
  let draining = false;
  const unsubscribe = options.readiness?.subscribe((ready) => {
    if (draining) return;
    for (const name of names) health.setStatus(name, serviceStatus(ready));
    logger.info({ ready }, ready ? "ready: serving" : "not ready: health NOT_SERVING");
  });
  health.addToServer(server);
  new ReflectionService(packageDefinition, { services: names }).addToServer(server);
  // Channelz (grpc.channelz.v1): calls started, succeeded and failed per server, channel and
  // socket, for grpcdebug and the tests. Off by default; behind the same auth as any call.
  if (options.channelz) grpc.addAdminServicesToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      listenAddress(options.host, options.port),
      grpc.ServerCredentials.createInsecure(),
      (error, boundPort) => (error ? reject(error) : resolve(boundPort)),
    );
  });
  logger.info({ host: options.host, port, services: names }, "listening");

  let closed: Promise<void> | undefined;
  const shutdown = () => {
    closed ??= new Promise<void>((resolve) => {
      logger.info({ graceMs: options.shutdownGraceMs }, "draining");
      draining = true;
      unsubscribe?.();
      for (const name of healthNames) health.setStatus(name, "NOT_SERVING");
      options.onDrain?.();
      const deadline = setTimeout(() => {
        logger.warn(
          { calls: openCalls.size },
          "grace period over: ending the calls still running with UNAVAILABLE",
        );
        openCalls.endAll(
          grpc.status.UNAVAILABLE,
          "the server is shutting down: call again (another instance will answer)",
        );
        // A moment for those statuses to be written before the connections are closed.
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 100).unref();
      }, options.shutdownGraceMs);
      server.tryShutdown(() => {
        clearTimeout(deadline);
        resolve();
      });
    });
    return closed;
  };
  return { port, shutdown };
}
