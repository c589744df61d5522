// What the integration suite runs against, decided here and nowhere else, from the environment:
//
//   TEST_TARGET=local (the default)  each test file starts its own processes on loopback;
//   TEST_TARGET=cloud-run            each test file starts the three services under the local
//                                    Cloud Run front ends (packages/cloud-run-local, configured
//                                    from infra/): the gateway at https://localhost:<port>,
//                                    route and stats internal, as deployed (pnpm test:cloud-run);
//   TEST_TARGET=deployed             a deployed stack, GATEWAY_URL=https://gateway-….run.app: only
//                                    the gateway is reachable (route and stats take internal
//                                    traffic only), called with ID tokens for its URL from the
//                                    runner's Application Default Credentials.
//
// Tests that cannot run behind a Cloud Run front end say so (localOnly, describeLocalOnly):
// a cloud-run or deployed run reports them skipped with the reason, never leaves them out
// silently.
import { describe, type TestOptions, test } from "node:test";
import { IdTokenSource, idTokenInterceptor } from "@cloudrun-grpc/auth-client";
import {
  type Stack,
  type StackOptions,
  startCloudRunStack,
  startStack,
} from "@cloudrun-grpc/local-stack";
import { createGatewayClient, type GatewayServiceClient } from "@cloudrun-grpc/proto";
import { type ClientFactory, connectPeer, parsePeerUrl } from "@cloudrun-grpc/runtime";
import type * as grpc from "@grpc/grpc-js";
import { status as grpcStatus } from "@grpc/grpc-js";
import { collect, deadline, unary } from "./grpc.js";

export type Target =
  | { kind: "local" }
  | { kind: "cloud-run" }
  | { kind: "deployed"; gatewayUrl: string };

/** Reads TEST_TARGET and GATEWAY_URL; throws an Error that says what to set. */
export function parseTarget(env: Record<string, string | undefined>): Target {
  const kind = env.TEST_TARGET || "local";
  if (kind === "local" || kind === "cloud-run") return { kind };
  if (kind !== "deployed") {
    throw new Error(
      `TEST_TARGET must be "local", "cloud-run" or "deployed", got ${JSON.stringify(kind)}`,
    );
  }
  const raw = env.GATEWAY_URL;
  if (!raw) {
    throw new Error(
      "TEST_TARGET=deployed needs GATEWAY_URL, the deployed gateway's URL " +
        "(e.g. https://gateway-….run.app: `terraform -chdir=infra output -raw gateway_url`)",
    );
  }
  try {
    return { kind, gatewayUrl: parsePeerUrl(raw).url };
  } catch (error) {
    throw new Error(`GATEWAY_URL ${(error as Error).message}`);
  }
}

export const target: Target = parseTarget(process.env);
export const deployed = target.kind === "deployed";
/**
 * The gateway is behind a Cloud Run front end (deployed, or the local one): its edge answers
 * some refusals itself (403, 401 with no reason of the container's), and route and stats take
 * internal traffic only.
 */
export const behindFrontEnd = target.kind !== "local";

/**
 * What a call without a token gets. Cloud Run's edge answers it with HTTP 403, which grpc-js
 * reports as PERMISSION_DENIED (packages/cloud-run-local reproduces it; see its README, "401 or
 * 403"); the gateway's own check answers UNAUTHENTICATED ("missing authorization"). Deployed,
 * either: test/deployed-mode.test.ts plays a deployed stack with one that has no front end.
 */
export const noTokenCodes: readonly grpc.status[] =
  target.kind === "local"
    ? [grpcStatus.UNAUTHENTICATED]
    : target.kind === "cloud-run"
      ? [grpcStatus.PERMISSION_DENIED]
      : [grpcStatus.PERMISSION_DENIED, grpcStatus.UNAUTHENTICATED];

/** The reason a test that starts or kills processes gives for not running deployed. */
export const startsProcesses = "starts or kills processes: local only";
/** The reason a test that calls route or stats itself gives: deployed, only the gateway is reachable. */
export const internalServices =
  "calls route or stats directly, which take internal traffic only when deployed: local only";

/** Options for a test() that runs only locally: behind a front end, it is reported skipped with `reason`. */
export function localOnly(reason = startsProcesses): TestOptions {
  return behindFrontEnd ? { skip: reason } : {};
}

/**
 * describe() for a suite that runs only locally. Deployed, none of it runs (not even its
 * hooks) and it is reported as one skipped test with `reason`: node:test's summary counts
 * skipped tests, not skipped suites.
 */
