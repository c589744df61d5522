// `pnpm start`: the whole system on this machine, then a tour of every gateway method, then it
// keeps running until Ctrl-C, SIGTERM or SIGHUP, or until the process that started it is gone,
// and stops everything.
//
// Two modes:
//   pnpm start              three processes, h2c on loopback (the quickest to start and read);
//   pnpm start --cloud-run  each service behind a local Cloud Run front end configured from
//                           infra/ (https://localhost:<port>, invoker IAM at the edge, internal
//                           ingress, concurrency, instances started and scaled in): each scale
//                           event is printed as a [cloud-run] line.
//
// Ports: GATEWAY_PORT, ROUTE_PORT, STATS_PORT (default: free ports chosen before the start;
// with --cloud-run, the front ends' ports).
// LOG_LEVEL: the level the services log at (default warn, to keep the terminal readable).
// LOG_FORMAT: how their lines are shown: pretty (the default on a terminal) or json (the
// services' own output, unchanged; the default when stdout is not a terminal).
// GATEWAY_PUBLIC=true: a public gateway (AUTH_MODE=optional), callable with `--no-token`.
// STACK_DATA_DIR: the stack's data folder (default .stack-data in the repository), where
// local-stack.json tells scripts how to reach the running stack (removed at stop) and
// postgres/ holds stats' database (kept).
// STATS_DATABASE_URL: stats' database on a PostgreSQL server of the user's; by default the stack
// starts one of its own (embedded-postgres.ts).
// With --cloud-run only: CLOUD_RUN_CONCURRENCY, every service's max_instance_request_concurrency
// instead of Terraform's (e.g. 2, to see instances start under a little load);
// CLOUD_RUN_IDLE_SECONDS, how long an idle instance is kept (default 60; Cloud Run: up to 15 min).

import { dirname, join } from "node:path";
import { connectGateway, demo } from "@cloudrun-grpc/cli";
import {
  integerVar,
  loadConfigOrExit,
  logFormatVar,
  logLevelVar,
  prettyLineFormatter,
} from "@cloudrun-grpc/runtime";
import { z } from "zod";
import { startCloudRunStack } from "./cloud-run-stack.js";
import {
  cloudRunFactsOf,
  type StackFacts,
  StackFactsWriter,
  stackFactsFile,
  stackFactsOf,
} from "./facts.js";
import { startStack } from "./stack.js";

// The process that started this one (pnpm start's launcher passes on the one it saw first).
const parentPid = Number(process.env.LOCAL_STACK_PARENT_PID) || process.ppid;
delete process.env.LOCAL_STACK_PARENT_PID;

const config = loadConfigOrExit(
  "local-stack",
  z.object({
    GATEWAY_PORT: integerVar(0, 0, 65535),
    ROUTE_PORT: integerVar(0, 0, 65535),
    STATS_PORT: integerVar(0, 0, 65535),
    LOG_LEVEL: logLevelVar,
    LOG_FORMAT: logFormatVar,
    GATEWAY_PUBLIC: z
      .enum(["true", "false", ""])
      .optional()
      .transform((value) => value === "true"),
    STACK_DATA_DIR: z.string().optional(),
    CLOUD_RUN_CONCURRENCY: integerVar(0, 0, 1000),
    CLOUD_RUN_IDLE_SECONDS: integerVar(60, 1, 3600),
  }),
);
const usage = "usage: pnpm start [--cloud-run]";
const args = process.argv.slice(2);
const unknownArgs = args.filter((arg) => arg !== "--cloud-run");
if (unknownArgs.length > 0) {
  process.stderr.write(`local-stack: unknown argument ${unknownArgs.join(" ")}\n${usage}\n`);
  process.exit(2);
}
const cloudRun = args.includes("--cloud-run");
const showPretty = process.env.LOG_FORMAT ? config.LOG_FORMAT === "pretty" : process.stdout.isTTY;
const formatLine = showPretty ? prettyLineFormatter() : (line: string) => line;
const logLevel = process.env.LOG_LEVEL ? config.LOG_LEVEL : "warn";

// A closed terminal or pipe must not end this process before it has stopped the services.
process.stdout.on("error", () => {});
process.stderr.on("error", () => {});
const print = (line: string) => process.stdout.write(`${line}\n`);

