// Starts gateway, route and stats as separate processes on loopback, each as Cloud Run would
// run it (`node dist/main.js`, config from env, PORT), and tells where each listens.
// `pnpm start` and the integration suite both start the system through here.
//
// A service's port is chosen here before it starts (so its URL, its token audience, is known
// in advance), and it counts as started when grpc.health.v1 answers SERVING for its own
// service name, as Cloud Run's startup probe asks (stats says so once its database is
// migrated). Nothing is read from its log lines, so it logs at whatever level it is given.
// Each service runs in its own process group, so a terminal's Ctrl-C reaches only the process
// that started it, which stops them in order (gateway first, stats last); and each ends by
// itself when that process is gone, however it ended (parent-watch.ts).
import { type ChildProcess, spawn } from "node:child_process";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { serviceNames } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { service as healthServiceDefinition } from "grpc-health-check";
import {
  type EmbeddedPostgres,
  type EmbeddedPostgresOptions,
  startEmbeddedPostgres,
} from "./embedded-postgres.js";
import { type StackAuth, startStackAuth } from "./local-auth.js";
import { freePort } from "./ports.js";

export { freePort };

/** A service of the stack (not to be confused with the gRPC service names of the protos). */
export type StackServiceName = "gateway" | "route" | "stats";

/** The name each service answers health checks under (its own gRPC service). */
export const healthNames: Record<StackServiceName, string> = {
  gateway: serviceNames.gateway,
  route: serviceNames.routeGuide,
  stats: serviceNames.stats,
};

export interface ServiceProcess {
  name: StackServiceName;
  port: number;
  /** e.g. http://127.0.0.1:50051: what peers and clients use. */
  url: string;
  child: ChildProcess;
  /** stats: the STATS_DATABASE_URL it was given (another stats can be given the same). */
  databaseUrl: string | undefined;
  /** Every stdout line so far (JSON log lines). */
  lines: string[];
  /**
   * Resolves with the exit code (or the signal name) when the process has ended and all it
   * printed has been read (every line is in `lines` and went through `onLine`).
   */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL if it is still running after `timeoutMs`. */
  stop(timeoutMs?: number): Promise<number | string>;
}

export interface StartServiceOptions {
  name: StackServiceName;
  /** A fixed port; by default a free one is chosen before the start. */
  port?: number;
  host?: string;
  /**
   * Extra environment. As a function, it gets the URL the service will have (its port is
   * chosen before it starts), e.g. for its token audience.
   */
  env?: Record<string, string> | ((url: string) => Record<string, string>);
  /** Called with each line the process prints, stdout and stderr alike. */
  onLine?: (service: StackServiceName, line: string, stream: "stdout" | "stderr") => void;
  /** How long to wait until the service's health check answers SERVING. */
  startTimeoutMs?: number;
  /** Aborting it while the service is starting kills the process and rejects. */
  signal?: AbortSignal;
}

const require = createRequire(import.meta.url);

/** The built entry point of a service (services/<name>/dist/main.js). */
export function serviceEntry(name: StackServiceName): string {
  return join(dirname(require.resolve(`@cloudrun-grpc/${name}/package.json`)), "dist", "main.js");
}

/** Preloaded into each service: it ends when the process that started it is gone. */
const parentWatch = new URL("./parent-watch.js", import.meta.url).href;

// How many times a start is tried on a new free port when another process took the chosen one
// between the choice and the service's bind.
const portAttempts = 3;

/** The service could not bind its port: something else listens there. */
class PortTaken extends Error {}

/**
 * Starts one service and waits until it is ready: its health check answers SERVING for its
 * own name (stats: its database is migrated). stats without STATS_DATABASE_URL in `env` gets an
 * embedded PostgreSQL server of its own in a temporary folder, stopped and removed when the
 * process ends (one exported in this process's environment is ignored, so no test ever lands
 * on a developer's database).
 */
