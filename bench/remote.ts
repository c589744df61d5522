// `pnpm bench --gateway <url>`: the gateway rows of `pnpm bench unary streams` (GetFeature,
// ListFeatures of 150 features, RecordRoute of 1,000 points; the same bodies) against a gateway
// that runs elsewhere: a Cloud Run deployment, the local Cloud Run front end
// (`pnpm start --cloud-run`) or `pnpm start`'s h2c gateway. Its processes are not this
// machine's, so there are no baselines and no CPU per process: rate, latencies, errors and
// h2load's own CPU. Before any row: the certificate verified (h2load does not), and one checked
// call per method whose failure ends the bench with one line saying what to do.
import type { SecureClientSessionOptions } from "node:http2";
import { status as grpcStatus } from "@grpc/grpc-js";
import { bodies, featuresOnMap, routePoints } from "./hops.js";
import type { RemoteSection } from "./support/args.js";
import { type CheckedCall, checkOnce, type H2loadTarget, h2load } from "./support/h2load.js";
import {
  type Roots,
  rootsFromEnvironment,
  type VerifiedServer,
  verifyServer,
} from "./support/remote-tls.js";
import { type BenchToken, TokenProblem } from "./support/remote-token.js";
import { formatErrors } from "./support/report.js";

export interface RemoteOptions {
  /** The gateway's origin. */
  gateway: string;
  sections: RemoteSection[];
  token: BenchToken;
  connections: number;
  seconds: number;
  warmupSeconds: number;
  firstWarmupSeconds: number;
  concurrencies: number[];
  /** Called once the certificate and a call of each method have passed, before any load. */
  onChecked?: (tls: RemoteRun["tls"]) => void;
}

export interface RemoteRow {
  scenario: string;
  method: Method;
  generator: string;
  concurrency: number;
  unit: "calls" | "messages" | "points";
  rate: number;
  callsPerSecond: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  calls: number;
  /** Calls h2load saw fail: HTTP errors and broken streams (a gRPC status in trailers it cannot see). */
  errors: number;
  /** Those of them answered with an HTTP status, by status (a front end's 429, 503 …). */
  failedStatuses: Record<string, number>;
  generatorCpuUsPerCall: number;
}

/** A reason the bench cannot go on: printed as one line, exit 1. */
export class RemoteProblem extends Error {}

type Method = "GetFeature" | "ListFeatures" | "RecordRoute";

const methods: Record<
  Method,
  { section: RemoteSection; unit: RemoteRow["unit"]; perCall: number; messages: number }
> = {
  GetFeature: { section: "unary", unit: "calls", perCall: 1, messages: 1 },
  ListFeatures: {
    section: "streams",
    unit: "messages",
    perCall: featuresOnMap,
    messages: featuresOnMap,
  },
  RecordRoute: { section: "streams", unit: "points", perCall: routePoints, messages: 1 },
};

export interface RemoteRun {
  rows: RemoteRow[];
  /** The certificate checked before the run (https only). */
  tls?: VerifiedServer & { roots: string };
  /**
   * What makes figures untrustworthy besides failed calls: a row in which no call completed,
   * a checked call after a method's rows that did not come back right.
   */
  problems: string[];
}

/** Roughly how long the run takes, for a given token's expiry check. */
export function estimatedSeconds(options: RemoteOptions): number {
  const perMethod =
    options.firstWarmupSeconds +
    options.concurrencies.length * (options.warmupSeconds + options.seconds) +
    5;
  return chosenMethods(options).length * perMethod;
}

function chosenMethods(options: RemoteOptions): Method[] {
  return (Object.keys(methods) as Method[]).filter((method) =>
    options.sections.includes(methods[method].section),
  );
}