const facts = new StackFactsWriter(stackFactsFile(config.STACK_DATA_DIR));
const other = facts.runningOther();
if (other) {
  process.stderr.write(
    `local-stack: another local stack (pid ${other.pid}) is running with its facts in ${facts.file}: stop it first, or give this one its own STACK_DATA_DIR\n`,
  );
  process.exit(1);
}

/** The system once started, whichever the mode: what the rest of this file needs of it. */
interface Running {
  facts: StackFacts;
  /** Lines that say where each service is. */
  where: string[];
  /** The CA a client must trust (the front ends', in cloud-run mode). */
  rootCerts?: Buffer;
  /** Calls back once if a service ends that should not have (processes mode). */
  onUnexpectedExit(listener: (why: string) => void): void;
  stop(): Promise<void>;
}

// The level the user asked for; JSON always (pretty is only how this process shows it).
const allEnv = { LOG_LEVEL: logLevel, LOG_FORMAT: "json" };
const ports = { gateway: config.GATEWAY_PORT, route: config.ROUTE_PORT, stats: config.STATS_PORT };

// Aborted by a stop: a start still under way stops what it had started and rejects.
const startAborter = new AbortController();

// The stack's own PostgreSQL server (when no STATS_DATABASE_URL), its cluster kept across
// restarts and shared by both modes.
const database = { dataDir: join(dirname(facts.file), "postgres") };
// stats' data on the user's own server (postgres://…) if they name one; else on the stack's
// own PostgreSQL server, whose cluster is kept across restarts (`database`).
const statsEnv: Record<string, string> = process.env.STATS_DATABASE_URL
  ? { STATS_DATABASE_URL: process.env.STATS_DATABASE_URL }
  : {};

async function startProcesses(): Promise<Running> {
  const stack = await startStack({
    ports,
    publicGateway: config.GATEWAY_PUBLIC,
    env: { all: allEnv, stats: statsEnv },
    database,
    onLine: (service, line) => print(`[${service}] ${formatLine(line)}`),
    signal: startAborter.signal,
  });
  return {
    facts: stackFactsOf(stack, { pid: process.pid, publicGateway: config.GATEWAY_PUBLIC }),
    where: [
      `stats    listening on ${stack.stats.url}`,
      `route    listening on ${stack.route.url}`,
      `gateway  listening on ${stack.gateway.url}`,
    ],
    onUnexpectedExit(listener) {
      for (const service of stack.services) {
        void service.exited.then((code) =>
          listener(`${service.name} exited unexpectedly (${code})`),
        );
      }
    },
    stop: () => stack.stop(),
  };
}

async function startUnderCloudRun(): Promise<Running> {
  const concurrency = config.CLOUD_RUN_CONCURRENCY;
  const override = concurrency > 0 ? { maxConcurrency: concurrency } : {};
  // Each decision of the front ends on a line of its own, with the instance's pid when it has one.
  const show = (details: object, message: string) => {
    const { pid } = details as { pid?: number };
    print(`[cloud-run] ${message}${pid ? `, pid ${pid}` : ""}`);
  };
  const stack = await startCloudRunStack({
    ports,
    publicGateway: config.GATEWAY_PUBLIC,
    database,
    // STACK_DATA_DIR too: every process of this stack can be found by its environment, as in
    // processes mode, where the services inherit this process's (the services ignore it).
    env: { all: { ...allEnv, STACK_DATA_DIR: dirname(facts.file) }, stats: statsEnv },
    overrides: { gateway: override, route: override, stats: override },
    scaling: { idleMs: config.CLOUD_RUN_IDLE_SECONDS * 1000 },
    logger: { info: show, warn: show, error: show },
    onLine: (_service, instance, line) => print(`[${instance}] ${formatLine(line)}`),
  });
  if (startAborter.signal.aborted) {
    await stack.stop();
    throw new Error("the stack's start was aborted; the services it had started are stopped");
  }
  const frontEnd = (name: "gateway" | "route" | "stats") => {
    const { definition } = stack.local.services[name] ?? {};
    return `${name.padEnd(8)} ${stack.urls[name]}  (${definition?.ingress === "INGRESS_TRAFFIC_ALL" ? "ingress all" : "internal"}, concurrency ${definition?.maxConcurrency}, instances ${definition?.minInstances}–${definition?.maxInstances})`;
  };
  return {
    facts: cloudRunFactsOf(stack, { pid: process.pid, publicGateway: config.GATEWAY_PUBLIC }),
    where: [
      "Each service behind its local Cloud Run front end (TLS, a CA made for this run):",
      frontEnd("stats"),
      frontEnd("route"),
      frontEnd("gateway"),
      `stats' instances share one database: ${stack.databaseDescription}`,
    ],
    rootCerts: Buffer.from(stack.caPem),
    // The front end replaces an instance that crashes, as Cloud Run does.
    onUnexpectedExit() {},
    stop: () => stack.stop(),
  };
}

