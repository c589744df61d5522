// Service-to-service auth on real processes: every edge of infra/topology.json is allowed,
// every other caller is refused, bad tokens are refused, and tokens are fetched once.
// The gateway's front door (no token or a bad one is refused) is checked on the deployed stack
// too, where Cloud Run's front end refuses such calls before the gateway sees them.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Stack, type StackServiceName, startStack } from "@cloudrun-grpc/local-stack";
import {
  createGatewayClient,
  createRouteGuideClient,
  createStatsClient,
} from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import {
  deadline,
  failure,
  healthStatus,
  stackGatewayClient,
  targetOf,
  unary,
} from "./support/grpc.js";
import {
  deployed,
  describeLocalOnly,
  type GatewayTarget,
  startGatewayTarget,
} from "./support/target.js";

type Caller = "gateway" | "route" | "stats" | "client";
const here = { latitude: 1, longitude: 1 };

describeLocalOnly("invoker-scoped auth across the services", () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack();
  });
  after(async () => {
    await stack?.stop();
  });

  const auth = () => {
    if (!stack.auth) throw new Error("the stack runs without auth");
    return stack.auth;
  };
  const bearer = (token: string) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    return metadata;
  };
  /** Calls `callee` directly: stats' GetStats, or route's or the gateway's GetFeature. */
  async function callDirect(
    callee: StackServiceName,
    metadata: grpc.Metadata,
  ): Promise<grpc.ServiceError | undefined> {
    const target = targetOf(stack[callee].url);
    const credentials = grpc.credentials.createInsecure();
    const clients: grpc.Client[] = [];
    const ask = (): Promise<unknown> => {
      if (callee === "stats") {
        const client = createStatsClient(target, credentials);
        clients.push(client);
        return unary((done) => client.GetStats({ topN: 1 }, metadata, deadline(), done));
      }
      const client =
        callee === "route"
          ? createRouteGuideClient(target, credentials)
          : createGatewayClient(target, credentials);
      clients.push(client);
      return unary((done) => client.GetFeature({ point: here }, metadata, deadline(), done));
    };
    try {
      await ask();
      return undefined;
    } catch (error) {
      return error as grpc.ServiceError;
    } finally {
      for (const client of clients) client.close();
    }
  }
  const tokenFrom = (caller: Caller, callee: StackServiceName) =>
    auth().tokenFor(caller, stack[callee].url);

  // First in this file: the tokens the tests below ask the authority for count there too.
  test("1,000 calls through the gateway fetch at most one token per (caller, audience)", async () => {
    const client = await stackGatewayClient(stack);
    try {
      for (let index = 0; index < 1000; index += 1) {
        await unary((done) => client.GetFeature({ point: here }, deadline(), done));
      }
      await unary((done) => client.GetStats({ topN: 1 }, deadline(), done));
    } finally {
      client.close();
    }
    const minted = auth().authority.mintedTokens;
    for (const [caller, callee] of [
      ["gateway", "route"],
      ["gateway", "stats"],
      ["route", "stats"],
    ] as [Caller, StackServiceName][]) {
      assert.equal(
        minted.get(`${auth().emails[caller]} ${stack[callee].url}`),
        1,
        `${caller} → ${callee}`,
      );
    }
  });
  test("every edge of the topology is allowed, with the caller's own token for the callee's URL", async () => {
    for (const [caller, callee] of [
      ["gateway", "route"],
      ["gateway", "stats"],
      ["route", "stats"],
      ["client", "gateway"],
    ] as [Caller, StackServiceName][]) {
      const error = await callDirect(callee, bearer(await tokenFrom(caller, callee)));
      assert.equal(error, undefined, `${caller} → ${callee}: ${error?.details}`);
    }
  });

  test("every other caller gets PERMISSION_DENIED naming itself and the service", async () => {
    const denied: [Caller, StackServiceName][] = [
      ["stats", "route"],
      ["route", "route"],
      ["client", "route"],
      ["client", "stats"],
      ["stats", "stats"],
      ["route", "gateway"],
      ["stats", "gateway"],
      ["gateway", "gateway"],
    ];
    for (const [caller, callee] of denied) {
      const error = await callDirect(callee, bearer(await tokenFrom(caller, callee)));
      assert.equal(error?.code, grpc.status.PERMISSION_DENIED, `${caller} → ${callee}`);
      assert.match(error?.details ?? "", new RegExp(`^${auth().emails[caller]} may not call `));
    }
  });

  test("no token or a bad token gets UNAUTHENTICATED, and the service stays healthy", async () => {
    for (const callee of ["route", "stats"] as const) {
      const now = Math.floor(Date.now() / 1000);
      const claims = {
        iss: auth().authority.issuer,
        email: auth().emails.gateway,
        email_verified: true,
        iat: now,
        exp: now + 3600,
      };
      const aud = stack[callee].url;
      const good = { ...claims, aud };
      const signed = (extra: Record<string, unknown>, header?: { kid?: string }) =>
        auth().authority.sign({ ...good, ...extra }, header);
      const [header, payload, signature] = (await signed({})).split(".");
      const tampered = Buffer.from(
        JSON.stringify({
          ...JSON.parse(Buffer.from(payload as string, "base64url").toString()),
          email: auth().emails.stats,
        }),
      ).toString("base64url");
      const unsigned = `${Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url")}.${payload}.`;
      const { exp: _exp, ...noExp } = good;
      const cases: [grpc.Metadata, RegExp][] = [
        [new grpc.Metadata(), /^missing authorization/],
        [bearer("garbage"), /not a JWT/],
        [bearer("ya29.an-access-token-not-an-id-token"), /not a JWT/],
        [bearer(`${"x".repeat(20_000)}.y.z`), /longer than 16384 bytes/],
        [
          bearer(await tokenFrom("gateway", callee === "route" ? "stats" : "route")),
          /audience is not this service/,
        ],
        [bearer(await signed({ aud: `${aud}/` })), /audience is not this service/],
        [
          bearer(await signed({ aud: aud.replace("http:", "https:") })),
          /audience is not this service/,
        ],
        [bearer(await signed({ iat: now - 7200, exp: now - 3600 })), /expired/],
        [bearer(await signed({ nbf: now + 600 })), /not valid yet/],
        [bearer(await signed({ iat: now + 600, exp: now + 4200 })), /issue time/],
        [bearer(await auth().authority.sign(noExp)), /"exp"/],
        [bearer(await signed({ exp: now + 25 * 3600 })), /lifetime is over/],
        [bearer(await signed({ iss: "https://accounts.google.com" })), /issuer is not allowed/],
        [bearer(await signed({}, { kid: "no-such-key" })), /key id is unknown/],
        [bearer(`${header}.${tampered}.${signature}`), /signature is invalid/],
        [bearer(unsigned), /algorithm "none" is not RS256/],
      ];
      for (const [metadata, details] of cases) {
        const error = await callDirect(callee, metadata);
        assert.equal(error?.code, grpc.status.UNAUTHENTICATED, `${callee}: ${details}`);
        assert.match(error?.details ?? "", details);
      }
      assert.equal(await healthStatus(targetOf(stack[callee].url), ""), "SERVING");
    }
  });
});