export function describeLocalOnly(name: string, fn: () => void, reason = startsProcesses): void {
  if (behindFrontEnd) void test(name, { skip: reason }, () => {});
  else void describe(name, fn);
}

/** Makes a client of the gateway's address, for any service it serves (health, reflection). */
export type GatewayConnect = <Client extends grpc.Client>(
  factory: ClientFactory<Client>,
  options?: { token?: boolean },
) => Client;

export interface GatewayTarget {
  /** The gateway's URL (origin), the audience of its callers' ID tokens. */
  url: string;
  /** The processes behind it, when local; undefined otherwise. */
  stack: Stack | undefined;
  /** A gateway client whose every call carries an ID token for the gateway's URL. */
  client(): GatewayServiceClient;
  /** A client at the gateway's address: with the ID token on every call (default) or none. */
  connect: GatewayConnect;
  /** An ID token of this run's caller for any audience (for tests of the wrong audience). */
  tokenFor(audience: string): Promise<string>;
  /** Closes the clients made here and, when local, stops the stack. */
  close(): Promise<void>;
}

/**
 * The gateway under test. Local: a stack started with `stackOptions` (auth on), called as its
 * local client identity. Cloud-run: the three services under their local front ends, called as
 * the same identity through the gateway's. Deployed: GATEWAY_URL, called with ADC ID tokens
 * (`stackOptions` are ignored there: a deployed stack runs with its own settings).
 */
export async function startGatewayTarget(stackOptions: StackOptions = {}): Promise<GatewayTarget> {
  const stack = target.kind === "local" ? await startStack(stackOptions) : undefined;
  // The same environment and gateway setting on the services under the front ends; what only
  // processes mode has (fixed ports, more route processes, no auth) is refused, not ignored.
  if (
    target.kind === "cloud-run" &&
    (stackOptions.ports || stackOptions.routeInstances || stackOptions.auth === false)
  ) {
    throw new Error(
      "TEST_TARGET=cloud-run: ports, routeInstances and auth: false are processes mode's alone",
    );
  }
  const cloudRun =
    target.kind === "cloud-run"
      ? await startCloudRunStack({
          env: stackOptions.env,
          publicGateway: stackOptions.publicGateway,
        })
      : undefined;
  const url =
    stack?.gateway.url ?? cloudRun?.urls.gateway ?? (target as { gatewayUrl: string }).gatewayUrl;
  // Locally, tokens come from the stack's authority as the local client identity; deployed,
  // from google-auth-library's ADC (the token source services and CLI use).
  const auth = stack ? stack.auth : cloudRun?.auth;
  if (stack && !auth) throw new Error("the test target needs a stack started with auth");
  const tokenSource = (audience: string) =>
    new IdTokenSource(
      audience,
      auth
        ? { provider: async () => ({ fetchIdToken: (aud) => auth.tokenFor("client", aud) }) }
        : {},
    );
  const tokens = tokenSource(url);
  const peer = parsePeerUrl(url);
  // The local front ends' CA; a deployed gateway's certificate chains to the system's roots.
  const rootCerts = cloudRun ? Buffer.from(cloudRun.caPem) : undefined;
  const clients: grpc.Client[] = [];
  const connect: GatewayConnect = (factory, options = {}) => {
    const client = connectPeer(peer, factory, {
      interceptors: options.token === false ? [] : [idTokenInterceptor(tokens)],
      rootCerts,
    });
    clients.push(client);
    return client;
  };
  const gateway: GatewayTarget = {
    url,
    stack,
    client: () => connect(createGatewayClient),
    connect,
    tokenFor: (audience) => (audience === url ? tokens : tokenSource(audience)).token(),
    async close() {
      for (const client of clients) client.close();
      await stack?.stop();
      await cloudRun?.stop();
    },
  };
  if (target.kind === "deployed") await wakeUp(gateway);
  return gateway;
}

/**
 * Cloud Run may have scaled the services to zero: wake gateway, route and stats with calls
 * that count nothing, under a long deadline, so the tests' own deadlines are not spent on
 * cold starts. A gateway that cannot be called at all fails here, saying why.
 */
async function wakeUp(gateway: GatewayTarget): Promise<void> {
  const client = gateway.client();
  const nowhere = { latitude: 0, longitude: 0 };
  try {
    await unary((done) => client.GetStats({ topN: 0 }, deadline(60_000), done));
    await collect(
      client.ListFeatures({ rectangle: { lo: nowhere, hi: nowhere } }, deadline(60_000)),
    );
  } catch (error) {
    throw new Error(`the gateway at ${gateway.url} cannot be called: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
