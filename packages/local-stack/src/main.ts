// `pnpm start`: the whole system on this machine, three processes, then a tour of every
// gateway method, then it keeps running until Ctrl-C, SIGTERM or SIGHUP, or until the process
// that started it is gone, and stops everything.
//
// Ports: GATEWAY_PORT, ROUTE_PORT, STATS_PORT (default: free ports chosen before the start).
// LOG_LEVEL: the level the services log at (default warn, to keep the terminal readable).
// LOG_FORMAT: how their lines are shown: pretty (the default on a terminal) or json (the
// services' own output, unchanged; the default when stdout is not a terminal).
// GATEWAY_PUBLIC=true: a public gateway (AUTH_MODE=optional), callable with `--no-token`.
// STACK_DATA_DIR: the stack's data folder (default .stack-data in the repository), where
// local-stack.json tells scripts how to reach the running stack (removed at stop) and
// postgres/ holds stats' database (kept).
// STATS_DATABASE_URL: stats' database on a PostgreSQL server of the user's; by default the stack
// starts one of its own (embedded-postgres.ts).

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
import { type StackFacts, StackFactsWriter, stackFactsFile, stackFactsOf } from "./facts.js";
import { type Stack, startStack } from "./stack.js";

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
  }),
);
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

// Aborted by a stop: a start still under way stops what it had started and rejects.
const startAborter = new AbortController();
const starting = startStack({
  ports: { gateway: config.GATEWAY_PORT, route: config.ROUTE_PORT, stats: config.STATS_PORT },
  publicGateway: config.GATEWAY_PUBLIC,
  env: {
    // The level the user asked for; JSON always (pretty is only how this process shows it).
    all: { LOG_LEVEL: logLevel, LOG_FORMAT: "json" },
    // stats' data on the user's own server (postgres://…) if they name one.
    stats: process.env.STATS_DATABASE_URL
      ? { STATS_DATABASE_URL: process.env.STATS_DATABASE_URL }
      : {},
  },
  // Else on the stack's own PostgreSQL server, whose cluster is kept across restarts.
  database: { dataDir: join(dirname(facts.file), "postgres") },
  onLine: (service, line) => print(`[${service}] ${formatLine(line)}`),
  signal: startAborter.signal,
});

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

let stack: Stack;
try {
  stack = await starting;
} catch (error) {
  // Aborted by a stop: stop() reports it and exits.
  if (stopping()) await stop(0);
  process.stderr.write(`local-stack: ${(error as Error).message}\n`);
  process.exit(1);
}
for (const service of stack.services) {
  void service.exited.then((code) => {
    if (stopping()) return;
    process.stderr.write(
      `local-stack: ${service.name} exited unexpectedly (${code}); stopping the rest\n`,
    );
    void stop(1);
  });
}

const stackFacts: StackFacts = stackFactsOf(stack, {
  pid: process.pid,
  publicGateway: config.GATEWAY_PUBLIC,
});
const authority = stackFacts.tokenAuthority;
print("");
print(`stats    listening on ${stack.stats.url}`);
print(`route    listening on ${stack.route.url}`);
print(`gateway  listening on ${stack.gateway.url}`);
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
const client = connectGateway(stack.gateway.url);
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