describe("the gateway's front door", () => {
  let gateway: GatewayTarget;
  before(async () => {
    gateway = await startGatewayTarget();
  });
  after(async () => {
    await gateway?.close();
  });

  test("a call without an ID token for the gateway's URL gets UNAUTHENTICATED; with one it is answered", async () => {
    const client = gateway.connect(createGatewayClient, { token: false });
    // Both headers, as callers send tokens (packages/auth-client/src/interceptors.ts).
    const bearer = (token: string) => {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${token}`);
      metadata.set("x-serverless-authorization", `Bearer ${token}`);
      return metadata;
    };
    // GetStats counts nothing, so the stats the gateway tests check are left alone.
    const call = (metadata: grpc.Metadata) =>
      unary((done) => client.GetStats({ topN: 0 }, metadata, deadline(), done));

    // The same call with the right token is answered: the refusals below are the token's doing.
    await call(bearer(await gateway.tokenFor(gateway.url)));

    const cases: [string, grpc.Metadata, RegExp][] = [
      ["no token", new grpc.Metadata(), /^missing authorization/],
      ["not a JWT", bearer("garbage"), /not a JWT/],
      [
        "a token for another audience",
        bearer(await gateway.tokenFor("https://not-the-gateway.example.com")),
        /audience is not this service/,
      ],
    ];
    for (const [label, metadata, details] of cases) {
      const error = await failure(call(metadata));
      assert.equal(error.code, grpc.status.UNAUTHENTICATED, `${label}: ${error.details}`);
      // Deployed, Cloud Run's front end answers HTTP 401 (grpc-js: UNAUTHENTICATED, with no
      // reason); locally the gateway's own check names the check that failed.
      if (!deployed) assert.match(error.details, details, label);
    }
  });
});