const starting = cloudRun ? startUnderCloudRun() : startProcesses();

let stopped: Promise<never> | undefined;
const stopping = () => stopped !== undefined;

/** Stops whatever runs (the start under way, or the stack) and exits with `code`. */
function stop(code: number, why?: string): Promise<never> {
  stopped ??= (async () => {
    // First: from now on, no script takes the stack for running.
    facts.remove();
    print(why ? `stopping the stack (${why})…` : "stopping the stack…");
    startAborter.abort();
    // Once started, the stack is stopped here (gateway, route, stats, each after the one
    // before has ended and its last lines are shown); a start that was still under way
    // rejects, and only after it has stopped the services it had started.
    const started = await starting.catch(() => undefined);
    await started?.stop();
    print("stopped; nothing left running");
    process.exit(code);
  })();
  return stopped;
}
// Every time, not once: a terminal's Ctrl-C reaches this process and pnpm, which then passes
// a SIGINT of its own on; a second signal changes nothing (a default action would kill this
// process before it has stopped the services).
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => void stop(0));
}
// When the process that started this one ends without a word (SIGKILL), or a shell between
// them ended on a SIGTERM without passing it on, this process has a new parent: the stack
// stops all the same.
setInterval(() => {
  if (process.ppid !== parentPid) void stop(0, "the process that started it is gone");
}, 250).unref();
// Whatever ends this process, the facts file does not outlive it.
process.once("exit", () => facts.remove());

let running: Running;
try {
  running = await starting;
} catch (error) {
  // Aborted by a stop: stop() reports it and exits.
  if (stopping()) await stop(0);
  process.stderr.write(`local-stack: ${(error as Error).message}\n`);
  process.exit(1);
}
running.onUnexpectedExit((why) => {
  if (stopping()) return;
  process.stderr.write(`local-stack: ${why}; stopping the rest\n`);
  void stop(1);
});

const stackFacts = running.facts;
const authority = stackFacts.tokenAuthority;
print("");
for (const line of running.where) print(line);
print("");
print("auth     the local token authority stands in for Google's; its two ports:");
print(`         token issuer   ${authority.issuer}  the services check ID tokens with its keys`);
print(
  `         metadata host  ${authority.metadataHost}  GCE_METADATA_HOST: ID tokens as ${authority.identity}`,
);
print("");

// The demo calls the gateway as the local client identity, with an ID token that
// google-auth-library gets from the local token authority (the metadata protocol).
process.env.GCE_METADATA_HOST = authority.metadataHost;
const client = connectGateway(stackFacts.env.GATEWAY_URL, undefined, {
  rootCerts: running.rootCerts,
});
try {
  await demo({ client, out: print, timeoutMs: 30_000 });
} catch (error) {
  // A demo cut short by Ctrl-C is no failure: stop() is already under way.
  if (!stopping())
    process.stderr.write(`local-stack: the demo failed: ${(error as Error).message}\n`);
  client.close();
  await stop(1);
}
client.close();

// Written once the demo is over: a script that finds the file finds the stack ready and idle.
if (!stopping()) facts.write(stackFacts);
print("");
print("The stack is running. To call it with the CLI, no flags needed, paste this into a shell:");
print("");
print(
  `  export ${Object.entries(stackFacts.env)
    .map(([name, value]) => `${name}=${value}`)
    .join(" ")}`,
);
print("");
print("then, for example:");
print("  pnpm cli get-stats");
print("  pnpm cli describe-area 40 -75 41 -74 --top 5");
if (config.GATEWAY_PUBLIC) print("  pnpm cli --no-token get-stats   (the gateway is public)");
print(`Scripts find the same in ${facts.displayPath()} (removed when the stack stops).`);
print("Press Ctrl-C to stop.");
