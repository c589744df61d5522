// A service's life, in two parts:
//   startService  a built service (ServiceSetup) → a running server whose stop() drains within
//                 the grace period and then runs the service's own clean-up; a test builds a
//                 service with its factory, starts it on 127.0.0.1:0 and calls it in-process;
//   runService    the process shell around it: env → config (bad config: exit 2, one line per
//                 variable), the logger, the factory, start, SIGTERM/SIGINT → stop → exit.

import type { ServiceRegistration } from "@cloudrun-grpc/proto";
import type * as grpc from "@grpc/grpc-js";
import type { z } from "zod";
import { observeCalls } from "./call-observer.js";
import { loadConfigOrExit, type ServerEnv } from "./config.js";
import { createLogger, type Logger } from "./logger.js";
import type { Readiness } from "./readiness.js";
import { logCallEnds } from "./rpc-log.js";
import { startGrpcServer } from "./server.js";

/** What a service's factory builds: everything its server needs, nothing started yet but its own work. */
export interface ServiceSetup {
  // biome-ignore lint/suspicious/noExplicitAny: each registration carries its own typed handlers
  services: ServiceRegistration<any>[];
  /** Server interceptors, e.g. the auth check, run for every call before its handler. */
  interceptors?: grpc.ServerInterceptor[];
  onDrain?: () => void;
  /** Whether the service can work now; its health name follows it. Absent: always ready. */
  readiness?: Readiness;
  /** Who made a call, once authenticated (for the per-call log line). */
  callerOf?: (metadata: grpc.Metadata) => string | undefined;
  /**
   * After the server has closed: flush what must not be lost, close clients. Gets what is
   * left of the grace period (at least 1 s), so the whole stop stays within
   * SHUTDOWN_GRACE_MS + 1 s, inside Cloud Run's 10 s when the grace is the default 8 s.
   */
  afterShutdown?: (remainingMs: number) => Promise<void>;
}

/** What every service factory is given besides its config. */
export interface ServiceDeps {
  logger: Logger;
}

/** Builds a service from its parsed config: `createRouteService(config, { logger })`. */
export type ServiceFactory<Config> = (
  config: Config,
  deps: ServiceDeps,
) => Promise<ServiceSetup> | ServiceSetup;

export interface RunningService {
  /** The port actually bound (PORT=0 picks a free one). */
  port: number;
  /**
   * Drains (health NOT_SERVING, GOAWAY, in-flight calls get SHUTDOWN_GRACE_MS, then the rest
   * end UNAVAILABLE), then the service's afterShutdown with the rest of the grace period.
   * Calling it again returns the same promise.
   */
  stop(): Promise<void>;
}

/**
 * Starts a built service on config.HOST:config.PORT. The call observer is installed first,
 * always, whatever logging is configured: the call's context is set before anything else runs
 * for it, and it sees every status (counting, cancel propagation and the call lines hang on
 * it). If the server cannot start (port taken), the service's afterShutdown still runs, so
 * nothing the factory opened is left behind, and the error is thrown.
 */
export async function startService(
  setup: ServiceSetup,
  { config, logger }: { config: ServerEnv; logger: Logger },
): Promise<RunningService> {
  let server: Awaited<ReturnType<typeof startGrpcServer>>;
  try {
    server = await startGrpcServer({
      host: config.HOST,
      port: config.PORT,
      logger,
      shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
      services: setup.services,
      onDrain: setup.onDrain,
      readiness: setup.readiness,
      channelz: config.CHANNELZ_ENABLED,
      serverOptions: {
        interceptors: [
          observeCalls({
            logger,
            onEnd: logCallEnds({
              logger,
              sampleRate: config.LOG_RPC_SAMPLE_RATE,
              callerOf: setup.callerOf,
            }),
          }),
          ...(setup.interceptors ?? []),
        ],
      },
    });
  } catch (error) {
    await setup.afterShutdown?.(1000).catch(() => {});
    throw error;
  }
  let stopped: Promise<void> | undefined;
  return {
    port: server.port,
    stop: () => {
      stopped ??= (async () => {
        const stopBy = Date.now() + config.SHUTDOWN_GRACE_MS;
        await server.shutdown();
        await setup.afterShutdown?.(Math.max(1000, stopBy - Date.now()));
      })();
      return stopped;
    },
  };
}

/**
 * The whole life of a service process (main.ts is one call of this): config from env (bad
 * config: exit 2, one line per variable), the logger, the service from its factory, the server
 * on HOST:PORT, and on SIGTERM (Cloud Run's stop signal) or SIGINT a drain and exit 0. A
 * failure while starting exits 1 with the reason logged.
 */
export async function runService<Schema extends z.ZodType<ServerEnv>>(
  name: string,
  schema: Schema,
  factory: ServiceFactory<z.infer<Schema>>,
): Promise<void> {
  const config = loadConfigOrExit(name, schema);
  const logger = createLogger({
    service: config.K_SERVICE ?? name,
    level: config.LOG_LEVEL,
    format: config.LOG_FORMAT,
    revision: config.K_REVISION,
    projectId: config.GOOGLE_CLOUD_PROJECT,
  });
  // The logger writes asynchronously: let what it holds out before the process ends (bounded).
  const exit = (code: number) => {
    const timer = setTimeout(() => process.exit(code), 1000);
    logger.flush(() => {
      clearTimeout(timer);
      process.exit(code);
    });
  };
  let running: RunningService;
  try {
    running = await startService(await factory(config, { logger }), { config, logger });
  } catch (error) {
    logger.fatal({ err: error }, "failed to start");
    exit(1);
    return;
  }
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    // A second signal while stopping changes nothing (the drain is bounded already).
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping");
    running.stop().then(
      () => {
        logger.info("stopped");
        exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, "error while stopping");
        exit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
