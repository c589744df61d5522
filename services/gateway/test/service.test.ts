// gateway built through its factory and served in-process, in front of route and stats built
// through theirs (stats over a real PostgreSQL database): its handlers on real HTTP/2 behind
// the real auth check, each end user's calls counted for that end user.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  createGatewayClient,
  endOfRouteBytes,
  explicitRouteEnd,
  type GatewayServiceClient,
  type gateway,
  idempotencyKeyHeader,
  keepBytes,
  routeEndHeader,
} from "@cloudrun-grpc/proto";
import { routeConfigSchema } from "@cloudrun-grpc/route/config";
import { createRouteService } from "@cloudrun-grpc/route/service";
import { statsConfigSchema } from "@cloudrun-grpc/stats/config";
import { createStatsService } from "@cloudrun-grpc/stats/service";
import {
  collect,
  deadline,
  failure,
  type InProcessAuth,
  type InProcessService,
  inProcessServiceEmail,
  serveInProcess,
  startInProcessAuth,
  TestDatabases,
  unary,
  until,
} from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import { gatewayConfigSchema } from "../src/config.js";
import { createGatewayService } from "../src/service.js";

const ana = "ana@example.com";
const bob = "bob@example.com";
const carol = "carol@example.com";
// A named feature of the bundled data set (services/route/data/features.json).
const named = { latitude: 402_223_000, longitude: -749_300_000 };
const namedFeature = "Red Orchard Market";
const area = {
  lo: { latitude: 400_000_000, longitude: -750_000_000 },
  hi: { latitude: 420_000_000, longitude: -730_000_000 },
};

