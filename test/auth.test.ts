// Service-to-service auth on real processes: every edge of infra/topology.json is allowed,
// for its methods only, every other caller is refused, bad tokens are refused (before any
// method lookup), tokens are fetched once, and a public gateway serves calls without a token.
// The gateway's front door (no token or a bad one is refused) is checked on the deployed stack
// too, where Cloud Run's front end refuses such calls before the gateway sees them.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { after, before, describe, test } from "node:test";
import {
  type Stack,
  type StackServiceName,
  serviceEntry,
  startStack,
} from "@cloudrun-grpc/local-stack";
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
  behindFrontEnd,
  describeLocalOnly,
  type GatewayTarget,
  noTokenCodes,
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
  /**
   * Calls `callee` directly: stats' GetStats (or RecordEvents with no events, `write`), or
   * route's or the gateway's GetFeature.
   */
  async function callDirect(
    callee: StackServiceName,
    metadata: grpc.Metadata,
    write = false,
  ): Promise<grpc.ServiceError | undefined> {
    const target = targetOf(stack[callee].url);
    const credentials = grpc.credentials.createInsecure();
    const clients: grpc.Client[] = [];
    const ask = (): Promise<unknown> => {
      if (callee === "stats") {
        const client = createStatsClient(target, credentials);
        clients.push(client);
        if (write) {
          return unary((done) => client.RecordEvents({ events: [] }, metadata, deadline(), done));
        }
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
    for (const [caller, callee, write] of [
      ["gateway", "route", false],
      ["gateway", "stats", false],
      ["route", "stats", true],
      ["client", "gateway", false],
    ] as [Caller, StackServiceName, boolean][]) {
      const error = await callDirect(callee, bearer(await tokenFrom(caller, callee)), write);
      if (write) {
        // An empty batch reaches stats' handler, which refuses it: past auth, nothing counted.
        assert.equal(error?.details, "events must not be empty", `${caller} → ${callee}`);
      } else assert.equal(error, undefined, `${caller} → ${callee}: ${error?.details}`);
    }
  });

  test("an edge allows only its methods: the gateway may not write to stats, route may not read it", async () => {
    for (const [caller, write, method] of [
      ["gateway", true, "RecordEvents"],
      ["route", false, "GetStats"],
    ] as [Caller, boolean, string][]) {
      const error = await callDirect("stats", bearer(await tokenFrom(caller, "stats")), write);
      assert.equal(error?.code, grpc.status.PERMISSION_DENIED, `${caller} → stats ${method}`);
      assert.equal(
        error?.details,
        `${auth().emails[caller]} may not call stats.v1.StatsService/${method}`,
      );
    }
  });

  test("an unknown method is authenticated first: no token → UNAUTHENTICATED, so methods cannot be probed", async () => {
    const probe = async (callee: StackServiceName, path: string, metadata: grpc.Metadata) => {
      const client = new grpc.Client(
        targetOf(stack[callee].url),
        grpc.credentials.createInsecure(),
      );
      try {
        return await failure(
          unary((done) =>
            client.makeUnaryRequest(
              path,
              (value: Buffer) => value,
              (value: Buffer) => value,
              Buffer.alloc(0),
              metadata,
              deadline(),
              done,
            ),
          ),
        );
      } finally {
        client.close();
      }
    };
    const services = {
      gateway: "gateway.v1.GatewayService",
      route: "routeguide.v1.RouteGuideService",
      stats: "stats.v1.StatsService",
    };
    for (const [callee, service] of Object.entries(services) as [StackServiceName, string][]) {
      for (const path of [
        `/${service}/DeleteEverything`,
        "/nothing.v1.Here/At",
        `/${service}/GetFeature`,
      ]) {
        const error = await probe(callee, path, new grpc.Metadata());
        assert.equal(error.code, grpc.status.UNAUTHENTICATED, `${callee}${path}: ${error.details}`);
        assert.match(error.details, /^missing authorization/);
      }
    }
    // With a token: an invoker allowed every method learns it does not exist; one granted
    // some methods is refused anything else, unknown methods included.
    const unknown = "/gateway.v1.GatewayService/Forget";
    const asClient = await probe("gateway", unknown, bearer(await tokenFrom("client", "gateway")));
    assert.equal(asClient.code, grpc.status.UNIMPLEMENTED);
    assert.equal(asClient.details, `The server does not implement the method ${unknown}`);
    const asGateway = await probe(
      "stats",
      "/stats.v1.StatsService/DeleteEverything",
      bearer(await tokenFrom("gateway", "stats")),
    );
    assert.equal(asGateway.code, grpc.status.PERMISSION_DENIED);
    assert.equal(
      asGateway.details,
      `${auth().emails.gateway} may not call stats.v1.StatsService/DeleteEverything`,
    );
    // Health stays open to all.
    for (const callee of ["gateway", "route", "stats"] as const) {
      assert.equal(await healthStatus(targetOf(stack[callee].url), ""), "SERVING");
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
        // An array naming this service and another is not a token for this service.
        [
          bearer(await signed({ aud: [aud, "https://elsewhere.example.com"] })),
          /audience is not this service alone/,
        ],
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
      // Behind a Cloud Run front end, its edge answers itself, with no reason of the
      // container's: 403 without a token (noTokenCodes), 401 (UNAUTHENTICATED) for a token that
      // does not verify; locally the gateway's own check names the check that failed.
      const codes = label === "no token" ? noTokenCodes : [grpc.status.UNAUTHENTICATED];
      assert.ok(codes.includes(error.code), `${label}: ${error.code} ${error.details}`);
      if (!behindFrontEnd) assert.match(error.details, details, label);
    }
  });
});

