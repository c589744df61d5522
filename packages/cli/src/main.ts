#!/usr/bin/env node
// routeguide: a command-line client for the gateway (local or on Cloud Run).
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import type { GatewayServiceClient } from "@cloudrun-grpc/proto";
import type { Answer, CommandContext } from "./commands.js";

const { version } = createRequire(import.meta.url)("../package.json") as { version: string };

const usageLine =
  "usage: routeguide [--gateway URL] [--timeout SECONDS] [--token TOKEN | --no-token] [--json]\n" +
  "                  <command> [arguments]\n" +
  "       routeguide <command> --help | --help | --version";

const optionsHelp = `options (before or after the command):
  --gateway URL       the gateway, e.g. http://127.0.0.1:8080 or https://gateway-xyz.a.run.app
                      (default: $GATEWAY_URL, else http://127.0.0.1:8080)
  --timeout SECONDS   deadline of each call, a whole number from 1 to 86400 (default 30)
  --token TOKEN       the ID token to send, as it is (default: $ROUTEGUIDE_TOKEN, else one
                      minted for the gateway's URL: see ID tokens below)
  --no-token          send no token (a public gateway, or a stack with AUTH_MODE=off)
  --json              each answer as one JSON object on a line of its own (a stream: one
                      line per message), for scripts and jq; errors stay lines on stderr
  -h, --help          this help; after a command, that command's
  --version           the CLI's version

ID tokens: without --token, google-auth-library mints one with audience = the gateway's URL:
from the metadata server at $GCE_METADATA_HOST when that is set (the local stack's token
authority, as the local client: \`pnpm start\` prints the value), else from Application
Default Credentials (the metadata server on Cloud Run and GCE, a service account key file or
impersonation elsewhere). \`routeguide token\` prints it, for grpcurl and other clients.`;

/** The options a command takes besides the ones every command takes. */
type CommandOption = "top" | "points" | "updates" | "for" | "idempotency-key";

interface Command {
  /** The command and its arguments, e.g. `get-feature LAT LNG [--idempotency-key KEY]`. */
  synopsis: string;
  /** One line for the list of commands. */
  summary: string;
  /** What `routeguide <command> --help` says besides the synopsis. */
  help: string;
  options: CommandOption[];
  run(): Promise<unknown>;
}

const coordinatesHelp =
  "Coordinates are decimal degrees: latitude from -90 to 90, longitude from -180 to 180.";
const idempotencyHelp = `  --idempotency-key KEY   the call's idempotency-key, 1 to 128 visible ASCII characters
                          (default: a new random one); the same key again is counted once`;
const topHelp =
  "  --top N                 how many most looked-up features, 0 to 1000 (default 10)";

// Defined below with the runners; the help needs only their texts.
const commands: Record<string, Command> = {};

function commandList(): string {
  const lines = ["commands:"];
  for (const command of Object.values(commands)) {
    const synopsis = `  ${command.synopsis}`;
    if (synopsis.length < 40) lines.push(`${synopsis.padEnd(40)} ${command.summary}`);
    else lines.push(synopsis, `${"".padEnd(40)} ${command.summary}`);
  }
  return lines.join("\n");
}

const usage = () =>
  `${usageLine}\n\n${commandList()}\n\n${optionsHelp}\n\n` +
  "`routeguide <command> --help` tells more about a command.";

const commandUsage = (command: Command) =>
  `usage: routeguide [options] ${command.synopsis}\n${command.help}\n\n${optionsHelp}`;

/** Bad arguments: the problem, the usage line, where the help is; exit 2. */
function fail(message: string, command?: string): never {
  const known = command === undefined ? undefined : commands[command];
  const help = known
    ? `usage: routeguide [options] ${known.synopsis}\n(\`routeguide ${command} --help\` tells more)`
    : `${usageLine}\n(\`routeguide --help\` lists the commands and options)`;
  process.stderr.write(`routeguide: ${message}\n\n${help}\n`);
  process.exit(2);
}

// A reader that went away (`routeguide list-features … --json | head -1`) ends the command.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

