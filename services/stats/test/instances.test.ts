// Several stats instances on one PostgreSQL database, as Cloud Run runs them: every event
// counted exactly once however retries and batches race, migrations applied once when
// instances start together, and a watch on one instance hears changes made through another.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Point } from "@cloudrun-grpc/domain";
import { until } from "@cloudrun-grpc/test-support";
import { migrationsFolder } from "../src/db/database.js";
import type { CallerCount, FeatureLookupCount, StatsEvent, Totals } from "../src/store.js";
import { PostgresStores, recordingLogger } from "./support/stores.js";

const byCodeUnits = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** A small seeded generator (mulberry32): the seed in a failure message names the run. */
function generator(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const below = (n: number) => Math.floor(next() * n);
  return { next, below, pick: <T>(items: readonly T[]) => items[below(items.length)] as T };
}

describe("stats instances sharing one PostgreSQL database", () => {
  const stores = new PostgresStores();
  afterEach(() => stores.release());
  after(() => stores.cleanup());

  test("exactly once across two instances: concurrent, overlapping and retried batches add up to the distinct events", async () => {
    const seed = Date.now() % 1_000_000;
    const random = generator(seed);
    const db = await stores.database();
    const instances = [(await db.open()).store, (await db.open()).store];

    // Few callers and places, so concurrent batches fight over the same rows.
    const callers = ["", "amy@example.com", "Zed@example.com", "bob@example.com"];
    const places: { point: Point; name: string }[] = [
      { point: { latitude: 1, longitude: 1 }, name: "Old Mill" },
      { point: { latitude: 1, longitude: 2 }, name: "" },
      { point: { latitude: -3, longitude: 5 }, name: "Tower" },
      { point: { latitude: 7, longitude: -7 }, name: "" },
      { point: { latitude: 7, longitude: 0 }, name: "Bridge" },
    ];
    // One event per id, as a retried report sends the same event again.
    const universe: StatsEvent[] = Array.from({ length: 300 }, (_, index) => {
      const id = `event-${index}`;
      const caller = random.pick(callers);
      if (random.next() < 0.3) {
        return {
          id,
          caller,
          kind: "routeRecorded",
          summary: {
            pointCount: 1 + random.below(9),
            featureCount: random.below(3),
            distanceMeters: random.below(5_000),
            elapsedSeconds: random.below(600),
          },
        };
      }
      const place = random.pick(places);
      // Only some look-ups carry the name: the stored name must still end up as the place's.
      const name = random.next() < 0.5 ? place.name : "";
      return { id, caller, kind: "featureLookedUp", name, location: place.point };
    });

    const sent: StatsEvent[][] = [];
    const results: { accepted: number; duplicates: number }[] = [];
    const worker = async () => {
      for (let round = 0; round < 20; round += 1) {
        // Ids repeat within a batch, across batches and across instances.
        const batch = Array.from(
          { length: 1 + random.below(12) },
          () => universe[random.below(universe.length)] as StatsEvent,
        );
        // A quarter of the batches are also retried at once on the other instance.
        const targets = random.next() < 0.25 ? instances : [random.pick(instances)];
        sent.push(...targets.map(() => batch));
        results.push(...(await Promise.all(targets.map((store) => store.record(batch)))));
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));

    // What the distinct events add up to, computed here independently of the store.
    const distinct = new Map<string, StatsEvent>();
    for (const event of sent.flat()) distinct.set(event.id, event);
    const totals: Totals = {
      routesRecorded: 0,
      pointsRecorded: 0,
      distanceMeters: 0,
      featuresPassed: 0,
      elapsedSeconds: 0,
      featureLookups: 0,
    };
    const perCaller = new Map<string, CallerCount>();
    const perPlace = new Map<string, FeatureLookupCount>();
    for (const event of distinct.values()) {
      const caller = perCaller.get(event.caller) ?? {
        caller: event.caller,
        routesRecorded: 0,
        featureLookups: 0,
      };
      perCaller.set(event.caller, caller);
      if (event.kind === "routeRecorded") {
        totals.routesRecorded += 1;
        totals.pointsRecorded += event.summary.pointCount;
        totals.distanceMeters += event.summary.distanceMeters;
        totals.featuresPassed += event.summary.featureCount;
        totals.elapsedSeconds += event.summary.elapsedSeconds;
        caller.routesRecorded += 1;
      } else {
        totals.featureLookups += 1;
        caller.featureLookups += 1;
        const key = `${event.location.latitude},${event.location.longitude}`;
        const place = perPlace.get(key) ?? { location: event.location, name: "", lookups: 0 };
        perPlace.set(key, place);
        place.lookups += 1;
        if (event.name) place.name = event.name;
      }
    }

    const run = `(seed ${seed})`;
    assert.equal(
      results.reduce((sum, result) => sum + result.accepted, 0),
      distinct.size,
      `accepted, summed over every call, is the number of distinct ids ${run}`,
    );
    assert.equal(
      results.reduce((sum, result) => sum + result.duplicates, 0),
      sent.flat().length - distinct.size,
      `every other event was a duplicate ${run}`,
    );
    for (const store of instances) {
      const { snapshot } = await store.snapshot({ topN: 100 });
      const { topFeatures, callers: callerCounts, version, ...counted } = snapshot;
      assert.deepEqual(counted, totals, `totals ${run}`);
      assert.deepEqual(
        topFeatures,
        [...perPlace.values()].sort(
          (a, b) =>
            b.lookups - a.lookups ||
            a.location.latitude - b.location.latitude ||
            a.location.longitude - b.location.longitude,
        ),
        `per location ${run}`,
      );
      assert.deepEqual(
        callerCounts,
        [...perCaller.values()].sort((a, b) => byCodeUnits(a.caller, b.caller)),
        `per caller ${run}`,
      );
      assert.equal(
        version,
        results.filter((result) => result.accepted > 0).length,
        `one version per call that counted something ${run}`,
      );
    }
    const [ledger] = await db.query<{ count: string }>("select count(*) from counted_events");
    assert.equal(Number(ledger?.count), distinct.size, `the ledger holds each id once ${run}`);
  });

  test("two instances starting at once on a fresh database: both ready, migrations applied once; starting again changes nothing", async () => {
    const db = await stores.database();
    const { logger, problems } = recordingLogger();
    const [first, second] = await Promise.all([db.open({ logger }), db.open({ logger })]);
    // Without the lock, one instance's migration fails on the other's tables and is retried.
    assert.deepEqual(problems, [], "both connected and migrated at the first attempt");

    const journal = JSON.parse(
      readFileSync(join(migrationsFolder, "meta", "_journal.json"), "utf8"),
    ) as { entries: unknown[] };
    const appliedQuery =
      "select id, hash, created_at from drizzle.__drizzle_migrations order by id";
    const applied = await db.query(appliedQuery);
    assert.ok(journal.entries.length > 0);
    assert.equal(applied.length, journal.entries.length, "each migration recorded once");

    // Both serve the same tables.
    const event: StatsEvent = {
      id: "kept",
      caller: "",
      kind: "featureLookedUp",
      name: "",
      location: { latitude: 1, longitude: 1 },
    };
    assert.deepEqual(await first?.store.record([event]), { accepted: 1, duplicates: 0 });
    assert.deepEqual(await second?.store.record([event]), { accepted: 0, duplicates: 1 });

    // A restart on the migrated database: nothing applied again, nothing lost.
    await first?.store.close();
    const again = await db.open({ logger });
    assert.deepEqual(await db.query(appliedQuery), applied);
    assert.equal((await again.store.snapshot({ topN: 1 })).snapshot.featureLookups, 1);
    assert.deepEqual(problems, []);
  });

  test("a change recorded through one instance reaches a listener on the other", async () => {
    const db = await stores.database();
    const a = (await db.open()).store;
    const b = (await db.open()).store;
    let heardByB = 0;
    let heardByA = 0;
    b.onChange(() => {
      heardByB += 1;
    });
    a.onChange(() => {
      heardByA += 1;
    });
    const lookup = (id: string): StatsEvent => ({
      id,
      caller: "",
      kind: "featureLookedUp",
      name: "",
      location: { latitude: 1, longitude: 1 },
    });

    await a.record([lookup("through-a")]);
    await until(() => heardByB === 1, "the other instance hears the change", 1_000);
    assert.equal((await b.snapshot({ topN: 1 })).snapshot.featureLookups, 1);

    await b.record([lookup("through-b")]);
    await until(() => heardByA === 2, "and the first hears the other's", 1_000);
    // One notification per change, on each instance.
    await sleep(200);
    assert.equal(heardByA, 2);
    assert.equal(heardByB, 2);
  });
});