export async function startService(options: StartServiceOptions): Promise<ServiceProcess> {
  const host = options.host ?? "127.0.0.1";
  for (let attempt = 1; ; attempt += 1) {
    if (options.signal?.aborted) throw startAborted(options.name, options.signal.reason);
    const port = options.port || (await freePort(host));
    let database: EmbeddedPostgres | undefined;
    try {
      // A fixed port someone already listens on is refused before any process starts: else
      // the health checks below could be answered by whatever listens there.
      if (options.port) await assertFree(host, port, options.name);
      const url = `http://${urlHost(host)}:${port}`;
      // A copy: the caller's object never gets this start's database URL.
      const env = { ...(typeof options.env === "function" ? options.env(url) : options.env) };
      if (options.name === "stats" && !env.STATS_DATABASE_URL) {
        database = await startEmbeddedPostgres();
        env.STATS_DATABASE_URL = database.url;
      }
      // The server is the service's own: it stops once the service has ended.
      return await launch(options, host, port, env, database?.stop);
    } catch (error) {
      // Gone with the failed process already (launch's afterExit), unless it failed first.
      await database?.stop();
      if (error instanceof PortTaken && !options.port && attempt < portAttempts) continue;
      throw error;
    }
  }
}

async function launch(
  options: StartServiceOptions,
  host: string,
  port: number,
  env: Record<string, string>,
  /** Run once the process has ended, before `exited` resolves. */
  afterExit?: () => Promise<void>,
): Promise<ServiceProcess> {
  const { name, signal } = options;
  const url = `http://${urlHost(host)}:${port}`;
  // Never a database URL exported in this process's environment: only what `env` says.
  const { STATS_DATABASE_URL: _exported, ...inherited } = process.env;
  const child = spawn(process.execPath, ["--import", parentWatch, serviceEntry(name)], {
    env: {
      ...inherited,
      PORT: String(port),
      HOST: host,
      // Auth is off unless the caller configures it (startStack does).
      AUTH_MODE: "off",
      ...env,
    },
    // stdin: a pipe this process never writes to; the service reads its end-of-file when this
    // process is gone (parent-watch.ts).
    stdio: ["pipe", "pipe", "pipe"],
    // Its own process group: a signal to this process's group (a terminal's Ctrl-C) is this
    // process's to act on; it stops the services in order.
    detached: true,
  });
  const lines: string[] = [];
  const stderr: string[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
    lines.push(line);
    options.onLine?.(name, line, "stdout");
  });
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) => {
    stderr.push(line);
    options.onLine?.(name, line, "stderr");
  });
  // "close", not "exit": after the process has ended and its output has all been read.
  const exited = new Promise<number | string>((resolve) => {
    child.once("close", async (code, exitSignal) => {
      await afterExit?.();
      resolve(code ?? exitSignal ?? "unknown");
    });
  });

  // Any of these ends the wait for readiness; the reason is the error thrown.
  const giveUp = new AbortController();
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;
  let lastAnswer = "no answer yet";
  const timer = setTimeout(() => {
    giveUp.abort(
      new Error(
        `${name} did not answer SERVING to a health check for ${healthNames[name]} within ${startTimeoutMs} ms (last answer: ${lastAnswer}):\n${[...lines, ...stderr].slice(-5).join("\n")}`,
      ),
    );
  }, startTimeoutMs);
  const onAbort = () => giveUp.abort(startAborted(name, signal?.reason));
  signal?.addEventListener("abort", onAbort, { once: true });
  void exited.then((code) => {
    const output = [...lines, ...stderr].join("\n");
    giveUp.abort(
      /EADDRINUSE/.test(output)
        ? new PortTaken(`${name} could not listen on port ${port}: it is in use`)
        : new Error(`${name} exited (${code}) before it was ready:\n${output}`),
    );
  });
  try {
    await untilServing(
      `${loopbackOf(host)}:${port}`,
      healthNames[name],
      giveUp.signal,
      (answer) => {
        lastAnswer = answer;
      },
    );
  } catch (error) {
    // Never leave a process behind that failed to start.
    child.kill("SIGKILL");
    await exited;
    throw giveUp.signal.aborted ? giveUp.signal.reason : error;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }

  const stop = async (timeoutMs = 15_000) => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      const code = await exited;
      clearTimeout(killer);
      return code;
    }
    return exited;
  };
  return { name, port, url, child, databaseUrl: env.STATS_DATABASE_URL, lines, exited, stop };
}