// Negative numbers (-74.5) look like options to parseArgs: they are stashed as placeholders
// and restored after parsing, as positionals or as option values (--timeout -1).
const negativeNumber = /^-\d/;
const argv = process.argv.slice(2);
const stashed = argv.map((arg, index) => (negativeNumber.test(arg) ? `\u0000${index}` : arg));
let parsed: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    args: stashed,
    allowPositionals: true,
    options: {
      gateway: { type: "string" },
      token: { type: "string" },
      "no-token": { type: "boolean" },
      "idempotency-key": { type: "string" },
      timeout: { type: "string" },
      json: { type: "boolean" },
      top: { type: "string" },
      points: { type: "string" },
      updates: { type: "string" },
      for: { type: "string" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean" },
    },
  });
}
try {
  parsed = parse();
} catch (error) {
  fail((error as Error).message);
}
const unstash = <Value extends string | undefined>(arg: Value): Value =>
  arg?.startsWith("\u0000") ? (argv[Number(arg.slice(1))] as Value) : arg;
const values = {
  ...parsed.values,
  gateway: unstash(parsed.values.gateway),
  token: unstash(parsed.values.token),
  "idempotency-key": unstash(parsed.values["idempotency-key"]),
  timeout: unstash(parsed.values.timeout) ?? "30",
  top: unstash(parsed.values.top),
  points: unstash(parsed.values.points),
  updates: unstash(parsed.values.updates),
  for: unstash(parsed.values.for),
};
let [command, ...args] = parsed.positionals.map(unstash);
let help = values.help === true;
// `routeguide help [command]` is `routeguide [command] --help`.
if (command === "help") {
  [command, ...args] = args;
  help = true;
}

function wholeNumber(name: string, raw: string, min: number, max: number): number {
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max)
    fail(
      `--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`,
      command,
    );
  return value;
}

/** The --idempotency-key value, checked as the services check it. */
function idempotencyKey(raw: string): string {
  if (!/^[\x21-\x7e]{1,128}$/.test(raw))
    fail(
      `--idempotency-key must be 1 to 128 visible ASCII characters, got ${JSON.stringify(raw)}`,
      command,
    );
  return raw;
}

/** A coordinate argument: a finite number of degrees from -limit to limit. */
function degrees(raw: string | undefined, what: string, limit: number): number {
  const value = Number(raw);
  if (raw === undefined || raw.trim() === "" || !Number.isFinite(value))
    fail(`${what} must be a number of degrees, got ${JSON.stringify(raw)}`, command);
  // Checked before encoding: out of range, the E7 integer would wrap to another point.
  if (!lib.withinDegrees(value, limit))
    fail(`${what} must be from -${limit} to ${limit} degrees, got ${JSON.stringify(raw)}`, command);
  return value;
}

/** The point of the arguments LAT<suffix> and LNG<suffix> at `index` and `index + 1`. */
const pointArgs = (index: number, suffix = "") =>
  lib.point(
    degrees(args[index], `LAT${suffix}`, lib.maxLatitude),
    degrees(args[index + 1], `LNG${suffix}`, lib.maxLongitude),
  );
const rectangleArgs = () => ({ lo: pointArgs(0, "1"), hi: pointArgs(2, "2") });

/** No more than `count` arguments: a stray one is a mistake, not something to ignore. */
function noMoreArgs(count: number) {
  if (args.length > count) fail(`unexpected argument ${JSON.stringify(args[count])}`, command);
}

const gatewayFrom = values.gateway !== undefined ? "--gateway" : "GATEWAY_URL";
const gatewayUrl = values.gateway ?? process.env.GATEWAY_URL ?? "http://127.0.0.1:8080";
const givenToken = values.token ?? process.env.ROUTEGUIDE_TOKEN;
const json = values.json === true;
const print = (line: string) => process.stdout.write(`${line}\n`);
const printJson = (value: object) => print(JSON.stringify(value));

