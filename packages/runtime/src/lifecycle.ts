// A service's life, in two parts:
//   startService  a built service (ServiceSetup) → a running server whose stop() drains within
//                 the grace period and then runs the service's own clean-up; a test builds a
//                 service with its factory, starts it on 127.0.0.1:0 and calls it in-process;
//   runService    the process shell around it: env → config (bad config: exit 2, one line per
//                 variable), the logger, the factory, start, SIGTERM/SIGINT (caught first,
//                 whatever the phase) → stop → every log line written out → exit.

import type { ServiceRegistration } from "@cloudrun-grpc/proto";
import type * as grpc from "@grpc/grpc-js";
import type { z } from "zod";
import type { EndedCall } from "./call-observer.js";
import { loadConfigOrExit, type ServerEnv } from "./config.js";
import { createLogger, type Logger, writeOutLogs } from "./logger.js";
import type { Readiness } from "./readiness.js";
import { logCallEnds, rpcLogOptions } from "./rpc-log.js";
import { startGrpcServer } from "./server.js";
import { recordServerCalls, startTelemetry, type Telemetry } from "./telemetry.js";

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
   * SHUTDOWN_GRACE_MS + 2.1 s with the last statuses and the logs written out: 8.1 s with the
   * default 6 s, inside Cloud Run's 10 s.
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

/** What learns of each call's end: its log line, then telemetry (a no-op while it is off). */
function callEndSubscribers(
  setup: ServiceSetup,
  config: ServerEnv,
  logger: Logger,
): (ended: EndedCall) => void {
  const log = logCallEnds({ ...rpcLogOptions(config, logger), callerOf: setup.callerOf });
  const served = new Set(
    setup.services.flatMap((service) =>
      Object.values(service.definition).map((method) => method.path),
    ),
  );
  const record = recordServerCalls({ served, callerOf: setup.callerOf });
  return (ended) => {
    log(ended);
    record(ended);
  };
}

/**
 * Starts a built service on config.HOST:config.PORT. server.ts installs the call observer
 * first, always, whatever logging is configured: the call's context is set before anything
 * else runs for it, and it sees every status (counting, cancel propagation, the call lines
 * and the spans hang on it). If the server cannot start (port taken), the service's
 * afterShutdown still runs, so nothing the factory opened is left behind, and the error is
 * thrown.
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
      onCallEnd: callEndSubscribers(setup, config, logger),
      serverOptions: { interceptors: setup.interceptors ?? [] },
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

/** What runService may be given besides the service. */
export interface RunOptions {
  /**
   * SIGTERM/SIGINT as caught already by the caller (catchStopSignals, or the same few lines
   * at the top of a main.ts that loads the service's modules after them). By default
   * runService catches them itself, before anything else it does.
   */
  stopSignal?: Promise<NodeJS.Signals>;
}

/**
 * The first SIGTERM or SIGINT from now on. The listeners stay, so a second signal is caught
 * and ignored too (a second Ctrl-C does not cut the drain short). Until a process has a
 * listener, Node's own handler ends it at once on either signal: killed by the signal (exit
 * status 143 or 130), nothing drained, asynchronous log lines lost. So this comes first.
 */
export function catchStopSignals(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.on("SIGTERM", resolve);
    process.on("SIGINT", resolve);
  });
}

/**
 * The whole life of a service process (main.ts is one call of this): config from env (bad
 * config: exit 2, one line per variable), the logger, the service from its factory, the server
 * on HOST:PORT, and on SIGTERM (Cloud Run's stop signal) or SIGINT a drain and exit 0, in
 * whatever phase the signal comes: before the factory runs (nothing is built), while the
 * service starts (it is stopped once started), or while it serves. A failure while starting
 * exits 1 with the reason logged. Every line is written out, in order, before the exit.
 */
export async function runService<Schema extends z.ZodType<ServerEnv>>(
  name: string,
  schema: Schema,
  factory: ServiceFactory<z.infer<Schema>>,
  options: RunOptions = {},
): Promise<void> {
  const stopSignal = options.stopSignal ?? catchStopSignals();
  const config = loadConfigOrExit(name, schema);
  const logger = createLogger({
    service: config.K_SERVICE ?? name,
    level: config.LOG_LEVEL,
    format: config.LOG_FORMAT,
    revision: config.K_REVISION,
    projectId: config.GOOGLE_CLOUD_PROJECT,
  });
  // Once: the first reason to exit wins. The lines go out first (bounded: a reader that stopped
  // reading must not keep the process).
  let exiting = false;
  let telemetry: Telemetry | undefined;
  const exit = (code: number) => {
    if (exiting) return;
    exiting = true;
    // The last spans and metrics go out while the logs are written out, within the same
    // second: a stop's budget (SHUTDOWN_GRACE_MS + 2.1 s, test/infra.test.ts) is unchanged.
    void Promise.all([
      telemetry?.shutdown(900),
      new Promise<void>((resolve) => writeOutLogs(logger, 1000, resolve)),
    ]).then(() => process.exit(code));
  };

  // A signal that came while the modules loaded (main.ts caught it): build nothing. Node loads
  // them synchronously, so the listener may not have run yet: libuv reads pending signals in
  // its poll phase. Two setImmediate turns make sure one whole poll phase has passed (the
  // first may come right after the poll phase that is running now).
  let early: NodeJS.Signals | undefined;
  void stopSignal.then((signal) => {
    early = signal;
  });
  for (let turn = 0; turn < 2; turn += 1) await new Promise((resolve) => setImmediate(resolve));
  if (early !== undefined) {
    logger.info({ signal: early }, "stopping");
    logger.info("stopped");
    exit(0);
    return;
  }

  const starting = (async () => {
    // Before the factory: a service's own instruments (route's queue depth) need the meter.
    // A service that cannot export still serves: telemetry is not worth an outage.
    telemetry = await startTelemetry(config, {
      serviceName: config.OTEL_SERVICE_NAME ?? config.K_SERVICE ?? name,
      serviceVersion: config.K_REVISION,
      cloudRunService: config.K_SERVICE,
      projectId: config.GOOGLE_CLOUD_PROJECT,
      logger,
    }).catch((error: unknown) => {
      logger.error({ err: error }, "telemetry could not start: serving without it");
      return undefined;
    });
    return startService(await factory(config, { logger }), { config, logger });
  })();
  // A second signal changes nothing: the drain is bounded already.
  void stopSignal.then(async (signal) => {
    logger.info({ signal }, "stopping");
    let running: RunningService;
    try {
      // Signalled while starting: stopped as soon as it has started.
      running = await starting;
    } catch {
      return; // Failed to start: reported below.
    }
    try {
      await running.stop();
      logger.info("stopped");
      exit(0);
    } catch (error) {
      logger.error({ err: error }, "error while stopping");
      exit(1);
    }
  });
  try {
    await starting;
  } catch (error) {
    logger.fatal({ err: error }, "failed to start");
    exit(1);
  }
}