const HealthClient = grpc.makeGenericClientConstructor(
  healthServiceDefinition as unknown as grpc.ServiceDefinition,
  "Health",
);
type HealthClient = grpc.Client & {
  Check(
    request: { service: string },
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<{ status: string }>,
  ): grpc.ClientUnaryCall;
};

/**
 * Asks grpc.health.v1.Health/Check for `service` at `target` until it answers SERVING; rejects
 * when `signal` aborts. `onAnswer` hears each other answer (a status, or why the call failed).
 */
async function untilServing(
  target: string,
  service: string,
  signal: AbortSignal,
  onAnswer: (answer: string) => void,
): Promise<void> {
  const client = new HealthClient(target, grpc.credentials.createInsecure(), {
    // A refused connection (the process is still starting) is tried again within 250 ms;
    // grpc-js would wait 1 s, then longer (backoff-timeout.ts, INITIAL_BACKOFF_MS = 1000).
    "grpc.initial_reconnect_backoff_ms": 50,
    "grpc.max_reconnect_backoff_ms": 250,
  }) as unknown as HealthClient;
  try {
    for (;;) {
      signal.throwIfAborted();
      const answer = await new Promise<string>((resolve) => {
        // waitForReady: the call waits for the connection (up to its deadline) rather than
        // failing at once while the port does not accept connections yet.
        const metadata = new grpc.Metadata({ waitForReady: true });
        const cancel = () => call.cancel();
        const call = client.Check(
          { service },
          metadata,
          { deadline: Date.now() + 2_000 },
          (error, response) => {
            signal.removeEventListener("abort", cancel);
            resolve(error ? error.details || error.message : (response?.status ?? ""));
          },
        );
        signal.addEventListener("abort", cancel, { once: true });
      });
      if (answer === "SERVING") return;
      onAnswer(answer);
      await sleep(100, undefined, { signal });
    }
  } finally {
    client.close();
  }
}

function startAborted(name: StackServiceName, reason: unknown): Error {
  return new Error(`${name}'s start was aborted`, { cause: reason });
}

/** Where this machine reaches a service listening on `host` (any address: loopback). */
function loopbackOf(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "[::1]";
  return urlHost(host);
}

/** `host` as it stands in a URL (IPv6 in brackets). */
function urlHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

export interface Stack {
  gateway: ServiceProcess;
  /** The first route instance (the only one unless `routeInstances` asked for more). */
  route: ServiceProcess;
  /** Every route instance; the gateway spreads its calls over all of them. */
  routes: ServiceProcess[];
  stats: ServiceProcess;
  services: ServiceProcess[];
  /** The identities, tokens and authority of the stack; absent when started with `auth: false`. */
  auth: StackAuth | undefined;
  /** stats' database: more stats processes may be given the same URL. */
  databaseUrl: string;
  /** The stack's own PostgreSQL server; absent when stats was given a STATS_DATABASE_URL. */
  database: EmbeddedPostgres | undefined;
  /**
   * Stops all three (gateway first, so no new work reaches the others) and waits for them,
   * then the stack's database server.
   */
  stop(): Promise<void>;
}

