// The walking system end to end, driven through every gateway method over real HTTP/2: locally
// gateway, route and stats as three processes on loopback, started as `pnpm start` starts
// them; with TEST_TARGET=deployed, the deployed stack (support/target.ts).
// Stats must then hold exactly what was done. A deployed stack's stats are shared and outlive
// the run, so they are read before the first call and must then have grown by exactly what was
// done: this assumes nobody else calls that stack while the suite runs. Locally the stack is
// new, and what it held before is checked to be nothing.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { loadTopology } from "@cloudrun-grpc/auth-client";
import { distanceMeters } from "@cloudrun-grpc/domain";
import type { GatewayServiceClient, gateway, routeguide, stats } from "@cloudrun-grpc/proto";
import { serviceNames } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import {
  collect,
  deadline,
  eventually,
  failure,
  healthStatus,
  reflectedServices,
  targetOf,
  unary,
} from "./support/grpc.js";
import {
  deployed,
  type GatewayTarget,
  internalServices,
  localOnly,
  noTokenCodes,
  startGatewayTarget,
} from "./support/target.js";

interface Feature {
  name: string;
  location: { latitude: number; longitude: number };
}
const features: Feature[] = JSON.parse(
  readFileSync(new URL("../services/route/data/features.json", import.meta.url), "utf8"),
);
const feature = (index: number) => {
  const found = features[index];
  if (!found) throw new Error(`the data set has no feature #${index}`);
  return found;
};
const key = (p: { latitude: number; longitude: number }) => `${p.latitude},${p.longitude}`;
const inBox = (p: Feature["location"], lo: Feature["location"], hi: Feature["location"]) =>
  p.latitude >= Math.min(lo.latitude, hi.latitude) &&
  p.latitude <= Math.max(lo.latitude, hi.latitude) &&
  p.longitude >= Math.min(lo.longitude, hi.longitude) &&
  p.longitude <= Math.max(lo.longitude, hi.longitude);
const region = {
  lo: { latitude: 400_000_000, longitude: -750_000_000 },
  hi: { latitude: 410_000_000, longitude: -740_000_000 },
};

type Lookup = { name: string; location: Feature["location"]; lookups: number };

// What this file does, so the stats can be checked against it at the end.
const expected = {
  lookups: new Map<string, Lookup>(),
  routes: [] as { pointCount: number; featureCount: number; distanceMeters: number }[],
};
function expectLookup(location: Feature["location"], name: string) {
  const entry = expected.lookups.get(key(location)) ?? { name, location, lookups: 0 };
  entry.lookups += 1;
  expected.lookups.set(key(location), entry);
}

/** Most looked-up first, ties by latitude then longitude: stats' own order. */
const byLookups = (a: Lookup, b: Lookup) =>
  b.lookups - a.lookups ||
  a.location.latitude - b.location.latitude ||
  a.location.longitude - b.location.longitude;

// GetStats lists at most this many locations: what it held before must fit, to be added to.
const maxTopN = 1000;

/** Every location's look-ups: those stats held before this file, plus this file's. */
function expectedLookups(before: stats.StatsSnapshot__Output): Lookup[] {
  const all = new Map<string, Lookup>();
  for (const entry of before.topFeatures) {
    const location = entry.location as Feature["location"];
    all.set(key(location), { name: entry.name, location, lookups: entry.lookups });
  }
  for (const [at, ours] of expected.lookups) {
    const entry = all.get(at) ?? { ...ours, lookups: 0 };
    all.set(at, { ...entry, lookups: entry.lookups + ours.lookups });
  }
  return [...all.values()].sort(byLookups);
}

/** The email claim of an ID token (not verified: the test's own token, to know who it is). */
const tokenEmail = (token: string): string =>
  JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")).email;

const readStats = async (client: GatewayServiceClient) => {
  const { snapshot } = await unary<gateway.GetStatsResponse__Output>((done) =>
    client.GetStats({ topN: maxTopN }, deadline(), done),
  );
  assert.ok(snapshot, "GetStats returns a snapshot");
  return snapshot;
};

