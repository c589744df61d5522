import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { routeguide, stats } from "@cloudrun-grpc/proto";
import { StatusError } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { maxEventsPerBatch, requireEvents, requireSnapshotQuery } from "../src/validate.js";

// Wire-shaped input, as the loader produces it (defaults on, oneofs on): missing scalars are
// 0 or "", missing messages are null, and `kind` names the oneof member that is set.

const point = (latitude: number, longitude: number): routeguide.Point__Output => ({
  latitude,
  longitude,
});

function summary(
  fields: Partial<routeguide.RouteSummary__Output> = {},
): routeguide.RouteSummary__Output {
  return { pointCount: 3, featureCount: 1, distanceMeters: 1500, elapsedSeconds: 20, ...fields };
}

function routeEvent(
  id: string,
  routeSummary: routeguide.RouteSummary__Output | null = summary(),
): stats.Event__Output {
  return {
    id,
    caller: "",
    traceparent: "",
    routeRecorded: { summary: routeSummary },
    kind: "routeRecorded",
  };
}

function lookupEvent(
  id: string,
  location: routeguide.Point__Output | null = point(409146138, -746188906),
  name = "Old Mill",
): stats.Event__Output {
  return {
    id,
    caller: "svc@example.com",
    traceparent: "",
    featureLookedUp: { feature: { name, location } },
    kind: "featureLookedUp",
  };
}

const batch = (...events: stats.Event__Output[]): stats.RecordEventsRequest__Output => ({ events });

/** assert.throws matcher: a StatusError with INVALID_ARGUMENT whose details match `pattern`. */
function invalidArgument(pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof StatusError, `expected a StatusError, got ${String(error)}`);
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(error.code, 3);
    assert.match(error.details, pattern);
    return true;
  };
}

