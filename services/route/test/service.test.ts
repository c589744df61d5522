// route built through its factory and served in-process, reporting to stats built through
// its own (over a real PostgreSQL database): every RPC kind on real HTTP/2 behind the real auth
// check, and what each answered call counts in stats.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { endUserKey } from "@cloudrun-grpc/auth-client";
import { boundsOf } from "@cloudrun-grpc/domain";
import {
  createRouteGuideClient,
  createStatsClient,
  explicitRouteEnd,
  type RouteGuideServiceClient,
  routeEndHeader,
  type routeguide,
  type StatsServiceClient,
  type stats,
} from "@cloudrun-grpc/proto";
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
import { routeConfigSchema } from "../src/config.js";
import { FeatureIndex } from "../src/features.js";
import { createRouteService } from "../src/service.js";

const maxRoutePoints = 50;

describe("route built in-process (createRouteService), reporting to stats built in-process", () => {
  const databases = new TestDatabases("route_service_test");
  const features = FeatureIndex.load();
  let auth: InProcessAuth;
  let statsService: InProcessService;
  let routeService: InProcessService;
  let route: RouteGuideServiceClient;
  let statsClient: StatsServiceClient;

  /** As the gateway calls route: its own token, naming the end user. */
  const asGatewayFor = async (endUser: string) => {
    const metadata = await auth.bearer(routeService.url, inProcessServiceEmail);
    metadata.set(endUserKey, endUser);
    return metadata;
  };
  const callerStats = async (caller: string) => {
    const metadata = await auth.bearer(statsService.url, inProcessServiceEmail);
    const { snapshot } = await unary<stats.GetStatsResponse>((done) =>
      statsClient.getStats({}, metadata, done),
    );
    const counts = snapshot?.callers?.find((entry) => entry.caller === caller);
    return {
      lookups: Number(counts?.featureLookups ?? 0),
      routes: Number(counts?.routesRecorded ?? 0),
    };
  };

  before(async () => {
    auth = await startInProcessAuth();
    const database = await databases.create();
    statsService = await serveInProcess(statsConfigSchema, createStatsService, auth, {
      STATS_DATABASE_URL: database.url(),
    });
    routeService = await serveInProcess(routeConfigSchema, createRouteService, auth, {
      STATS_URL: statsService.url,
      ROUTE_MAX_POINTS: String(maxRoutePoints),
    });
    route = createRouteGuideClient(routeService.target, grpc.credentials.createInsecure());
    statsClient = createStatsClient(statsService.target, grpc.credentials.createInsecure());
  });

  after(async () => {
    route?.close();
    statsClient?.close();
    // route first: its last reports go to stats while stats still serves.
    await routeService?.stop();
    await statsService?.stop();
    await databases.dropAll();
    await auth?.close();
  });

  it("GetFeature answers the feature at a point and counts one look-up for the end user", async () => {
    const known = features.features[0];
    assert.ok(known, "the bundled features file is empty");
    const metadata = await asGatewayFor("getfeature@example.com");
    const { feature } = await unary<routeguide.GetFeatureResponse>((done) =>
      route.getFeature({ point: known.location }, metadata, deadline(), done),
    );
    assert.equal(feature?.name, known.name);
    await until(
      async () => (await callerStats("getfeature@example.com")).lookups === 1,
      "stats counted the look-up for getfeature@example.com",
      10_000,
    );
  });

  it("GetFeature refuses a point off the globe with INVALID_ARGUMENT", async () => {
    const metadata = await asGatewayFor("ana@example.com");
    const error = await failure(
      unary((done) =>
        route.getFeature({ point: { latitude: 1_000_000_000, longitude: 0 } }, metadata, done),
      ),
    );
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
  });

  it("ListFeatures streams exactly the features inside the rectangle", async () => {
    const rectangle = {
      lo: { latitude: 400_000_000, longitude: -750_000_000 },
      hi: { latitude: 420_000_000, longitude: -730_000_000 },
    };
    const expected = [...features.within(boundsOf(rectangle.lo, rectangle.hi))].map(
      (feature) => feature.name,
    );
    assert.ok(expected.length > 0, "the rectangle holds no bundled feature");
    const metadata = await asGatewayFor("ana@example.com");
    const answers = await collect(route.listFeatures({ rectangle }, metadata, deadline()));
    assert.deepEqual(answers.map((answer) => answer.feature?.name).sort(), expected.sort());
  });

  it("RecordRoute with an explicit end summarises the route and counts it once", async () => {
    const metadata = await asGatewayFor("recorder@example.com");
    metadata.set(routeEndHeader, explicitRouteEnd);
    const points = features.features.slice(0, 3).map((feature) => feature.location);
    const summary = await new Promise<routeguide.RecordRouteResponse>((resolve, reject) => {
      const call = route.recordRoute(metadata, deadline(), (error, response) =>
        error ? reject(error) : resolve(response as routeguide.RecordRouteResponse),
      );
      for (const point of points) call.write({ point });
      call.write({ endOfRoute: true });
      call.end();
    });
    assert.equal(summary.summary?.pointCount, 3);
    assert.equal(summary.summary?.featureCount, 3);
    await until(
      async () => (await callerStats("recorder@example.com")).routes === 1,
      "stats counted the route for recorder@example.com",
      10_000,
    );
  });

  it("RecordRoute past ROUTE_MAX_POINTS ends RESOURCE_EXHAUSTED and counts nothing", async () => {
    const metadata = await asGatewayFor("too-long@example.com");
    metadata.set(routeEndHeader, explicitRouteEnd);
    const error = await failure(
      new Promise((resolve, reject) => {
        const call = route.recordRoute(metadata, deadline(), (error, response) =>
          error ? reject(error) : resolve(response),
        );
        for (let i = 0; i <= maxRoutePoints; i += 1) {
          call.write({ point: { latitude: 400_000_000 + i, longitude: -740_000_000 } });
        }
        call.write({ endOfRoute: true });
        call.end();
      }),
    );
    assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(error.details, new RegExp(String(maxRoutePoints)));
    assert.equal((await callerStats("too-long@example.com")).routes, 0);
  });

  it("RouteChat answers each note with the earlier notes at its place", async () => {
    const metadata = await asGatewayFor("ana@example.com");
    const chat = route.routeChat(metadata, deadline());
    const here = { latitude: 1, longitude: 2 };
    const answers = collect(chat);
    chat.write({ note: { location: here, message: "first" } });
    chat.write({ note: { location: { latitude: 3, longitude: 4 }, message: "elsewhere" } });
    chat.write({ note: { location: here, message: "second" } });
    chat.end();
    assert.deepEqual(
      (await answers).map((answer) => answer.note?.message),
      ["first"],
    );
  });
});