describe("gateway → route → stats, end to end", () => {
  let gatewayTarget: GatewayTarget;
  let client: GatewayServiceClient;
  /** Stats before this file's first counted call. */
  let baseline: stats.StatsSnapshot__Output;

  before(async () => {
    gatewayTarget = await startGatewayTarget({
      env: { stats: { STATS_WATCH_COALESCE_MS: "200" } },
    });
    client = gatewayTarget.client();
    baseline = await readStats(client);
  });
  after(async () => {
    await gatewayTarget?.close();
  });

  test("the gateway answers grpc.health.v1, and lists its service through reflection to a caller with a token only", async () => {
    const connect = gatewayTarget.connect;
    assert.equal(await healthStatus(connect, ""), "SERVING");
    assert.equal(await healthStatus(connect, serviceNames.gateway), "SERVING");
    const unknown = await failure(healthStatus(connect, "no.such.Service"));
    assert.equal(unknown.code, grpc.status.NOT_FOUND);

    assert.deepEqual(await reflectedServices(connect), [serviceNames.gateway]);
    // Reflection shows the whole API: without a token it is refused like any call (behind a
    // front end by Cloud Run's edge with HTTP 403: noTokenCodes).
    const refused = await failure(
      reflectedServices((factory) => connect(factory, { token: false })),
    );
    assert.ok(noTokenCodes.includes(refused.code), refused.details);
  });

  test(
    "each service answers grpc.health.v1 SERVING for the server and its service name, without a token",
    localOnly(internalServices),
    async () => {
      const stack = gatewayTarget.stack;
      assert.ok(stack, "a local stack");
      const names = {
        gateway: serviceNames.gateway,
        route: serviceNames.routeGuide,
        stats: serviceNames.stats,
      };
      for (const service of stack.services) {
        const target = targetOf(service.url);
        assert.equal(await healthStatus(target, ""), "SERVING", `${service.name} overall`);
        assert.equal(await healthStatus(target, names[service.name]), "SERVING", service.name);
        const unknown = await failure(healthStatus(target, "no.such.Service"));
        assert.equal(unknown.code, grpc.status.NOT_FOUND);
      }
    },
  );

  test(
    "each service lists its own service through server reflection, to an allowed caller only",
    localOnly(internalServices),
    async () => {
      const stack = gatewayTarget.stack;
      assert.ok(stack, "a local stack");
      const auth = stack.auth;
      assert.ok(auth, "the stack runs with auth");
      const bearer = async (caller: "client" | "gateway", url: string) => {
        const metadata = new grpc.Metadata();
        metadata.set("authorization", `Bearer ${await auth.tokenFor(caller, url)}`);
        return metadata;
      };
      const { gateway: gatewayService, route, stats } = stack;
      assert.deepEqual(
        await reflectedServices(
          targetOf(gatewayService.url),
          await bearer("client", gatewayService.url),
        ),
        [serviceNames.gateway],
      );
      assert.deepEqual(
        await reflectedServices(targetOf(route.url), await bearer("gateway", route.url)),
        [serviceNames.routeGuide],
      );
      assert.deepEqual(
        await reflectedServices(targetOf(stats.url), await bearer("gateway", stats.url)),
        [serviceNames.stats],
      );
      // Reflection shows the whole API: without a token it is refused like any call.
      const refused = await failure(reflectedServices(targetOf(route.url)));
      assert.equal(refused.code, grpc.status.UNAUTHENTICATED);
    },
  );

  test("GetFeature returns the named feature at a point, or an unnamed one", async () => {
    const plan = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9];
    for (const index of plan) {
      const { location, name } = feature(index);
      const answer = await unary<gateway.GetFeatureResponse__Output>((done) =>
        client.GetFeature({ point: location }, deadline(), done),
      );
      assert.deepEqual(answer.feature, { name, location });
      expectLookup(location, name);
    }
    for (const location of [
      { latitude: 10_000_001, longitude: 10_000_001 },
      { latitude: 10_000_001, longitude: 10_000_001 },
      { latitude: -20_000_000, longitude: 20_000_000 },
    ]) {
      const answer = await unary<gateway.GetFeatureResponse__Output>((done) =>
        client.GetFeature({ point: location }, deadline(), done),
      );
      assert.deepEqual(answer.feature, { name: "", location });
      expectLookup(location, "");
    }
  });

  test("ListFeatures streams every feature in the rectangle, in order, corners in any order", async () => {
    const all = await collect(client.ListFeatures({ rectangle: region }, deadline()));
    assert.deepEqual(
      all.map((message) => message.feature),
      features,
    );
    const lo = feature(0).location;
    const hi = feature(1).location;
    const inside = features.filter((candidate) => inBox(candidate.location, lo, hi));
    assert.ok(inside.length >= 2);
    for (const rectangle of [
      { lo, hi },
      { lo: hi, hi: lo },
      {
        lo: { latitude: lo.latitude, longitude: hi.longitude },
        hi: { latitude: hi.latitude, longitude: lo.longitude },
      },
    ]) {
      const streamed = await collect(client.ListFeatures({ rectangle }, deadline()));
      assert.deepEqual(
        streamed.map((message) => message.feature),
        inside,
      );
    }
  });

  test("RecordRoute summarises a client stream of 1,000 points", async () => {
    // Every tenth point is one of 20 features (each passed several times: counted once);
    // the others are 1 unit off the data set's 0.0001° grid, so never a feature.
    const points: Feature["location"][] = [];
    for (let index = 0; index < 1000; index += 1) {
      if (index % 10 === 0) points.push(feature((index / 10) % 20).location);
      else
        points.push({
          latitude: 400_000_001 + index * 7_001,
          longitude: -749_999_999 + index * 3_001,
        });
    }
    let meters = 0;
    for (let index = 1; index < points.length; index += 1) {
      meters += distanceMeters(
        points[index - 1] as Feature["location"],
        points[index] as Feature["location"],
      );
    }
    const summary = await recordRoute(client, points);
    assert.equal(summary.pointCount, 1000);
    assert.equal(summary.featureCount, 20);
    assert.equal(summary.distanceMeters, Math.round(meters));
    assert.ok(summary.elapsedSeconds >= 0 && summary.elapsedSeconds < 60);
    expected.routes.push(summary);

    const short = await recordRoute(client, [
      feature(0).location,
      feature(1).location,
      feature(0).location,
    ]);
    assert.equal(short.pointCount, 3);
    assert.equal(short.featureCount, 2);
    assert.equal(
      short.distanceMeters,
      Math.round(2 * distanceMeters(feature(0).location, feature(1).location)),
    );
    expected.routes.push(short);

    // Pole to pole and back, 200 points: about 4,000,000 km, past what a signed 32-bit integer holds.
    const poles = Array.from({ length: 200 }, (_, index) => ({
      latitude: index % 2 === 0 ? 900_000_000 : -900_000_000,
      longitude: 0,
    }));
    const far = await recordRoute(client, poles);
    assert.equal(
      far.distanceMeters,
      Math.round(
        199 * distanceMeters(poles[0] as Feature["location"], poles[1] as Feature["location"]),
      ),
    );
    assert.ok(far.distanceMeters > 2 ** 31);
    expected.routes.push(far);

    const empty = await recordRoute(client, []);
    assert.deepEqual(empty, {
      pointCount: 0,
      featureCount: 0,
      distanceMeters: 0,
      elapsedSeconds: 0,
    });
    expected.routes.push(empty);
  });

  test("RouteChat answers each note with the earlier notes at its location, in order", async () => {
    const locations = [feature(10).location, feature(11).location, { latitude: 1, longitude: 2 }];
    const notes = Array.from({ length: 120 }, (_, index) => ({
      location: locations[index % locations.length] as Feature["location"],
      message: `note ${index}`,
    }));
    const wanted: typeof notes = [];
    notes.forEach((note, index) => {
      wanted.push(
        ...notes.slice(0, index).filter((earlier) => key(earlier.location) === key(note.location)),
      );
    });

    const chat = client.RouteChat(deadline(20_000));
    const received = collect(chat);
    for (const note of notes) chat.write({ note });
    chat.end();
    assert.deepEqual(
      (await received).map((message) => message.note),
      wanted,
    );
    assert.equal(wanted.length, 40 * 39 * 1.5);
  });

  test("bad input gets INVALID_ARGUMENT naming the field and the hop, and is not counted", async () => {
    const noPoint = await failure(unary((done) => client.GetFeature({}, deadline(), done)));
    assert.equal(noPoint.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(noPoint.details, "route: point is required");

    const offTheMap = await failure(
      unary((done) =>
        client.GetFeature({ point: { latitude: 900_000_001, longitude: 0 } }, deadline(), done),
      ),
    );
    assert.equal(offTheMap.code, grpc.status.INVALID_ARGUMENT);
    assert.match(offTheMap.details, /^route: point\.latitude must be from -900000000 to 900000000/);

    const noRectangle = await failure(collect(client.ListFeatures({}, deadline())));
    assert.equal(noRectangle.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(noRectangle.details, "route: rectangle is required");

    const badPoint = await failure(
      recordRoute(client, [
        feature(0).location,
        feature(1).location,
        { latitude: 0, longitude: 1_800_000_001 },
      ]),
    );
    assert.equal(badPoint.code, grpc.status.INVALID_ARGUMENT);
    assert.match(badPoint.details, /^route: point #3\.longitude must be/);

    const badTopN = await failure(unary((done) => client.GetStats({ topN: -1 }, deadline(), done)));
    assert.equal(badTopN.code, grpc.status.INVALID_ARGUMENT);
    assert.match(badTopN.details, /^stats: top_n must be from 0 to 1000/);
  });

  test("stats hold exactly the look-ups and routes made above", async () => {
    if (!deployed) {
      // A new stack: what it held before is nothing, so all it holds now is this file's doing.
      assert.deepEqual(baseline, {
        routesRecorded: 0,
        pointsRecorded: 0,
        distanceMeters: 0,
        featuresPassed: 0,
        elapsedSeconds: 0,
        featureLookups: 0,
        topFeatures: [],
        callers: [],
        version: 0,
      });
    }
    assert.ok(
      baseline.topFeatures.length < maxTopN,
      `stats held ${maxTopN} or more locations before the run, more than GetStats lists: ` +
        "this check needs them all (a new stats instance starts empty)",
    );
    const totalLookups = [...expected.lookups.values()].reduce(
      (sum, entry) => sum + entry.lookups,
      0,
    );
    const snapshot = await eventually(
      () => readStats(client),
      (value) =>
        value.featureLookups === baseline.featureLookups + totalLookups &&
        value.routesRecorded === baseline.routesRecorded + expected.routes.length,
    );
    const sum = (pick: (route: (typeof expected.routes)[number]) => number) =>
      expected.routes.reduce((total, route) => total + pick(route), 0);
    const grown = (pick: (value: stats.StatsSnapshot__Output) => number) =>
      pick(snapshot) - pick(baseline);
    assert.equal(
      grown((value) => value.routesRecorded),
      expected.routes.length,
    );
    assert.equal(
      grown((value) => value.pointsRecorded),
      sum((route) => route.pointCount),
    );
    assert.equal(
      grown((value) => value.distanceMeters),
      sum((route) => route.distanceMeters),
    );
    assert.equal(
      grown((value) => value.featuresPassed),
      sum((route) => route.featureCount),
    );
    assert.equal(
      grown((value) => value.featureLookups),
      totalLookups,
    );
    const top = expectedLookups(baseline);
    assert.deepEqual(snapshot.topFeatures, top);

    // route counts each call for its end client, the identity this file calls the gateway as
    // (read from its own token: deployed, whoever the runner's credentials are), never for
    // the gateway's own service account; every other caller's counts are as they were.
    const me = tokenEmail(await gatewayTarget.tokenFor(gatewayTarget.url));
    if (gatewayTarget.stack) assert.equal(me, gatewayTarget.stack.auth?.emails.client);
    const gatewayAccount = `${loadTopology().services.gateway?.service_account_id}@`;
    assert.ok(!me.startsWith(gatewayAccount), `the end client ${me} is not the gateway`);
    const was = baseline.callers.find((entry) => entry.caller === me);
    const callers = [
      ...baseline.callers.filter((entry) => entry.caller !== me),
      {
        caller: me,
        routesRecorded: (was?.routesRecorded ?? 0) + expected.routes.length,
        featureLookups: (was?.featureLookups ?? 0) + totalLookups,
      },
    ].sort((a, b) => (a.caller < b.caller ? -1 : a.caller > b.caller ? 1 : 0));
    assert.deepEqual(snapshot.callers, callers);

    const topThree = await unary<gateway.GetStatsResponse__Output>((done) =>
      client.GetStats({ topN: 3 }, deadline(), done),
    );
    assert.deepEqual(topThree.snapshot?.topFeatures, top.slice(0, 3));
  });

  test("DescribeArea combines route's features and stats' look-ups for the area", async () => {
    const lo = feature(0).location;
    const hi = feature(1).location;
    const answer = await unary<gateway.DescribeAreaResponse__Output>((done) =>
      client.DescribeArea({ rectangle: { lo: hi, hi: lo }, topN: 5 }, deadline(), done),
    );
    const inside = features.filter((candidate) => inBox(candidate.location, lo, hi));
    const looked = expectedLookups(baseline).filter((entry) => inBox(entry.location, lo, hi));
    assert.equal(answer.featureCount, inside.length);
    assert.equal(
      answer.lookupsInArea,
      looked.reduce((sum, entry) => sum + entry.lookups, 0),
    );
    const named = looked.filter((entry) => entry.name !== "").slice(0, 5);
    assert.deepEqual(
      answer.mostLookedUp,
      named.map((entry) => ({
        feature: { name: entry.name, location: entry.location },
        lookups: entry.lookups,
      })),
    );
    // This file looks up feature #0 the most: on a new stack it leads the area.
    if (!deployed) assert.equal(answer.mostLookedUp[0]?.feature?.name, feature(0).name);
  });

  test("WatchStats sends the current aggregates, then coalesced updates as they change", async () => {
    const watch = client.WatchStats({ topN: 1 });
    const updates: gateway.WatchStatsResponse__Output[] = [];
    let notify: () => void = () => {};
    watch.on("data", (message: gateway.WatchStatsResponse__Output) => {
      updates.push(message);
      notify();
    });
    watch.on("error", () => {});
    const next = (predicate: (message: gateway.WatchStatsResponse__Output) => boolean) =>
      new Promise<gateway.WatchStatsResponse__Output>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error("no matching watch update within 10 s")),
          10_000,
        );
        notify = () => {
          const found = updates.find(predicate);
          if (found) {
            clearTimeout(timer);
            resolve(found);
          }
        };
        notify();
      });
    try {
      const first = await next(() => true);
      const before = first.snapshot?.featureLookups ?? 0;
      const burst = 30;
      const target = feature(5).location;
      await Promise.all(
        Array.from({ length: burst }, () =>
          unary((done) => client.GetFeature({ point: target }, deadline(), done)),
        ),
      );
      const last = await next((message) => message.snapshot?.featureLookups === before + burst);
      assert.equal(last.snapshot?.featureLookups, before + burst);
      // 30 changes reported in batches and coalesced: far fewer updates than changes.
      assert.ok(
        updates.length - 1 < burst,
        `expected coalesced updates, got ${updates.length - 1}`,
      );
    } finally {
      watch.cancel();
    }
  });
});

async function recordRoute(
  client: GatewayServiceClient,
  points: routeguide.Point[],
): Promise<routeguide.RouteSummary__Output> {
  const response = await unary<gateway.RecordRouteResponse__Output>((done) => {
    const stream = client.RecordRoute(deadline(20_000), done);
    for (const point of points) stream.write({ point });
    stream.end();
  });
  assert.ok(response.summary);
  return response.summary;
}