let client: GatewayServiceClient | undefined;
/** The context of a command that calls the gateway; connects on first use. */
function context(): CommandContext {
  try {
    client ??= connect.connectGateway(
      gatewayUrl,
      values["no-token"]
        ? { kind: "none" }
        : givenToken
          ? { kind: "token", token: givenToken }
          : { kind: "adc" },
    );
  } catch (error) {
    fail(`${gatewayFrom} ${(error as Error).message}`, command);
  }
  // --json: the answers, not the lines. The demo's answers name their method (it calls all).
  const answer: Answer = (method, message) =>
    printJson(command === "demo" ? { method, response: message } : message);
  return {
    client,
    out: json ? () => {} : print,
    ...(json ? { answer } : {}),
    timeoutMs: wholeNumber("timeout", values.timeout, 1, 86_400) * 1000,
    ...(values["idempotency-key"] === undefined
      ? {}
      : { idempotencyKey: idempotencyKey(values["idempotency-key"]) }),
  };
}
const topN = () => wholeNumber("top", values.top ?? "10", 0, 1000);

/** The ID token the other commands send, for `audience`: given, or minted as they mint it. */
async function printToken(audienceArg: string | undefined) {
  let audience: string;
  try {
    audience = runtime.parsePeerUrl(audienceArg ?? gatewayUrl).url;
  } catch (error) {
    fail(`${audienceArg === undefined ? gatewayFrom : "URL"} ${(error as Error).message}`, command);
  }
  if (values["no-token"]) fail("token and --no-token ask for opposite things", command);
  const source = givenToken
    ? auth.fixedToken(audience, givenToken)
    : new auth.IdTokenSource(audience);
  const token = await source.token();
  if (json) printJson({ audience, token });
  else print(token);
}

Object.assign(commands, {
  "get-feature": {
    synopsis: "get-feature LAT LNG [--idempotency-key KEY]",
    summary: "the feature at a point",
    help: `
GetFeature: prints the feature's name at the point, or that no feature is named there; stats
counts the look-up.
${coordinatesHelp}

${idempotencyHelp}`,
    options: ["idempotency-key"],
    run: () => {
      noMoreArgs(2);
      return lib.getFeature(context(), pointArgs(0));
    },
  },
  "list-features": {
    synopsis: "list-features LAT1 LNG1 LAT2 LNG2",
    summary: "the features in a rectangle (corners in any order)",
    help: `
ListFeatures: prints each feature as it streams in, then how many came (--json: one line per
feature). ${coordinatesHelp}`,
    options: [],
    run: () => {
      noMoreArgs(4);
      return lib.listFeatures(context(), rectangleArgs());
    },
  },
  "record-route": {
    synopsis: "record-route [--points N] [--idempotency-key KEY]",
    summary: "record a route of N points through the features",
    help: `
RecordRoute: lists the features of the demo region (40..41, -75..-74), then streams a route
that passes one of them every tenth point and ends with end_of_route; prints the progress and
route's summary (--json: the summary alone). stats counts the route.

  --points N              the route's length, 0 to 1000000 (default 1000)
${idempotencyHelp}`,
    options: ["points", "idempotency-key"],
    run: async () => {
      noMoreArgs(0);
      const ctx = context();
      const count = wholeNumber("points", values.points ?? "1000", 0, 1_000_000);
      const features = await lib.listFeatures(lib.quiet(ctx), lib.demoRegion);
      return lib.recordRoute(ctx, lib.makeRoute(features, count));
    },
  },
  "route-chat": {
    synopsis: "route-chat LAT LNG MESSAGE...",
    summary: "leave notes at a point; earlier notes there come back",
    help: `
RouteChat: sends each MESSAGE as a note at the point and prints the earlier notes at that
point as they come back (--json: one line per note received). ${coordinatesHelp}`,
    options: [],
    run: () => {
      const location = pointArgs(0);
      const messages = args.slice(2);
      if (messages.length === 0) fail("route-chat needs at least one MESSAGE", command);
      return lib.routeChat(
        context(),
        messages.map((message) => ({ location, message })),
      );
    },
  },
  "get-stats": {
    synopsis: "get-stats [--top N]",
    summary: "the statistics, with the counts per end client",
    help: `
GetStats: the routes recorded, the feature look-ups, the most looked-up features and the
counts per end client (who called the gateway).

${topHelp}`,
    options: ["top"],
    run: () => {
      noMoreArgs(0);
      return lib.getStats(context(), topN());
    },
  },
  "watch-stats": {
    synopsis: "watch-stats [--top N] [--updates K] [--for SECONDS]",
    summary: "the statistics now, then again at each change",
    help: `
WatchStats: the first update is the statistics as they are; each later one comes after a
change (a recorded route, a feature look-up), so without a limit the watch goes on until
Ctrl-C (--json: one line per update).

${topHelp}
  --updates K             stop after K updates, the first one included (--updates 1: just the
                          statistics now), up to 1000000 (default 0: no limit)
  --for SECONDS           stop after this many seconds, 1 to 86400 (default: no limit)`,
    options: ["top", "updates", "for"],
    run: () => {
      noMoreArgs(0);
      const ctx = context();
      const updates = wholeNumber("updates", values.updates ?? "0", 0, 1_000_000);
      const forMs = values.for === undefined ? 0 : wholeNumber("for", values.for, 1, 86_400) * 1000;
      return lib.watchStats(ctx, topN(), updates, forMs);
    },
  },
  "describe-area": {
    synopsis: "describe-area LAT1 LNG1 LAT2 LNG2 [--top N]",
    summary: "features and look-ups of an area (route + stats)",
    help: `
DescribeArea: the named features of the rectangle and their look-ups, which the gateway asks
route and stats for at once. ${coordinatesHelp}

${topHelp}`,
    options: ["top"],
    run: () => {
      noMoreArgs(4);
      return lib.describeArea(context(), rectangleArgs(), topN());
    },
  },
  demo: {
    synopsis: "demo",
    summary: "call every method once",
    help: `
Calls every gateway method once, as a first look at a running system (--json: each answer as
{"method": …, "response": …}).`,
    options: [],
    run: () => {
      noMoreArgs(0);
      return lib.demo(context());
    },
  },
  token: {
    synopsis: "token [URL]",
    summary: "print an ID token for URL (default: the gateway's)",
    help: `
Prints the ID token the other commands send, with audience URL (a service's URL as its
AUTH_AUDIENCES names it; default: the gateway's, --gateway): --token or $ROUTEGUIDE_TOKEN as
given, else one minted as described under ID tokens. With --json: {"audience": …, "token": …}.
E.g. with grpcurl, which finds the methods through the gateway's server reflection:

  grpcurl -plaintext -H "authorization: Bearer $(routeguide token)" 127.0.0.1:8080 list`,
    options: [],
    run: () => {
      noMoreArgs(1);
      return printToken(args[0]);
    },
  },
} satisfies Record<string, Command>);

