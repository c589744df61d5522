// planBatch: which ledger key counts which calls, and the events as columns, before the batch
// reaches the database (store.test.ts checks what the database makes of them).
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Point } from "@cloudrun-grpc/domain";
import { planBatch } from "../src/aggregate.js";
import type { StatsEvent } from "../src/store.js";

const mill: Point = { latitude: 10, longitude: 20 };
const route = (id: string, caller: string, pointCount: number): StatsEvent => ({
  id,
  caller,
  kind: "routeRecorded",
  summary: { pointCount, featureCount: 1, distanceMeters: 300, elapsedSeconds: 2 },
});
const lookup = (
  id: string,
  caller: string,
  extra: { calls?: number; callIds?: string[] } = {},
): StatsEvent => ({
  id,
  caller,
  kind: "featureLookedUp",
  name: "Old Mill",
  location: mill,
  ...extra,
});

test("an event of one call is counted by its id", () => {
  const { keys } = planBatch([route("r1", "amy", 3), lookup("l1", "bob")]);
  assert.deepEqual(keys, { ids: ["r1", "l1"], events: [0, 1], covers: [1, 1] });
});

test("an event of several calls: each named call by its id, the rest by the event's id", () => {
  const summed = lookup("sum", "amy", { calls: 5, callIds: ["c1", "c2"] });
  const allNamed = lookup("named", "amy", { calls: 2, callIds: ["c3", "c4"] });
  assert.deepEqual(planBatch([summed, allNamed]).keys, {
    ids: ["c1", "c2", "sum", "c3", "c4"],
    events: [0, 0, 0, 1, 1],
    covers: [1, 1, 3, 1, 1],
  });
});

test("a key met twice in a batch counts where it is met first", () => {
  const { keys } = planBatch([
    lookup("l1", "amy"),
    lookup("l1", "amy"),
    lookup("sum", "bob", { calls: 4, callIds: ["l1", "c2", "c2"] }),
  ]);
  // The second "l1" event and the named "l1" add nothing; "c2" once; "sum" its 4 - 3 others.
  assert.deepEqual(keys, { ids: ["l1", "c2", "sum"], events: [0, 2, 2], covers: [1, 1, 1] });
});

test("columns line up with the events, a route's look-up columns empty and a look-up's route columns 0", () => {
  const { columns } = planBatch([route("r1", "amy", 3), lookup("l1", "bob")]);
  assert.deepEqual(columns, {
    caller: ["amy", "bob"],
    route: [1, 0],
    latitude: [0, 10],
    longitude: [0, 20],
    name: ["", "Old Mill"],
    pointCount: [3, 0],
    featureCount: [1, 0],
    distanceMeters: [300, 0],
    elapsedSeconds: [2, 0],
  });
});
