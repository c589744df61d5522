// What the store counts and how it answers, on a real PostgreSQL server: every test gets a
// database of its own.
import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Point } from "@cloudrun-grpc/domain";
import { until } from "@cloudrun-grpc/test-support";
import type { StatsEvent } from "../src/store.js";
import { backends, type StoreOptions, type Stores, storesFor } from "./support/stores.js";

let nextId = 0;
const freshId = () => `id-${++nextId}`;

function route(
  summary: {
    pointCount: number;
    featureCount: number;
    distanceMeters: number;
    elapsedSeconds: number;
  },
  caller = "",
  id = freshId(),
): StatsEvent {
  return { id, caller, kind: "routeRecorded", summary };
}

function lookup(location: Point, name = "", caller = "", id = freshId()): StatsEvent {
  return { id, caller, kind: "featureLookedUp", name, location };
}

const a: Point = { latitude: 400_000_000, longitude: -750_000_000 };
const b: Point = { latitude: 401_000_000, longitude: -749_000_000 };
const c: Point = { latitude: 402_000_000, longitude: -748_000_000 };

// Changes are announced by NOTIFY after commit: a listener hears them a little later. Long
// enough for a notification that should not come to have arrived if it were sent.
const settleMs = 200;

describe("SqlStatsStore", () => {
  for (const backend of backends) {
    describe(`on ${backend}`, () => {
      let stores: Stores;
      before(() => {
        stores = storesFor(backend);
      });
      afterEach(() => stores.release());
      after(() => stores.cleanup());

      const fresh = async (options?: StoreOptions) => (await stores.fresh(options)).store;

      test("starts empty", async () => {
        const { snapshot, lookupsWithin } = await (await fresh()).snapshot({ topN: 10 });
        assert.deepEqual(snapshot, {
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
        assert.equal(lookupsWithin, 0);
      });

      test("totals add up route and look-up events", async () => {
        const store = await fresh();
        const result = await store.record([
          route({ pointCount: 3, featureCount: 1, distanceMeters: 1200, elapsedSeconds: 30 }),
          route({ pointCount: 5, featureCount: 2, distanceMeters: 800, elapsedSeconds: 12 }),
          lookup(a, "Old Mill"),
        ]);
        assert.deepEqual(result, { accepted: 3, duplicates: 0 });
        await store.record([lookup(a, "Old Mill"), lookup(b)]);

        const { snapshot } = await store.snapshot({ topN: 10 });
        assert.equal(snapshot.routesRecorded, 2);
        assert.equal(snapshot.pointsRecorded, 8);
        assert.equal(snapshot.featuresPassed, 3);
        assert.equal(snapshot.distanceMeters, 2000);
        assert.equal(snapshot.elapsedSeconds, 42);
        assert.equal(snapshot.featureLookups, 3);
        assert.deepEqual(snapshot.topFeatures, [
          { location: a, name: "Old Mill", lookups: 2 },
          { location: b, name: "", lookups: 1 },
        ]);
      });

      test("an id seen in an earlier call is counted once", async () => {
        const store = await fresh();
        const event = route({
          pointCount: 4,
          featureCount: 0,
          distanceMeters: 10,
          elapsedSeconds: 1,
        });
        assert.deepEqual(await store.record([event]), { accepted: 1, duplicates: 0 });
        assert.deepEqual(await store.record([event, lookup(a)]), { accepted: 1, duplicates: 1 });
        const { snapshot } = await store.snapshot({ topN: 10 });
        assert.equal(snapshot.routesRecorded, 1);
        assert.equal(snapshot.pointsRecorded, 4);
        assert.equal(snapshot.featureLookups, 1);
      });

      test("an id repeated within one batch is counted once", async () => {
        const store = await fresh();
        const event = lookup(a, "Old Mill");
        assert.deepEqual(await store.record([event, event, { ...event }]), {
          accepted: 1,
          duplicates: 2,
        });
        const { snapshot } = await store.snapshot({ topN: 10 });
        assert.equal(snapshot.featureLookups, 1);
        assert.equal(snapshot.topFeatures[0]?.lookups, 1);
      });

      test("top features: most looked-up first, ties by latitude then longitude", async () => {
        const store = await fresh();
        const sameLatitudeAsB: Point = { latitude: b.latitude, longitude: b.longitude - 1 };
        await store.record([
          lookup(c),
          lookup(c),
          lookup(b),
          lookup(a),
          lookup(sameLatitudeAsB),
          lookup(c),
          lookup(b),
          lookup(a),
        ]);
        const { snapshot } = await store.snapshot({ topN: 10 });
        assert.deepEqual(
          snapshot.topFeatures.map((entry) => [entry.location, entry.lookups]),
          [
            [c, 3],
            [a, 2],
            [b, 2],
            [sameLatitudeAsB, 1],
          ],
        );
      });

      test("topN cuts the list", async () => {
        const store = await fresh();
        await store.record([lookup(a), lookup(b), lookup(b), lookup(c), lookup(c), lookup(c)]);
        const top2 = (await store.snapshot({ topN: 2 })).snapshot.topFeatures;
        assert.deepEqual(
          top2.map((entry) => entry.location),
          [c, b],
        );
        assert.equal((await store.snapshot({ topN: 1 })).snapshot.topFeatures.length, 1);
      });

      test("the latest non-empty name is kept for a location", async () => {
        const store = await fresh();
        await store.record([lookup(a, "Old Mill"), lookup(a, ""), lookup(a, "New Mill")]);
        await store.record([lookup(a, "")]);
        const [entry] = (await store.snapshot({ topN: 10 })).snapshot.topFeatures;
        assert.deepEqual(entry, { location: a, name: "New Mill", lookups: 4 });
        // A later batch's name replaces the stored one.
        await store.record([lookup(a, "Mill Museum")]);
        const [renamed] = (await store.snapshot({ topN: 10 })).snapshot.topFeatures;
        assert.deepEqual(renamed, { location: a, name: "Mill Museum", lookups: 5 });
      });

      test("namedOnly lists only named locations, however many unnamed ones are looked up more", async () => {
        const store = await fresh();
        const unnamed = Array.from({ length: 20 }, (_, index) => ({
          latitude: index,
          longitude: index,
        }));
        await store.record(unnamed.flatMap((point) => [lookup(point), lookup(point)]));
        await store.record([lookup(b, "Old Mill")]);
        const { snapshot, lookupsWithin } = await store.snapshot({
          topN: 5,
          namedOnly: true,
          within: {
            minLatitude: -900_000_000,
            maxLatitude: 900_000_000,
            minLongitude: -1_800_000_000,
            maxLongitude: 1_800_000_000,
          },
        });
        assert.deepEqual(snapshot.topFeatures, [{ location: b, name: "Old Mill", lookups: 1 }]);
        assert.equal(lookupsWithin, 41, "unnamed look-ups still count in the area total");
        const all = await store.snapshot({ topN: 5 });
        assert.equal(all.snapshot.topFeatures.length, 5);
        assert.ok(all.snapshot.topFeatures.every((entry) => entry.name === ""));
      });

      test("within filters the top features and counts lookupsWithin, edges included", async () => {
        const store = await fresh();
        await store.record([lookup(a), lookup(b), lookup(b), lookup(c), lookup(c), lookup(c)]);
        const within = {
          minLatitude: a.latitude,
          maxLatitude: b.latitude,
          minLongitude: a.longitude,
          maxLongitude: b.longitude,
        };
        const { snapshot, lookupsWithin } = await store.snapshot({ topN: 10, within });
        assert.deepEqual(
          snapshot.topFeatures.map((entry) => [entry.location, entry.lookups]),
          [
            [b, 2],
            [a, 1],
          ],
        );
        assert.equal(lookupsWithin, 3);
        // The totals stay global.
        assert.equal(snapshot.featureLookups, 6);
      });

      test("lookupsWithin counts every look-up inside, not only the top N", async () => {
        const store = await fresh();
        await store.record([lookup(a), lookup(b), lookup(b), lookup(c)]);
        const within = {
          minLatitude: 0,
          maxLatitude: 900_000_000,
          minLongitude: -1_800_000_000,
          maxLongitude: 0,
        };
        const { snapshot, lookupsWithin } = await store.snapshot({ topN: 1, within });
        assert.equal(snapshot.topFeatures.length, 1);
        assert.equal(lookupsWithin, 4);
      });

      test("lookupsWithin is 0 without within", async () => {
        const store = await fresh();
        await store.record([lookup(a)]);
        assert.equal((await store.snapshot({ topN: 10 })).lookupsWithin, 0);
      });

      test("per-caller counts, in code-unit order with the anonymous caller first", async () => {
        const store = await fresh();
        const summary = { pointCount: 1, featureCount: 0, distanceMeters: 0, elapsedSeconds: 0 };
        await store.record([
          lookup(a, "", "zoe@example.com"),
          route(summary, "amy@example.com"),
          lookup(b, "", "amy@example.com"),
          route(summary, ""),
          lookup(c, "", "zoe@example.com"),
          // Upper case sorts before lower case in code units (a locale would put it after amy).
          route(summary, "Zed@example.com"),
        ]);
        const { snapshot } = await store.snapshot({ topN: 10 });
        assert.deepEqual(snapshot.callers, [
          { caller: "", routesRecorded: 1, featureLookups: 0 },
          { caller: "Zed@example.com", routesRecorded: 1, featureLookups: 0 },
          { caller: "amy@example.com", routesRecorded: 1, featureLookups: 1 },
          { caller: "zoe@example.com", routesRecorded: 0, featureLookups: 2 },
        ]);
      });

      test("a snapshot is a copy: later changes and edits to it do not mix", async () => {
        const store = await fresh();
        await store.record([lookup(a, "", "amy")]);
        const { snapshot } = await store.snapshot({ topN: 10 });
        const entry = snapshot.topFeatures[0];
        assert.ok(entry);
        entry.lookups = 99;
        entry.location.latitude = 0;
        await store.record([lookup(a, "", "amy")]);
        assert.equal(snapshot.featureLookups, 1);
        assert.equal(snapshot.callers[0]?.featureLookups, 1);
        const later = (await store.snapshot({ topN: 10 })).snapshot;
        assert.deepEqual(later.topFeatures, [{ location: a, name: "", lookups: 2 }]);
      });

      test("version goes up once per batch that changed something, not for an all-duplicate or empty batch", async () => {
        const store = await fresh();
        const version = async () => (await store.snapshot({ topN: 1 })).snapshot.version;
        const first = lookup(a);
        await store.record([first, lookup(b), lookup(c)]);
        assert.equal(await version(), 1);
        await store.record([first, lookup(a)]);
        assert.equal(await version(), 2);
        assert.deepEqual(await store.record([first, first]), { accepted: 0, duplicates: 2 });
        assert.equal(await version(), 2);
        assert.deepEqual(await store.record([]), { accepted: 0, duplicates: 0 });
        assert.equal(await version(), 2);
      });

      test("onChange listeners hear each changing batch once, and unsubscribe works", async () => {
        const store = await fresh();
        let calls = 0;
        let otherCalls = 0;
        const unsubscribe = store.onChange(() => {
          calls += 1;
        });
        store.onChange(() => {
          otherCalls += 1;
        });
        const event = lookup(a);
        await store.record([event, lookup(b)]);
        await until(() => calls === 1 && otherCalls === 1, "both listeners heard the batch");
        // Nothing new: no change to announce.
        await store.record([event]);
        await store.record([]);
        await sleep(settleMs);
        assert.equal(calls, 1, "one call for one changing batch");

        unsubscribe();
        await store.record([lookup(c)]);
        await until(() => otherCalls === 2, "the other listener heard the next batch");
        await sleep(settleMs);
        assert.equal(calls, 1, "an unsubscribed listener is not called");
        assert.equal(otherCalls, 2);
      });

      test("listeners see the change already applied", async () => {
        const store = await fresh();
        const seen: ReturnType<typeof store.snapshot>[] = [];
        store.onChange(() => {
          seen.push(store.snapshot({ topN: 1 }));
        });
        await store.record([lookup(a)]);
        await until(() => seen.length === 1, "the listener is called");
        assert.equal((await seen[0])?.snapshot.featureLookups, 1);
      });

      test("an event of several calls adds them all, with one row per caller and location", async () => {
        const store = await fresh();
        const summed = {
          ...lookup(a, "Old Mill", "amy"),
          calls: 5,
          callIds: ["call-1:lookup", "call-2:lookup"],
        };
        assert.deepEqual(await store.record([summed, lookup(b, "", "amy")]), {
          accepted: 2,
          duplicates: 0,
        });
        const { snapshot } = await store.snapshot({ topN: 10 });
        assert.equal(snapshot.featureLookups, 6);
        assert.deepEqual(snapshot.topFeatures, [
          { location: a, name: "Old Mill", lookups: 5 },
          { location: b, name: "", lookups: 1 },
        ]);
        assert.deepEqual(snapshot.callers, [
          { caller: "amy", routesRecorded: 0, featureLookups: 6 },
        ]);
      });

      test("each named call counts once ever, whichever event carries it; the event's id counts the rest", async () => {
        const store = await fresh();
        // A call reported alone first (an event named after it), then in a sum with others
        // (a retried call, served twice), then the sum sent again (a retried batch).
        await store.record([lookup(a, "", "amy", "call-1:lookup")]);
        const summed = {
          ...lookup(a, "", "amy", "sum-1"),
          calls: 4,
          callIds: ["call-1:lookup", "call-2:lookup", "call-2:lookup"],
        };
        assert.deepEqual(await store.record([summed]), { accepted: 1, duplicates: 0 });
        // 1 + (call-2 once, and the 4 - 3 calls the event's id stands for).
        assert.equal((await store.snapshot({ topN: 1 })).snapshot.featureLookups, 3);
        assert.deepEqual(await store.record([summed]), { accepted: 0, duplicates: 1 });
        // Another sum naming only calls already counted, and none of its own: nothing new.
        const repeats = {
          ...lookup(a, "", "amy"),
          calls: 2,
          callIds: ["call-1:lookup", "call-2:lookup"],
        };
        assert.deepEqual(await store.record([repeats]), { accepted: 0, duplicates: 1 });
        // In one batch, a call named by two events counts in the first.
        const one = {
          ...lookup(b, "", "bob"),
          calls: 2,
          callIds: ["call-3:lookup", "call-4:lookup"],
        };
        const two = {
          ...lookup(c, "", "bob"),
          calls: 2,
          callIds: ["call-4:lookup", "call-5:lookup"],
        };
        assert.deepEqual(await store.record([one, two]), { accepted: 2, duplicates: 0 });
        const { snapshot } = await store.snapshot({ topN: 10 });
        assert.equal(snapshot.featureLookups, 6);
        assert.deepEqual(
          snapshot.topFeatures.map((entry) => [entry.location, entry.lookups]),
          [
            [a, 3],
            [b, 2],
            [c, 1],
          ],
        );
        assert.deepEqual(
          snapshot.callers.map((entry) => [entry.caller, entry.featureLookups]),
          [
            ["amy", 3],
            ["bob", 3],
          ],
        );
      });

      test("callers and names with quotes, commas, braces and backslashes reach their rows intact", async () => {
        const store = await fresh();
        const caller = 'o"brien, {x}\\y@example.com';
        const name = 'Mill "A", {B} \\ C';
        await store.record([{ ...lookup(a, name, caller), calls: 2, callIds: ["q-1", "q-2"] }]);
        const { snapshot } = await store.snapshot({ topN: 1 });
        assert.deepEqual(snapshot.topFeatures, [{ location: a, name, lookups: 2 }]);
        assert.deepEqual(snapshot.callers, [{ caller, routesRecorded: 0, featureLookups: 2 }]);
      });

      test("pruneCountedIds forgets counted ids older than the retention: with 0 an id counts again", async () => {
        const store = await fresh({ eventIdRetentionMs: 0 });
        const event = lookup(a);
        await store.record([event]);
        assert.deepEqual(await store.record([event]), { accepted: 0, duplicates: 1 });
        // Strictly older than "now" at millisecond resolution.
        await sleep(5);
        await store.pruneCountedIds();
        assert.deepEqual(await store.record([event]), { accepted: 1, duplicates: 0 });
        assert.equal((await store.snapshot({ topN: 1 })).snapshot.featureLookups, 2);
      });

      test("pruneCountedIds keeps ids younger than the retention", async () => {
        const store = await fresh({ eventIdRetentionMs: 3_600_000 });
        const event = lookup(a);
        await store.record([event]);
        await sleep(5);
        await store.pruneCountedIds();
        assert.deepEqual(await store.record([event]), { accepted: 0, duplicates: 1 });
        assert.equal((await store.snapshot({ topN: 1 })).snapshot.featureLookups, 1);
      });
    });
  }
});
