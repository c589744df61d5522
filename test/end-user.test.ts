// The end user reaches every hop: the gateway names its verified caller on its peer calls,
// route counts each call for that end client, and only the gateway may name one. Real
// processes, real tokens from the stack's token authority.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { loadTopology, serviceAccountEmail } from "@cloudrun-grpc/auth-client";
import { connectGateway } from "@cloudrun-grpc/cli";
import { localProject, type Stack, startStack } from "@cloudrun-grpc/local-stack";
import {
  createRouteGuideClient,
  createStatsClient,
  type GatewayServiceClient,
  type gateway,
  type stats,
} from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { deadline, eventually, targetOf, unary } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const topology = loadTopology().services;
const gatewayEmail = serviceAccountEmail(topology.gateway?.service_account_id ?? "", localProject);
// The stack's local client identity, and a second end client from outside the topology.
const clientEmail = serviceAccountEmail("local-client", localProject);
const anaEmail = "ana@example.com";
const here = { latitude: 407_838_351, longitude: -746_143_763 };

type Callers = Map<string, { routesRecorded: number; featureLookups: number }>;

const byCaller = (snapshot: stats.StatsSnapshot__Output | null | undefined): Callers =>
  new Map(
    (snapshot?.callers ?? []).map((entry) => [
      entry.caller,
      {
        routesRecorded: Number(entry.routesRecorded),
        featureLookups: Number(entry.featureLookups),
      },
    ]),
  );

/** The warnings a service logged about an x-end-user it dropped. */
const dropWarnings = (lines: string[]) =>
  lines
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        return {};
      }
    })
    .filter((entry) => String(entry.message ?? "").startsWith("x-end-user dropped"));