export interface StackOptions {
  ports?: Partial<Record<StackServiceName, number>>;
  /** Extra environment per service (and for all). */
  env?: Partial<Record<StackServiceName | "all", Record<string, string>>>;
  onLine?: StartServiceOptions["onLine"];
  /** Service-to-service auth with ID tokens from a local token authority (default true). */
  auth?: boolean;
  /**
   * A public gateway (with auth): calls without a token are served as the anonymous caller,
   * a token that is present must still verify (AUTH_MODE=optional, what Terraform's
   * gateway_public deploys). route and stats stay closed.
   */
  publicGateway?: boolean;
  /**
   * Route instances behind the gateway (default 1). With more, they share the first one's URL
   * as their identity and token audience, as instances of one Cloud Run service share its URL,
   * and the gateway gets all their addresses (ROUTE_ADDRESSES) and balances over them.
   */
  routeInstances?: number;
  /**
   * Where the stack's own PostgreSQL server keeps its cluster, when stats is given no
   * STATS_DATABASE_URL (default: a temporary folder, removed at stop).
   */
  database?: Pick<EmbeddedPostgresOptions, "dataDir">;
  /**
   * Aborting it stops a start under way: startStack checks it before starting each service
   * (and a service still starting is killed), stops the services already started, and
   * rejects with an Error saying the start was aborted.
   */
  signal?: AbortSignal;
}

/** The STATS_DATABASE_URL a stack's `env` gives stats (its own or everyone's), if any. */
export function givenStatsDatabaseUrl(
  env: Partial<Record<StackServiceName | "all", Record<string, string>>> | undefined,
): string | undefined {
  return env?.stats?.STATS_DATABASE_URL || env?.all?.STATS_DATABASE_URL || undefined;
}

/**
 * Starts stats' database (an embedded PostgreSQL server, unless stats is given a
 * STATS_DATABASE_URL), stats, then route (pointed at stats), then gateway (pointed at both).
 */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const { signal } = options;
  const started: ServiceProcess[] = [];
  const givenUrl = givenStatsDatabaseUrl(options.env);
  let database: EmbeddedPostgres | undefined;
  let auth: StackAuth | undefined;
  const start = async (
    name: StackServiceName,
    peers: Record<string, string>,
    sharedUrl?: string,
  ) => {
    signal?.throwIfAborted();
    const service = await startService({
      name,
      // A further route instance gets a port of its own, as any service without a fixed one.
      port: sharedUrl ? undefined : options.ports?.[name],
      // With auth, a service knows its own URL (its token audience) before it starts; the
      // instances of one service share the first one's.
      env: (url) => ({
        ...auth?.envFor(name, sharedUrl ?? url, { publicGateway: options.publicGateway }),
        ...options.env?.all,
        ...peers,
        ...options.env?.[name],
      }),
      onLine: options.onLine,
      signal,
    });
    started.push(service);
    return service;
  };
  try {
    signal?.throwIfAborted();
    database = givenUrl ? undefined : await startEmbeddedPostgres(options.database);
    auth = options.auth === false ? undefined : await startStackAuth();
    const stats = await start("stats", database ? { STATS_DATABASE_URL: database.url } : {});
    const route = await start("route", { STATS_URL: stats.url });
    const routes = [route];
    for (let i = 1; i < (options.routeInstances ?? 1); i += 1) {
      routes.push(await start("route", { STATS_URL: stats.url }, route.url));
    }
    const gateway = await start("gateway", {
      ROUTE_URL: route.url,
      STATS_URL: stats.url,
      ...(routes.length > 1
        ? { ROUTE_ADDRESSES: routes.map((instance) => `127.0.0.1:${instance.port}`).join(",") }
        : {}),
    });
    // Aborted while the gateway was starting: stop everything rather than return it.
    signal?.throwIfAborted();
    const services = [gateway, ...routes, stats];
    return {
      gateway,
      route,
      routes,
      stats,
      services,
      auth,
      databaseUrl: stats.databaseUrl as string,
      database,
      async stop() {
        for (const service of services) await service.stop();
        await database?.stop();
        await auth?.close();
      },
    };
  } catch (error) {
    await Promise.all(started.map((service) => service.stop()));
    await database?.stop();
    await auth?.close();
    if (signal?.aborted) {
      throw new Error("the stack's start was aborted; the services it had started are stopped", {
        cause: error,
      });
    }
    throw error;
  }
}

async function assertFree(host: string, port: number, name: StackServiceName): Promise<void> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        error.code === "EADDRINUSE"
          ? new PortTaken(`${name} could not listen on port ${port}: it is in use`)
          : error,
      ),
    );
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}