if (values.version) {
  print(`routeguide ${version}`);
  process.exit(0);
}
if (help) {
  const known = command === undefined ? undefined : commands[command];
  if (command !== undefined && !known) fail(`unknown command ${JSON.stringify(command)}`);
  print(known ? commandUsage(known) : usage());
  process.exit(0);
}
if (!command) fail("a command is required");
const chosen = commands[command];
if (!chosen) fail(`unknown command ${JSON.stringify(command)}`);
// A command's own options are refused elsewhere: silently ignored, a typo would mislead.
for (const option of ["top", "points", "updates", "for", "idempotency-key"] as const) {
  if (values[option] !== undefined && !chosen.options.includes(option)) {
    const takers = Object.keys(commands).filter((name) => commands[name]?.options.includes(option));
    fail(`--${option} goes with ${takers.join(" or ")}, not ${command}`, command);
  }
}

// Loaded only now, so that --help, --version and bad arguments answer at once, without
// loading grpc-js, the protos and google-auth-library first.
const [lib, connect, failure, auth, runtime] = await Promise.all([
  import("./commands.js"),
  import("./connect.js"),
  import("./failure.js"),
  import("@cloudrun-grpc/auth-client"),
  import("@cloudrun-grpc/runtime"),
]);
try {
  await chosen.run();
  client?.close();
} catch (error) {
  const url = command === "token" ? (args[0] ?? gatewayUrl) : gatewayUrl;
  process.stderr.write(`routeguide: ${failure.describeFailure(command, url, error)}\n`);
  process.exit(1);
}