describeLocalOnly("the end user reaches every hop", () => {
  let stack: Stack;
  const clients: grpc.Client[] = [];

  before(async () => {
    stack = await startStack({
      env: {
        // Two end clients may call the gateway.
        gateway: { AUTH_ALLOWED_INVOKERS: [clientEmail, anaEmail].join(",") },
        // The client may also call route directly: a caller that is not the gateway.
        route: { AUTH_ALLOWED_INVOKERS: [gatewayEmail, clientEmail].join(",") },
      },
    });
    assert.equal(stack.auth?.emails.client, clientEmail);
    assert.equal(stack.auth?.emails.gateway, gatewayEmail);
  });
  after(async () => {
    for (const client of clients) client.close();
    await stack?.stop();
  });

  const auth = () => {
    if (!stack.auth) throw new Error("the stack runs without auth");
    return stack.auth;
  };
  /** A token for ana, signed by the stack's authority as it signs every identity's. */
  const anaToken = (audience: string) => {
    const now = Math.floor(Date.now() / 1000);
    return auth().authority.sign({
      iss: auth().authority.issuer,
      aud: audience,
      email: anaEmail,
      email_verified: true,
      iat: now,
      exp: now + 3600,
    });
  };
  const gatewayAs = async (who: "client" | "ana"): Promise<GatewayServiceClient> => {
    const token =
      who === "ana"
        ? await anaToken(stack.gateway.url)
        : await auth().tokenFor("client", stack.gateway.url);
    const client = connectGateway(stack.gateway.url, { kind: "token", token });
    clients.push(client);
    return client;
  };
  const bearer = (token: string, endUser?: string) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    if (endUser !== undefined) metadata.set("x-end-user", endUser);
    return metadata;
  };
  const lookUp = (client: GatewayServiceClient, metadata = new grpc.Metadata()) =>
    unary((done) => client.GetFeature({ point: here }, metadata, deadline(), done));
  const recordRoute = (client: GatewayServiceClient) =>
    unary((done) => {
      const call = client.RecordRoute(deadline(), done);
      call.write({ point: here });
      call.write({ point: { latitude: 408_122_808, longitude: -743_999_179 } });
      call.end();
    });
  /** The per-caller counts, read through the gateway (as ana: any end client may read). */
  const readCallers = async (): Promise<Callers> => {
    const client = await gatewayAs("ana");
    const { snapshot } = await unary<gateway.GetStatsResponse__Output>((done) =>
      client.GetStats({ topN: 0 }, deadline(), done),
    );
    return byCaller(snapshot);
  };
  /** Waits until `expected` callers have exactly the given counts (route reports in batches). */
  const expectCallers = async (expected: Callers) => {
    const matches = (callers: Callers) =>
      [...expected].every(
        ([caller, counts]) => JSON.stringify(callers.get(caller)) === JSON.stringify(counts),
      );
    const callers = await eventually(readCallers, matches, 15_000);
    for (const [caller, counts] of expected) {
      assert.deepEqual(callers.get(caller), counts, `caller ${JSON.stringify(caller)}`);
    }
    return callers;
  };

  test("two end clients through the gateway are counted apart, in GetStats and WatchStats", async () => {
    const asClient = await gatewayAs("client");
    const asAna = await gatewayAs("ana");
    await lookUp(asClient);
    await lookUp(asClient);
    await recordRoute(asClient);
    for (let index = 0; index < 3; index += 1) await lookUp(asAna);
    await recordRoute(asAna);
    await recordRoute(asAna);

    const callers = await expectCallers(
      new Map([
        [clientEmail, { routesRecorded: 1, featureLookups: 2 }],
        [anaEmail, { routesRecorded: 2, featureLookups: 3 }],
      ]),
    );
    // Nothing is the gateway's own any more.
    assert.equal(callers.get(gatewayEmail), undefined);
    assert.deepEqual([...callers.keys()].sort(), [anaEmail, clientEmail].sort());

    // WatchStats shows the same end clients.
    const watch = asClient.WatchStats({ topN: 0 });
    const [first] = await new Promise<gateway.WatchStatsResponse__Output[]>((resolve, reject) => {
      watch.once("data", (message) => resolve([message]));
      watch.once("error", reject);
    });
    watch.cancel();
    watch.on("error", () => {});
    assert.deepEqual(byCaller(first?.snapshot), callers);

    // The gateway's own calls named the end user, which route and stats accepted silently.
    for (const service of [stack.route, stack.stats]) {
      assert.deepEqual(dropWarnings(service.lines), [], `${service.name} dropped an end user`);
    }
  });

  test("an idempotency-key is the end client's own: the same key from two clients counts twice", async () => {
    const before = await readCallers();
    const keyed = () => {
      const metadata = new grpc.Metadata();
      metadata.set("idempotency-key", "order-42");
      return metadata;
    };
    for (const who of ["client", "ana", "client", "ana"] as const) {
      await lookUp(await gatewayAs(who), keyed());
    }
    const plusOneLookup = (caller: string) => ({
      routesRecorded: before.get(caller)?.routesRecorded ?? 0,
      featureLookups: (before.get(caller)?.featureLookups ?? 0) + 1,
    });
    await expectCallers(
      new Map([
        [clientEmail, plusOneLookup(clientEmail)],
        [anaEmail, plusOneLookup(anaEmail)],
      ]),
    );
  });

  test("a client's own x-end-user to the gateway does not choose its identity", async () => {
    const before = await readCallers();
    const asClient = await gatewayAs("client");
    const spoofed = new grpc.Metadata();
    spoofed.set("x-end-user", anaEmail);
    await lookUp(asClient, spoofed);
    await lookUp(asClient, spoofed);
    await expectCallers(
      new Map([
        [
          clientEmail,
          {
            routesRecorded: before.get(clientEmail)?.routesRecorded ?? 0,
            featureLookups: (before.get(clientEmail)?.featureLookups ?? 0) + 2,
          },
        ],
        [anaEmail, before.get(anaEmail) ?? { routesRecorded: 0, featureLookups: 0 }],
      ]),
    );
    // The gateway said so, once (the second within the minute is counted, not logged).
    const warnings = dropWarnings(stack.gateway.lines);
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.equal(warnings[0]?.severity, "WARNING");
    assert.equal(warnings[0]?.caller, clientEmail);
    assert.deepEqual(warnings[0]?.claimedEndUser, [anaEmail]);
    assert.equal(warnings[0]?.method, "/gateway.v1.GatewayService/GetFeature");
    // route heard of it from the gateway only as the client itself.
    assert.deepEqual(dropWarnings(stack.route.lines), []);
  });

  test("a client's forged internal headers (x-accepted-end-user, x-verified-caller) choose nothing at the gateway", async () => {
    const before = await readCallers();
    const asClient = await gatewayAs("client");
    const forged = new grpc.Metadata();
    forged.set("x-accepted-end-user", anaEmail);
    forged.set("x-verified-caller", anaEmail);
    await lookUp(asClient, forged);
    await expectCallers(
      new Map([
        [
          clientEmail,
          {
            routesRecorded: before.get(clientEmail)?.routesRecorded ?? 0,
            featureLookups: (before.get(clientEmail)?.featureLookups ?? 0) + 1,
          },
        ],
        [anaEmail, before.get(anaEmail) ?? { routesRecorded: 0, featureLookups: 0 }],
      ]),
    );
  });

  test("on route, a caller other than the gateway cannot name an end user: it counts as itself, with one warning a minute", async () => {
    const before = await readCallers();
    const route = createRouteGuideClient(
      targetOf(stack.route.url),
      grpc.credentials.createInsecure(),
    );
    clients.push(route);
    const token = await auth().tokenFor("client", stack.route.url);
    for (let index = 0; index < 5; index += 1) {
      await unary((done) =>
        route.GetFeature({ point: here }, bearer(token, "someone@else.example"), deadline(), done),
      );
    }
    const callers = await expectCallers(
      new Map([
        [
          clientEmail,
          {
            routesRecorded: before.get(clientEmail)?.routesRecorded ?? 0,
            featureLookups: (before.get(clientEmail)?.featureLookups ?? 0) + 5,
          },
        ],
      ]),
    );
    assert.equal(callers.get("someone@else.example"), undefined);
    const warnings = dropWarnings(stack.route.lines);
    assert.equal(warnings.length, 1, "one warning for five drops within a minute");
    assert.equal(warnings[0]?.caller, clientEmail);
    assert.deepEqual(warnings[0]?.claimedEndUser, ["someone@else.example"]);
    assert.equal(warnings[0]?.method, "/routeguide.v1.RouteGuideService/GetFeature");
    assert.equal(warnings[0]?.droppedSinceLastWarning, 0);
  });

  test("on stats, route's own identity naming an end user is dropped with a warning", async () => {
    const statsClient = createStatsClient(
      targetOf(stack.stats.url),
      grpc.credentials.createInsecure(),
    );
    clients.push(statsClient);
    const token = await auth().tokenFor("route", stack.stats.url);
    // RecordEvents: the one method the topology grants route on stats. An empty batch, which
    // stats refuses: the end-user check before it is what this is about.
    const refused = await new Promise<grpc.ServiceError | null>((resolve) =>
      statsClient.RecordEvents(
        { events: [] },
        bearer(token, "someone@else.example"),
        deadline(),
        (error) => resolve(error),
      ),
    );
    assert.equal(refused?.code, grpc.status.INVALID_ARGUMENT);
    const warnings = await eventually(
      async () => dropWarnings(stack.stats.lines),
      (found) => found.length > 0,
    );
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]?.caller, auth().emails.route);
    assert.equal(warnings[0]?.method, "/stats.v1.StatsService/RecordEvents");
  });

  test('the gateway\'s own identity names the end user, an anonymous one ("") included', async () => {
    const before = await readCallers();
    const route = createRouteGuideClient(
      targetOf(stack.route.url),
      grpc.credentials.createInsecure(),
    );
    clients.push(route);
    const token = await auth().tokenFor("gateway", stack.route.url);
    const warned = dropWarnings(stack.route.lines).length;
    for (const endUser of ["bob@example.com", "", ""]) {
      await unary((done) =>
        route.GetFeature({ point: here }, bearer(token, endUser), deadline(), done),
      );
    }
    // No x-end-user at all: the gateway's own call (none makes one today), counted as its own.
    await unary((done) => route.GetFeature({ point: here }, bearer(token), deadline(), done));
    const lookups = (caller: string) => before.get(caller)?.featureLookups ?? 0;
    await expectCallers(
      new Map([
        ["bob@example.com", { routesRecorded: 0, featureLookups: lookups("bob@example.com") + 1 }],
        ["", { routesRecorded: 0, featureLookups: lookups("") + 2 }],
        [gatewayEmail, { routesRecorded: 0, featureLookups: lookups(gatewayEmail) + 1 }],
      ]),
    );
    assert.equal(dropWarnings(stack.route.lines).length, warned, "nothing dropped");
  });
});