describe("requireEvents", () => {
  test("turns valid wire events into store events", () => {
    assert.deepEqual(requireEvents(batch(routeEvent("r1"), lookupEvent("l1"))), [
      {
        id: "r1",
        caller: "",
        kind: "routeRecorded",
        summary: { pointCount: 3, featureCount: 1, distanceMeters: 1500, elapsedSeconds: 20 },
      },
      {
        id: "l1",
        caller: "svc@example.com",
        kind: "featureLookedUp",
        name: "Old Mill",
        location: { latitude: 409146138, longitude: -746188906 },
      },
    ]);
  });

  test("accepts a look-up with an empty name (nothing known at the point) and zero counts", () => {
    const [lookup, route] = requireEvents(
      batch(
        lookupEvent("l1", point(0, 0), ""),
        routeEvent("r1", summary({ pointCount: 0, distanceMeters: 0 })),
      ),
    );
    assert.equal(lookup?.kind === "featureLookedUp" && lookup.name, "");
    assert.equal(route?.kind === "routeRecorded" && route.summary.pointCount, 0);
  });

  test("accepts 1000 events and ids of 128 characters", () => {
    const events = Array.from({ length: maxEventsPerBatch }, (_, i) =>
      lookupEvent(`${i}`.padStart(128, "x")),
    );
    assert.equal(requireEvents(batch(...events)).length, 1000);
  });

  test("an empty batch is rejected", () => {
    assert.throws(() => requireEvents(batch()), invalidArgument(/^events must not be empty$/));
  });

  test("more than 1000 events are rejected", () => {
    const events = Array.from({ length: maxEventsPerBatch + 1 }, (_, i) => lookupEvent(`id-${i}`));
    assert.throws(
      () => requireEvents(batch(...events)),
      invalidArgument(/at most 1000 events.*1001/),
    );
  });

  test("a missing id is rejected, naming the event", () => {
    assert.throws(
      () => requireEvents(batch(lookupEvent(""))),
      invalidArgument(/^events\[0\]\.id /),
    );
  });

  test("an id longer than 128 characters is rejected, naming the event by its index", () => {
    assert.throws(
      () => requireEvents(batch(lookupEvent("ok"), lookupEvent("x".repeat(129)))),
      invalidArgument(/^events\[1\]\.id must have 1 to 128 characters$/),
    );
  });

  test("a caller longer than 320 characters is rejected", () => {
    const event = { ...lookupEvent("l1"), caller: "c".repeat(321) };
    assert.throws(() => requireEvents(batch(event)), invalidArgument(/^events\[0\]\.caller /));
  });

  test("a route event without its summary is rejected", () => {
    assert.throws(
      () => requireEvents(batch(routeEvent("r1", null))),
      invalidArgument(/^events\[0\]\.route_recorded\.summary is required$/),
    );
  });

  test("a negative count is rejected, naming the count", () => {
    for (const [field, name] of [
      ["pointCount", "point_count"],
      ["featureCount", "feature_count"],
      ["distanceMeters", "distance_meters"],
      ["elapsedSeconds", "elapsed_seconds"],
    ] as const) {
      assert.throws(
        () => requireEvents(batch(routeEvent("r1", summary({ [field]: -1 })))),
        invalidArgument(new RegExp(`^events\\[0\\]\\.route_recorded\\.summary\\.${name} .*-1$`)),
      );
    }
  });

  test("a look-up event without its feature is rejected", () => {
    const event: stats.Event__Output = {
      id: "l1",
      caller: "",
      traceparent: "",
      featureLookedUp: { feature: null },
      kind: "featureLookedUp",
    };
    assert.throws(
      () => requireEvents(batch(event)),
      invalidArgument(/^events\[0\]\.feature_looked_up\.feature is required$/),
    );
  });

  test("a look-up event without a location is rejected", () => {
    assert.throws(
      () => requireEvents(batch(lookupEvent("l1", null))),
      invalidArgument(/^events\[0\]\.feature_looked_up\.feature\.location is required$/),
    );
  });

  test("a look-up event with an out-of-range location is rejected", () => {
    assert.throws(
      () => requireEvents(batch(lookupEvent("l1", point(900000001, 0)))),
      invalidArgument(/^events\[0\]\.feature_looked_up\.feature\.location\.latitude /),
    );
    assert.throws(
      () => requireEvents(batch(lookupEvent("l1", point(0, -1800000001)))),
      invalidArgument(/^events\[0\]\.feature_looked_up\.feature\.location\.longitude /),
    );
  });

  test("an event with no kind is rejected", () => {
    const event: stats.Event__Output = { id: "e1", caller: "", traceparent: "" };
    assert.throws(
      () => requireEvents(batch(lookupEvent("l1"), event)),
      invalidArgument(/^events\[1\] must be a route_recorded or a feature_looked_up event$/),
    );
  });
});

describe("requireSnapshotQuery", () => {
  test("without within: only topN", () => {
    assert.deepEqual(requireSnapshotQuery({ topN: 0, within: null, namedOnly: false }), {
      topN: 10,
      namedOnly: false,
    });
  });

  test("within becomes bounds, corners in any order", () => {
    const query = requireSnapshotQuery({
      topN: 5,
      namedOnly: true,
      within: { lo: point(410000000, -740000000), hi: point(400000000, -750000000) },
    });
    assert.deepEqual(query, {
      topN: 5,
      namedOnly: true,
      within: {
        minLatitude: 400000000,
        maxLatitude: 410000000,
        minLongitude: -750000000,
        maxLongitude: -740000000,
      },
    });
  });

  test("a within with a missing corner is rejected", () => {
    assert.throws(
      () =>
        requireSnapshotQuery({ topN: 5, namedOnly: false, within: { lo: point(0, 0), hi: null } }),
      invalidArgument(/\.hi is required$/),
    );
  });

  test("a bad topN is rejected even with a valid within", () => {
    assert.throws(
      () =>
        requireSnapshotQuery({
          topN: 1001,
          namedOnly: false,
          within: { lo: point(0, 0), hi: point(1, 1) },
        }),
      invalidArgument(/^top_n /),
    );
  });
});
