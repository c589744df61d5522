#!/usr/bin/env node
// routeguide: a command-line client for the gateway (local or on Cloud Run).
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import {
  type CommandContext,
  demo,
  demoRegion,
  describeArea,
  getFeature,
  getStats,
  listFeatures,
  makeRoute,
  maxLatitude,
  maxLongitude,
  point,
  recordRoute,
  routeChat,
  watchStats,
  withinDegrees,
} from "./commands.js";
import { connectGateway } from "./connect.js";

const usage = `usage: routeguide [--gateway URL] [--timeout SECONDS] <command> [arguments]

  --gateway URL      the gateway, e.g. http://127.0.0.1:8080 or https://gateway-xyz.a.run.app
                     (default: $GATEWAY_URL, else http://127.0.0.1:8080)
  --timeout SECONDS  deadline of each call, a whole number from 1 to 86400 (default 30)
  --token TOKEN      the ID token to send (default: one for the gateway's URL from Application
                     Default Credentials via google-auth-library; $ROUTEGUIDE_TOKEN works too)
  --no-token         send no token (a public gateway, or a stack with AUTH_MODE=off)
  --idempotency-key KEY   the idempotency-key of get-feature and record-route (default: a new
                     random one per call); the same key again is counted once

commands (coordinates in decimal degrees: latitude -90 to 90, longitude -180 to 180):
  get-feature LAT LNG                    the feature at a point
  list-features LAT1 LNG1 LAT2 LNG2      the features in a rectangle (corners in any order)
  record-route [--points N]              record a route of N points (default 1000) through the features
  route-chat LAT LNG MESSAGE...          leave notes at a point; earlier notes there come back
  get-stats [--top N]                    the statistics
  watch-stats [--top N] [--updates K]    stream the statistics (K updates, default: until Ctrl-C)
  describe-area LAT1 LNG1 LAT2 LNG2 [--top N]   features and look-ups of an area (route + stats)
  demo                                   call every method once`;

function fail(message: string): never {
  process.stderr.write(`routeguide: ${message}\n\n${usage}\n`);
  process.exit(2);
}

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
      timeout: { type: "string", default: "30" },
      top: { type: "string", default: "10" },
      points: { type: "string", default: "1000" },
      updates: { type: "string", default: "0" },
      help: { type: "boolean", short: "h" },
    },
  });
}
try {
  parsed = parse();
} catch (error) {
  fail((error as Error).message);
}
const unstash = (arg: string) =>
  arg.startsWith("\u0000") ? (argv[Number(arg.slice(1))] as string) : arg;
const values = {
  ...parsed.values,
  gateway: parsed.values.gateway === undefined ? undefined : unstash(parsed.values.gateway),
  "idempotency-key":
    parsed.values["idempotency-key"] === undefined
      ? undefined
      : unstash(parsed.values["idempotency-key"]),
  timeout: unstash(parsed.values.timeout),
  top: unstash(parsed.values.top),
  points: unstash(parsed.values.points),
  updates: unstash(parsed.values.updates),
};
const positionals = parsed.positionals.map(unstash);
if (values.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}

function wholeNumber(name: string, raw: string, min: number, max: number): number {
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max)
    fail(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  return value;
}

/** The --idempotency-key value, checked as the services check it. */
function idempotencyKey(raw: string): string {
  if (!/^[\x21-\x7e]{1,128}$/.test(raw))
    fail(`--idempotency-key must be 1 to 128 visible ASCII characters, got ${JSON.stringify(raw)}`);
  return raw;
}

/** A coordinate argument: a finite number of degrees from -limit to limit. */
function degrees(raw: string | undefined, what: string, limit: number): number {
  const value = Number(raw);
  if (raw === undefined || raw.trim() === "" || !Number.isFinite(value))
    fail(`${what} must be a number of degrees, got ${JSON.stringify(raw)}`);
  // Checked before encoding: out of range, the E7 integer would wrap to another point.
  if (!withinDegrees(value, limit))
    fail(`${what} must be from -${limit} to ${limit} degrees, got ${JSON.stringify(raw)}`);
  return value;
}

const [command, ...args] = positionals;
if (!command) fail("a command is required");
// One key names one call: only the commands that make one counted call take it.
if (
  values["idempotency-key"] !== undefined &&
  command !== "get-feature" &&
  command !== "record-route"
)
  fail(`--idempotency-key goes with get-feature or record-route (one call each), not ${command}`);
const gatewayUrl = values.gateway ?? process.env.GATEWAY_URL ?? "http://127.0.0.1:8080";
let client: ReturnType<typeof connectGateway>;
try {
  const token = values.token ?? process.env.ROUTEGUIDE_TOKEN;
  client = connectGateway(
    gatewayUrl,
    values["no-token"] ? { kind: "none" } : token ? { kind: "token", token } : { kind: "adc" },
  );
} catch (error) {
  fail(`--gateway ${(error as Error).message}`);
}
const ctx: CommandContext = {
  client,
  out: (line) => process.stdout.write(`${line}\n`),
  timeoutMs: wholeNumber("timeout", values.timeout, 1, 86_400) * 1000,
  ...(values["idempotency-key"] === undefined
    ? {}
    : { idempotencyKey: idempotencyKey(values["idempotency-key"]) }),
};
const topN = wholeNumber("top", values.top, 0, 1000);

/** The point of the arguments LAT<suffix> and LNG<suffix> at `index` and `index + 1`. */
const pointArgs = (index: number, suffix = "") =>
  point(
    degrees(args[index], `LAT${suffix}`, maxLatitude),
    degrees(args[index + 1], `LNG${suffix}`, maxLongitude),
  );
const rectangleArgs = () => ({ lo: pointArgs(0, "1"), hi: pointArgs(2, "2") });

const commands: Record<string, () => Promise<unknown>> = {
  "get-feature": () => getFeature(ctx, pointArgs(0)),
  "list-features": () => listFeatures(ctx, rectangleArgs()),
  "record-route": async () => {
    const count = wholeNumber("points", values.points, 0, 1_000_000);
    const features = await listFeatures({ ...ctx, out: () => {} }, demoRegion);
    return recordRoute(ctx, makeRoute(features, count));
  },
  "route-chat": () => {
    const location = pointArgs(0);
    const messages = args.slice(2);
    if (messages.length === 0) fail("route-chat needs at least one MESSAGE");
    return routeChat(
      ctx,
      messages.map((message) => ({ location, message })),
    );
  },
  "get-stats": () => getStats(ctx, topN),
  "watch-stats": () => watchStats(ctx, topN, wholeNumber("updates", values.updates, 0, 1_000_000)),
  "describe-area": () => describeArea(ctx, rectangleArgs(), topN),
  demo: () => demo(ctx),
};

const run = commands[command];
if (!run) fail(`unknown command ${JSON.stringify(command)}`);
try {
  await run();
  client.close();
} catch (error) {
  const status = error as Partial<grpc.ServiceError>;
  const code = status.code === undefined ? "" : `${grpc.status[status.code]}: `;
  process.stderr.write(
    `routeguide: ${command} failed: ${code}${status.details ?? status.message}\n`,
  );
  process.exit(1);
}
