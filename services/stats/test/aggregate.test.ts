// aggregateEvents: what a batch of new events adds, before it reaches the database. Its sorted
// output is what keeps concurrent batches from deadlocking (rows locked in one order).
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Point } from "@cloudrun-grpc/domain";
import { aggregateEvents, compareText } from "../src/aggregate.js";
import type { StatsEvent } from "../src/store.js";

let nextId = 0;
const route = (caller: string, pointCount: number, distanceMeters: number): StatsEvent => ({
  id: `r${++nextId}`,
  caller,
  kind: "routeRecorded",
  summary: { pointCount, featureCount: pointCount - 1, distanceMeters, elapsedSeconds: 2 },
});
const lookup = (caller: string, location: Point, name = ""): StatsEvent => ({
  id: `l${++nextId}`,
  caller,
  kind: "featureLookedUp",
  name,
  location,
});

test("an empty batch adds nothing", () => {
  assert.deepEqual(aggregateEvents([]), {
    totals: {
      routesRecorded: 0,
      pointsRecorded: 0,
      distanceMeters: 0,
      featuresPassed: 0,
      elapsedSeconds: 0,
      featureLookups: 0,
    },
    callers: [],
    lookups: [],
  });
});

test("totals, per caller and per location, one entry per caller and per location", () => {
  const mill: Point = { latitude: 10, longitude: 20 };
  const tower: Point = { latitude: 10, longitude: -5 };
  const delta = aggregateEvents([
    route("amy", 3, 100),
    lookup("amy", mill),
    lookup("bob", mill, "Old Mill"),
    route("bob", 5, 250),
    lookup("amy", tower),
    lookup("amy", mill),
  ]);
  assert.deepEqual(delta.totals, {
    routesRecorded: 2,
    pointsRecorded: 8,
    distanceMeters: 350,
    featuresPassed: 6,
    elapsedSeconds: 4,
    featureLookups: 4,
  });
  assert.deepEqual(delta.callers, [
    { caller: "amy", routesRecorded: 1, featureLookups: 3 },
    { caller: "bob", routesRecorded: 1, featureLookups: 1 },
  ]);
  assert.deepEqual(delta.lookups, [
    { location: tower, name: "", lookups: 1 },
    { location: mill, name: "Old Mill", lookups: 3 },
  ]);
});

test("a location's name is the last non-empty one in the batch, or empty when none", () => {
  const here: Point = { latitude: 1, longitude: 1 };
  const there: Point = { latitude: 2, longitude: 2 };
  const delta = aggregateEvents([
    lookup("", here, "Old Mill"),
    lookup("", here, "New Mill"),
    lookup("", here, ""),
    lookup("", there, ""),
  ]);
  assert.deepEqual(
    delta.lookups.map(({ name }) => name),
    ["New Mill", ""],
  );
});

test("callers come sorted in code-unit order, locations by latitude then longitude", () => {
  const points: Point[] = [
    { latitude: 5, longitude: 1 },
    { latitude: -3, longitude: 7 },
    { latitude: 5, longitude: -2 },
    { latitude: 0, longitude: 0 },
  ];
  const callers = ["zoe", "", "amy", "Zed", "émile", "_x"];
  const delta = aggregateEvents(
    callers.flatMap((caller, index) => [lookup(caller, points[index % points.length] as Point)]),
  );
  assert.deepEqual(
    delta.callers.map(({ caller }) => caller),
    ["", "Zed", "_x", "amy", "zoe", "émile"],
  );
  assert.deepEqual(
    delta.lookups.map(({ location }) => [location.latitude, location.longitude]),
    [
      [-3, 7],
      [0, 0],
      [5, -2],
      [5, 1],
    ],
  );
});

test("compareText is plain code-unit order, no locale", () => {
  assert.ok(compareText("Zed", "amy") < 0);
  assert.ok(compareText("", "a") < 0);
  assert.equal(compareText("same", "same"), 0);
  assert.ok(compareText("b", "a") > 0);
});

test("the delta's locations are copies: editing them leaves the events alone", () => {
  const event = lookup("", { latitude: 1, longitude: 2 });
  const [entry] = aggregateEvents([event]).lookups;
  assert.ok(entry);
  entry.location.latitude = 99;
  assert.deepEqual(event.kind === "featureLookedUp" && event.location, {
    latitude: 1,
    longitude: 2,
  });
});
