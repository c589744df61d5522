// `pnpm start`: the whole system on this machine, three processes, then a tour of every
// gateway method, then it keeps running until Ctrl-C or SIGTERM and stops everything.
//
// Ports: GATEWAY_PORT, ROUTE_PORT, STATS_PORT (default: free ports chosen by the OS).
// Service logs: LOG_LEVEL picks which service log lines are shown here (default warn, to keep
// the terminal readable). The services themselves log at info or more verbose, because the
// stack learns each one's port from its "listening" line.
// LOG_FORMAT: how those lines are shown: pretty (the default on a terminal) or json (the
// services' own output, unchanged; the default when stdout is not a terminal).
// GATEWAY_PUBLIC=true: a public gateway (AUTH_MODE=optional), callable with `--no-token`.
import { connectGateway, demo } from "@cloudrun-grpc/cli";
import {
  integerVar,
  loadConfigOrExit,
  logFormatVar,
  logLevelVar,
  prettyLineFormatter,
} from "@cloudrun-grpc/runtime";
import { z } from "zod";
import { type Stack, startStack } from "./stack.js";

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
  }),
);
const showPretty = process.env.LOG_FORMAT ? config.LOG_FORMAT === "pretty" : process.stdout.isTTY;
const formatLine = showPretty ? prettyLineFormatter() : (line: string) => line;
const shownLevel = process.env.LOG_LEVEL ? config.LOG_LEVEL : "warn";
const serviceLogLevel = ["debug", "trace"].includes(shownLevel) ? shownLevel : "info";
const severityRank: Record<string, number> = {
  DEBUG: 1,
  INFO: 2,
  WARNING: 3,
  ERROR: 4,
  CRITICAL: 5,
};
const levelRank: Record<string, number> = {
  trace: 1,
  debug: 1,
  info: 2,
  warn: 3,
  error: 4,
  fatal: 5,
  silent: 6,
};

/** Shows a service's line if it is at least as severe as LOG_LEVEL (non-JSON lines always). */
function shown(line: string): boolean {
  try {
    const { severity } = JSON.parse(line) as { severity?: string };
    return (severityRank[severity ?? ""] ?? 5) >= (levelRank[shownLevel] ?? 3);
  } catch {
    return true;
  }
}

const print = (line: string) => process.stdout.write(`${line}\n`);

// Aborted by SIGINT/SIGTERM: a start still under way stops what it had started and rejects.
const startAborter = new AbortController();
const starting = startStack({
  ports: { gateway: config.GATEWAY_PORT, route: config.ROUTE_PORT, stats: config.STATS_PORT },
  publicGateway: config.GATEWAY_PUBLIC,
  env: {
    // JSON always: the stack reads the services' lines (pretty is only how they are shown).
    all: { LOG_LEVEL: serviceLogLevel, LOG_FORMAT: "json" },
    // pnpm start keeps stats' data where the user says (pglite://<dir>, postgres://…).
    stats: process.env.STATS_DATABASE_URL
      ? { STATS_DATABASE_URL: process.env.STATS_DATABASE_URL }
      : {},
  },
  onLine: (service, line) => {
    if (shown(line)) print(`[${service}] ${formatLine(line)}`);
  },
  signal: startAborter.signal,
});

let stopped: Promise<never> | undefined;
const stopping = () => stopped !== undefined;

/** Stops whatever runs (the start under way, or the stack) and exits with `code`. */
function stop(code: number): Promise<never> {
  stopped ??= (async () => {
    print("stopping the stack…");
    startAborter.abort();
    // Once started, the stack is stopped here; a start that was still under way rejects,
    // and only after it has stopped the services it had started.
    const started = await starting.catch(() => undefined);
    await started?.stop();
    print("stopped; nothing left running");
    process.exit(code);
  })();
  return stopped;
}
process.once("SIGINT", () => void stop(0));
process.once("SIGTERM", () => void stop(0));

let stack: Stack;
try {
  stack = await starting;
} catch (error) {
  // Aborted by a signal: stop() reports it and exits.
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

print("");
print(`stats    listening on ${stack.stats.url}`);
print(`route    listening on ${stack.route.url}`);
print(`gateway  listening on ${stack.gateway.url}`);
print("");

// The demo calls the gateway as the local client identity, with an ID token that
// google-auth-library gets from the local token authority (the metadata protocol).
const clientMetadataHost = stack.auth?.authority.metadataHosts.client ?? "";
process.env.GCE_METADATA_HOST = clientMetadataHost;
print(`auth     ID tokens from the local token authority, issuer ${stack.auth?.authority.issuer}`);
print("");
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

print("");
print("The stack is running. Call it with the CLI, for example:");
print(
  `  GCE_METADATA_HOST=${clientMetadataHost} pnpm cli --gateway ${stack.gateway.url} get-stats`,
);
print(
  `  GCE_METADATA_HOST=${clientMetadataHost} pnpm cli --gateway ${stack.gateway.url} describe-area 40 -75 41 -74 --top 5`,
);
print(
  "(GCE_METADATA_HOST points google-auth-library at the local token authority, as the local client.)",
);
if (config.GATEWAY_PUBLIC) {
  print(`The gateway is public: pnpm cli --gateway ${stack.gateway.url} --no-token get-stats`);
}
print("Press Ctrl-C to stop.");