export async function benchRemote(options: RemoteOptions): Promise<RemoteRun> {
  const origin = options.gateway;
  const https = origin.startsWith("https:");
  const headersLasting = async (seconds: number) => {
    try {
      return await options.token.headersFor(seconds);
    } catch (error) {
      if (error instanceof TokenProblem) throw new RemoteProblem(error.message);
      throw error;
    }
  };
  // A given token must last the whole run; a fetched one each h2load run (fetched again if not).
  await headersLasting(
    options.token.choice.kind === "given"
      ? estimatedSeconds(options)
      : options.firstWarmupSeconds + options.seconds,
  );
  let roots: Roots | undefined;
  let tls: RemoteRun["tls"];
  if (https) {
    roots = rootsFromEnvironment();
    try {
      tls = { ...(await verifyServer(origin, roots)), roots: roots.description };
    } catch (error) {
      throw new RemoteProblem((error as Error).message);
    }
  }
  const connect: SecureClientSessionOptions = roots ? { ca: roots.ca } : {};
  const generator = `h2load, ${https ? "h2 over TLS" : "h2c"}, ${options.connections} connection${options.connections === 1 ? "" : "s"}`;
  const auth = options.token.choice.kind === "none" ? "no token" : "auth on";
  const targetOf = async (method: Method, seconds: number): Promise<H2loadTarget> => ({
    url: `${origin}/gateway.v1.GatewayService/${method}`,
    body: bodies[method](),
    headers: {
      "content-type": "application/grpc",
      te: "trailers",
      ...(await headersLasting(seconds)),
    },
    connections: options.connections,
  });

  const rows: RemoteRow[] = [];
  const problems: string[] = [];
  const toRun = chosenMethods(options);
  // Every method checked before any load, so a refusal ends the bench at once.
  for (const method of toRun) {
    const problem = await checkedCall(method, await targetOf(method, 0), connect, options);
    if (problem) throw new RemoteProblem(problem);
  }
  options.onChecked?.(tls);
  for (const method of toRun) {
    const { unit, perCall } = methods[method];
    const scenario = `${method}, remote gateway, ${auth}`;
    // As the local rows: a longer warm-up at the highest concurrency first (here it also lets
    // Cloud Run start the instances the load needs), then one before each row.
    const most = Math.max(...options.concurrencies);
    await h2load(
      await targetOf(method, options.firstWarmupSeconds),
      most,
      options.firstWarmupSeconds,
    );
    for (const concurrency of options.concurrencies) {
      const target = await targetOf(method, options.warmupSeconds + options.seconds);
      await h2load(target, concurrency, options.warmupSeconds);
      const result = await h2load(target, concurrency, options.seconds);
      const row: RemoteRow = {
        scenario,
        method,
        generator,
        concurrency,
        unit,
        rate: result.requestsPerSecond * perCall,
        callsPerSecond: result.requestsPerSecond,
        p50Us: result.p50Us,
        p90Us: result.p90Us,
        p99Us: result.p99Us,
        calls: result.succeeded,
        errors: result.failed,
        failedStatuses: result.failedStatuses,
        generatorCpuUsPerCall: Math.round(result.generatorCpuUs / Math.max(1, result.succeeded)),
      };
      rows.push(row);
      // A call longer than the run is never counted (h2load resets it at the end): no rate.
      if (result.succeeded === 0) {
        problems.push(
          `${scenario} @${concurrency}: no call completed within ${options.seconds} s (each took longer, or none was answered); run again with a larger BENCH_SECONDS`,
        );
      }
      console.error(
        `  ${scenario} @${concurrency}: ${row.rate} ${unit}/s, p99 ${(row.p99Us / 1000).toFixed(2)} ms${row.errors ? `, ${formatErrors(row)} errors` : ""}`,
      );
    }
    // h2load sees HTTP statuses only: one checked call after the rows catches a gateway that
    // began answering with a gRPC error meanwhile.
    const after = await checkedCall(method, await targetOf(method, 0), connect, options);
    if (after) problems.push(`after the ${method} rows: ${after}`);
  }
  return { rows, ...(tls ? { tls } : {}), problems };
}

async function checkedCall(
  method: Method,
  target: H2loadTarget,
  tls: SecureClientSessionOptions,
  options: RemoteOptions,
): Promise<string | undefined> {
  let check: CheckedCall;
  try {
    check = await checkOnce(target, { tls, timeoutMs: 30_000 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return `${method} to ${options.gateway} failed before an answer (${code ? `${code}: ` : ""}${(error as Error).message}): is the URL right and the gateway up?`;
  }
  return explainCheck(method, check, options);
}

const statusNames = Object.fromEntries(
  Object.entries(grpcStatus)
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) => [String(value), name]),
);

/** Undefined when the call came back as the rows need; else one line saying what to do. */
export function explainCheck(
  method: Method,
  check: CheckedCall,
  options: Pick<RemoteOptions, "gateway" | "token">,
): string | undefined {
  const url = options.gateway;
  const noToken = options.token.choice.kind === "none";
  const who = options.token.email() ?? "the token's account";
  switch (check.httpStatus) {
    case 200:
      break;
    case 401:
      return `401 from ${url}: the token does not verify there (expired, not an ID token, or its audience is not ${url}); get one for that audience`;
    case 403:
      return noToken
        ? `403 from ${url}: no token was sent (--no-token) and the service is not public; leave --no-token out`
        : `403: ${who} is not an invoker of ${url} (roles/run.invoker on the gateway service)`;
    case 404:
      return `404 from ${url}: no ${method} there; is it the gateway's URL?`;
    case 429:
    case 503:
      return `${check.httpStatus} from ${url}: the service takes no calls now (no instance free, or starting); try again, or lower BENCH_CONCURRENCY`;
    default:
      return `HTTP ${check.httpStatus} from ${url} for ${method}: not a gRPC answer; is it the gateway's URL?`;
  }
  const [code = "", ...rest] = check.grpcStatus.split(" ");
  const message = rest.join(" ");
  if (code !== "0") {
    const name = statusNames[code] ?? `grpc-status ${code || "missing"}`;
    const detail = message ? ` (${message})` : "";
    if (name === "UNAUTHENTICATED") {
      return `${method}: UNAUTHENTICATED${detail}: the gateway refused ${noToken ? "a call without a token; leave --no-token out" : `the token; its audience must be ${url}`}`;
    }
    if (name === "PERMISSION_DENIED") {
      return `${method}: PERMISSION_DENIED${detail}: the gateway does not let ${who} call ${method}`;
    }
    return `${method} ended with ${name}${detail}`;
  }
  const wanted = methods[method].messages;
  if (check.messages !== wanted) {
    return `${method} answered ${check.messages} messages, not ${wanted}: is it this repository's gateway (its feature data)?`;
  }
  return undefined;
}