describeLocalOnly("auth configuration", () => {
  function startWith(service: StackServiceName, env: Record<string, string>) {
    const result = spawnSync(process.execPath, [serviceEntry(service)], {
      env: {
        PATH: process.env.PATH ?? "",
        HOST: "127.0.0.1",
        PORT: "0",
        ROUTE_URL: "http://127.0.0.1:1",
        STATS_URL: "http://127.0.0.1:1",
        STATS_DATABASE_URL: "postgres://127.0.0.1:1/stats",
        ...env,
      },
      encoding: "utf8",
      timeout: 15_000,
    });
    return { status: result.status, lines: result.stderr.trim().split("\n") };
  }

  test("AUTH_MODE=off is refused on Cloud Run (K_SERVICE set), with one clear line", () => {
    for (const service of ["gateway", "route", "stats"] as const) {
      const { status, lines } = startWith(service, { AUTH_MODE: "off", K_SERVICE: service });
      assert.equal(status, 2, lines.join("\n"));
      assert.deepEqual(lines, [
        `${service}: config error: AUTH_MODE: off is refused on Cloud Run (K_SERVICE="${service}" is set): use verify, or optional for a public gateway`,
      ]);
    }
  });

  test("route and stats refuse AUTH_MODE=optional: only the gateway may be public", () => {
    const audiences = { AUTH_AUDIENCES: "http://127.0.0.1:1" };
    for (const service of ["route", "stats"] as const) {
      const { status, lines } = startWith(service, { AUTH_MODE: "optional", ...audiences });
      assert.equal(status, 2, lines.join("\n"));
      assert.deepEqual(lines, [
        `${service}: config error: AUTH_MODE: optional is for a public gateway only: this service is never public`,
      ]);
    }
  });

  test("a bad AUTH_ALLOWED_INVOKERS entry is one line naming the variable and the entry", () => {
    const { status, lines } = startWith("stats", {
      AUTH_AUDIENCES: "http://127.0.0.1:1",
      AUTH_ALLOWED_INVOKERS: "ok@p.iam.gserviceaccount.com=GetStats,route@p=record-events",
    });
    assert.equal(status, 2);
    assert.deepEqual(lines, [
      'stats: config error: AUTH_ALLOWED_INVOKERS: "route@p=record-events": "record-events" is not a method name (e.g. GetStats)',
    ]);
  });
});

describeLocalOnly("a public gateway (AUTH_MODE=optional, Terraform's gateway_public)", () => {
  let stack: Stack;
  const cliEntry = new URL("../packages/cli/dist/main.js", import.meta.url).pathname;
  function cli(args: string[], env: Record<string, string> = {}) {
    return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [cliEntry, ...args], {
        env: { PATH: process.env.PATH ?? "", ...env },
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (chunk) => (stdout += chunk));
      child.stderr.on("data", (chunk) => (stderr += chunk));
      child.on("exit", (code) => resolve({ code, stdout, stderr }));
    });
  }
  before(async () => {
    // Every OK call gets its line (the default keeps one trace in ten): the test reads one.
    stack = await startStack({ publicGateway: true, env: { all: { LOG_RPC_SAMPLE_RATE: "1" } } });
  });
  after(async () => {
    await stack?.stop();
  });

  test("the CLI's --no-token is served, as the anonymous caller", async () => {
    const gateway = ["--gateway", stack.gateway.url, "--timeout", "20", "--no-token"];
    const got = await cli([...gateway, "get-feature", "40.2223", "-74.93"]);
    assert.equal(got.code, 0, got.stderr);
    assert.match(got.stdout, /^Feature at 40\.2223, -74\.93/);
    // Counted as such: stats lists the look-up for the anonymous end client (route reports
    // in batches: asked until it shows).
    let stats = await cli([...gateway, "get-stats", "--top", "1"]);
    for (
      let tries = 0;
      tries < 50 && !/caller anonymous: 0 routes, 1 look-ups/.test(stats.stdout);
      tries += 1
    ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      stats = await cli([...gateway, "get-stats", "--top", "1"]);
    }
    assert.equal(stats.code, 0, stats.stderr);
    assert.match(stats.stdout, /caller anonymous: 0 routes, 1 look-ups/);
    const line = stack.gateway.lines
      .map((text) => JSON.parse(text))
      .find((entry) => entry.rpc?.method === "/gateway.v1.GatewayService/GetFeature");
    assert.equal(line?.rpc?.caller, "anonymous", JSON.stringify(line));
    assert.equal(line?.rpc?.code, "OK");
  });

  test("a token that is present must still verify; the local client's good token is served", async () => {
    const bad = await cli(["--gateway", stack.gateway.url, "--token", "garbage", "get-stats"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /UNAUTHENTICATED/);
    assert.match(bad.stderr, /not a JWT/);
    const good = await cli(["--gateway", stack.gateway.url, "get-stats", "--top", "1"], {
      GCE_METADATA_HOST: stack.auth?.authority.metadataHosts.client as string,
    });
    assert.equal(good.code, 0, good.stderr);
  });

  test("route and stats stay closed: a call without a token is refused", async () => {
    const route = createRouteGuideClient(
      targetOf(stack.route.url),
      grpc.credentials.createInsecure(),
    );
    const stats = createStatsClient(targetOf(stack.stats.url), grpc.credentials.createInsecure());
    try {
      const refused = [
        await failure(unary((done) => route.GetFeature({ point: here }, deadline(), done))),
        await failure(unary((done) => stats.GetStats({ topN: 1 }, deadline(), done))),
      ];
      for (const error of refused) assert.equal(error.code, grpc.status.UNAUTHENTICATED);
    } finally {
      route.close();
      stats.close();
    }
  });
});
