// Starts gateway, route and stats as three separate processes on loopback, each as Cloud Run
// would run it (`node dist/main.js`, config from env, PORT), and tells where each listens.
// `pnpm start` and the integration suite both start the system through here.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { type StackAuth, startStackAuth } from "./local-auth.js";

/** A service of the stack (not to be confused with the gRPC service names of the protos). */
export type StackServiceName = "gateway" | "route" | "stats";

export interface ServiceProcess {
  name: StackServiceName;
  port: number;
  /** e.g. http://127.0.0.1:50051: what peers and clients use. */
  url: string;
  child: ChildProcess;
  /** Every stdout line so far (JSON log lines). */
  lines: string[];
  /** Resolves with the exit code (or the signal name) when the process ends. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL if it is still running after `timeoutMs`. */
  stop(timeoutMs?: number): Promise<number | string>;
}

export interface StartServiceOptions {
  name: StackServiceName;
  /** 0 (default) lets the OS pick a free port. */
  port?: number;
  host?: string;
  env?: Record<string, string>;
  /** Called with each line the process prints, stdout and stderr alike. */
  onLine?: (service: StackServiceName, line: string, stream: "stdout" | "stderr") => void;
  /** How long to wait until the service listens and is ready. */
  startTimeoutMs?: number;
  /** Aborting it while the service is starting kills the process and rejects. */
  signal?: AbortSignal;
}

const require = createRequire(import.meta.url);

/** The built entry point of a service (services/<name>/dist/main.js). */
export function serviceEntry(name: StackServiceName): string {
  return join(dirname(require.resolve(`@cloudrun-grpc/${name}/package.json`)), "dist", "main.js");
}

// What a service logs once it can do its work; "listening" for the ones that can at once.
const readyMessages: Record<StackServiceName, string> = {
  gateway: "listening",
  route: "listening",
  stats: "stats database ready",
};

/**
 * Starts one service and waits until it listens and is ready (stats: its database is
 * migrated). stats without STATS_DATABASE_URL in `env` gets a fresh embedded database in a
 * temporary folder, removed when the process ends (one exported in this process's environment
 * is ignored, so no test ever lands on a developer's database); pass pglite://<dir> to keep
 * one across restarts.
 */
export async function startService(options: StartServiceOptions): Promise<ServiceProcess> {
  const host = options.host ?? "127.0.0.1";
  const { signal } = options;
  if (signal?.aborted) throw startAborted(options.name, signal.reason);
  let scratchDir: string | undefined;
  const databaseEnv: Record<string, string> = {};
  if (options.name === "stats" && !options.env?.STATS_DATABASE_URL) {
    scratchDir = mkdtempSync(join(tmpdir(), "routeguide-stats-"));
    databaseEnv.STATS_DATABASE_URL = `pglite://${scratchDir}`;
  }
  const child = spawn(process.execPath, [serviceEntry(options.name)], {
    env: {
      ...process.env,
      PORT: String(options.port ?? 0),
      HOST: host,
      // Auth is off unless the caller configures it (startStack does).
      AUTH_MODE: "off",
      ...databaseEnv,
      ...options.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const stderr: string[] = [];
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => {
      if (scratchDir) rmSync(scratchDir, { recursive: true, force: true });
      resolve(code ?? signal ?? "unknown");
    });
  });

  let onAbort = () => {};
  // An embedded database's first start (initdb, migrations) takes seconds on a busy machine.
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;
  const readyMessage = readyMessages[options.name];
  let boundPort: number | undefined;
  let ready = false;
  const listening = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(
        new Error(
          boundPort === undefined
            ? `${options.name} did not start listening within ${startTimeoutMs} ms`
            : `${options.name} listens but did not log "${readyMessage}" within ${startTimeoutMs} ms:\n${lines.slice(-5).join("\n")}`,
        ),
      );
    }, startTimeoutMs);
    onAbort = () => {
      clearTimeout(timer);
      reject(startAborted(options.name, signal?.reason));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    createInterface({ input: child.stdout }).on("line", (line) => {
      lines.push(line);
      options.onLine?.(options.name, line, "stdout");
      boundPort ??= listeningPort(line);
      ready ||= logMessage(line) === readyMessage;
      if (boundPort !== undefined && ready) {
        clearTimeout(timer);
        resolve(boundPort);
      }
    });
    createInterface({ input: child.stderr }).on("line", (line) => {
      stderr.push(line);
      options.onLine?.(options.name, line, "stderr");
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${options.name} exited (${code}) before listening:\n${stderr.join("\n")}`));
    });
  });
  let port: number;
  try {
    port = await listening;
  } catch (error) {
    // Never leave a process behind that failed to start.
    child.kill("SIGKILL");
    await exited;
    throw error;
  } finally {
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
  return { name: options.name, port, url: `http://${host}:${port}`, child, lines, exited, stop };
}

function startAborted(name: StackServiceName, reason: unknown): Error {
  return new Error(`${name}'s start was aborted`, { cause: reason });
}

function logMessage(line: string): string | undefined {
  try {
    return (JSON.parse(line) as { message?: string }).message;
  } catch {
    return undefined;
  }
}

function listeningPort(line: string): number | undefined {
  if (!line.includes('"listening"')) return undefined;
  try {
    const entry = JSON.parse(line) as { message?: string; port?: number };
    return entry.message === "listening" && typeof entry.port === "number" ? entry.port : undefined;
  } catch {
    return undefined;
  }
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
  /** Stops all three (gateway first, so no new work reaches the others) and waits for them. */
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
   * Aborting it stops a start under way: startStack checks it before starting each service
   * (and a service still starting is killed), stops the services already started, and
   * rejects with an Error saying the start was aborted.
   */
  signal?: AbortSignal;
}

/** Starts stats, then route (pointed at stats), then gateway (pointed at both). */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const { signal } = options;
  const started: ServiceProcess[] = [];
  const auth = options.auth === false ? undefined : await startStackAuth();
  const start = async (
    name: StackServiceName,
    peers: Record<string, string>,
    instance?: { port: number; sharedUrl: string },
  ) => {
    signal?.throwIfAborted();
    // With auth, a service must know its own URL (the audience) before it starts.
    const port = instance?.port ?? (options.ports?.[name] || (auth ? await freePort() : 0));
    const service = await startService({
      name,
      port,
      env: {
        ...auth?.envFor(name, instance?.sharedUrl ?? `http://127.0.0.1:${port}`, {
          publicGateway: options.publicGateway,
        }),
        ...options.env?.all,
        ...peers,
        ...options.env?.[name],
      },
      onLine: options.onLine,
      signal,
    });
    started.push(service);
    return service;
  };
  try {
    const stats = await start("stats", {});
    const route = await start("route", { STATS_URL: stats.url });
    const routes = [route];
    for (let i = 1; i < (options.routeInstances ?? 1); i += 1) {
      const port = await freePort();
      routes.push(await start("route", { STATS_URL: stats.url }, { port, sharedUrl: route.url }));
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
      async stop() {
        for (const service of services) await service.stop();
        await auth?.close();
      },
    };
  } catch (error) {
    await Promise.all(started.map((service) => service.stop()));
    await auth?.close();
    if (signal?.aborted) {
      throw new Error("the stack's start was aborted; the services it had started are stopped", {
        cause: error,
      });
    }
    throw error;
  }
}

/** A port free right now on 127.0.0.1 (for services that must know their URL before start). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}