describe("gateway built in-process (createGatewayService), before route and stats built in-process", () => {
  const databases = new TestDatabases("gateway_service_test");
  let auth: InProcessAuth;
  const services: InProcessService[] = [];
  let gatewayService: InProcessService;
  let client: GatewayServiceClient;

  const as = (user: string) => auth.bearer(gatewayService.url, user);
  const callersCounts = async () => {
    const metadata = await as(ana);
    const { snapshot } = await unary<gateway.GetStatsResponse>((done) =>
      client.getStats({}, metadata, deadline(), done),
    );
    return new Map(
      (snapshot?.callers ?? []).map((entry) => [
        entry.caller,
        { lookups: Number(entry.featureLookups), routes: Number(entry.routesRecorded) },
      ]),
    );
  };

  before(async () => {
    auth = await startInProcessAuth();
    const database = await databases.create();
    const stats = await serveInProcess(statsConfigSchema, createStatsService, auth, {
      STATS_DATABASE_URL: database.url(),
    });
    services.push(stats);
    const route = await serveInProcess(routeConfigSchema, createRouteService, auth, {
      STATS_URL: stats.url,
    });
    services.push(route);
    gatewayService = await serveInProcess(gatewayConfigSchema, createGatewayService, auth, {
      ROUTE_URL: route.url,
      STATS_URL: stats.url,
      // End users call the gateway; the service identity calls route and stats.
      AUTH_ALLOWED_INVOKERS: `${ana},${bob},${carol},${inProcessServiceEmail}`,
    });
    services.push(gatewayService);
    client = createGatewayClient(gatewayService.target, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    // The gateway first, stats last: each peer stops after the services that call it.
    for (const service of services.reverse()) await service.stop();
    await databases.dropAll();
    await auth?.close();
  });

  it("GetFeature through route, counted in stats for the end user who called the gateway", async () => {
    const metadata = await as(ana);
    const { feature } = await unary<gateway.GetFeatureResponse>((done) =>
      client.getFeature({ point: named }, metadata, deadline(), done),
    );
    assert.equal(feature?.name, namedFeature);
    await until(
      async () => (await callersCounts()).get(ana)?.lookups === 1,
      `stats counted one look-up for ${ana}`,
      10_000,
    );
  });

  it("RecordRoute forwarded to route with an explicit end, counted once for the end user", async () => {
    const metadata = await as(bob);
    const response = await new Promise<gateway.RecordRouteResponse>((resolve, reject) => {
      const call = client.recordRoute(metadata, deadline(), (error, answer) =>
        error ? reject(error) : resolve(answer as gateway.RecordRouteResponse),
      );
      call.write({ point: named });
      call.write({ point: { latitude: named.latitude + 1000, longitude: named.longitude } });
      call.end();
    });
    assert.equal(response.summary?.pointCount, 2);
    await until(
      async () => (await callersCounts()).get(bob)?.routes === 1,
      `stats counted one route for ${bob}`,
      10_000,
    );
  });

  /** A RecordRoute of raw messages (bytes as a client of any language may send them). */
  const rawRecordRoute = async (messages: Buffer[], explicitEnd = false) => {
    const metadata = await as(carol);
    if (explicitEnd) metadata.set(routeEndHeader, explicitRouteEnd);
    return new Promise<Buffer>((resolve, reject) => {
      const call = client.makeClientStreamRequest(
        "/gateway.v1.GatewayService/RecordRoute",
        keepBytes,
        keepBytes,
        metadata,
        deadline(),
        (error, response) => (error ? reject(error) : resolve(response as Buffer)),
      );
      for (const message of messages) call.write(message);
      call.end();
    });
  };
  const carolsRoutes = async () => (await callersCounts()).get(carol)?.routes ?? 0;

  it("RecordRoute refuses an end_of_route with a point, a message after it, and one hidden in another wire type, counting none", async () => {
    // point {latitude: 2, longitude: 2}; end_of_route = true; field 2 sent length-delimited,
    // which route's decoder would read as end_of_route = true.
    const point = Buffer.from([0x0a, 0x04, 0x08, 0x02, 0x10, 0x02]);
    const cases: [string, Buffer[], RegExp][] = [
      ["end with a point", [Buffer.concat([point, endOfRouteBytes])], /carries no point/],
      ["a point after the end", [point, endOfRouteBytes, point], /nothing may follow/],
      ["a hidden end", [point, Buffer.from([0x12, 0x02, 0x78, 0x00])], /wrong wire type/],
    ];
    for (const [what, messages, details] of cases) {
      const error = await failure(rawRecordRoute(messages, true));
      assert.equal(error.code, grpc.status.INVALID_ARGUMENT, what);
      assert.match(error.details, details, what);
    }
    // Then one good route of carol's: once it is counted, it is the only one.
    await rawRecordRoute([point, endOfRouteBytes], true);
    await until(async () => (await carolsRoutes()) >= 1, `carol's good route counted`, 10_000);
    assert.equal(await carolsRoutes(), 1, "only the good route counts");
  });

  it("ListFeatures and DescribeArea agree on the features of an area", async () => {
    const metadata = await as(ana);
    const listed = await collect(client.listFeatures({ rectangle: area }, metadata, deadline()));
    const described = await unary<gateway.DescribeAreaResponse>((done) =>
      client.describeArea({ rectangle: area, topN: 3 }, metadata, deadline(), done),
    );
    assert.ok(listed.length > 0, "no feature listed in the area");
    assert.equal(described.featureCount, listed.length);
    // ana's look-up of that feature (the first test) is inside the area.
    assert.ok(Number(described.lookupsInArea) >= 1);
    assert.equal(described.mostLookedUp?.[0]?.feature?.name, namedFeature);
  });

  it("refuses a malformed idempotency key with INVALID_ARGUMENT", async () => {
    const metadata = await as(ana);
    metadata.set(idempotencyKeyHeader, "has spaces");
    const error = await failure(
      unary((done) => client.getFeature({ point: named }, metadata, deadline(), done)),
    );
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.match(error.details, new RegExp(idempotencyKeyHeader));
  });

  it("refuses an end user not among its invokers with PERMISSION_DENIED", async () => {
    const metadata = await as("mallory@example.com");
    const error = await failure(
      unary((done) => client.getFeature({ point: named }, metadata, deadline(), done)),
    );
    assert.equal(error.code, grpc.status.PERMISSION_DENIED);
  });
});
