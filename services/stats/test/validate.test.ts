import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { routeguide, stats } from "@cloudrun-grpc/proto";
import { StatusError } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { checkEvents, maxEventsPerBatch, requireSnapshotQuery } from "../src/validate.js";

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
    calls: 0,
    callIds: [],
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
    calls: 0,
    callIds: [],
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

/** The one rejection of a batch whose other events are all valid. */
function rejectedOnly(request: stats.RecordEventsRequest__Output): stats.RejectedEvent {
  const { valid, validReceived, rejected } = checkEvents(request);
  assert.equal(rejected.length, 1, `one event rejected: ${JSON.stringify(rejected)}`);
  assert.equal(valid.length, request.events.length - 1, "the others are valid");
  assert.equal(validReceived.length, valid.length);
  return rejected[0] as stats.RejectedEvent;
}

/** Asserts the rejection names `field` at `index` and its description starts with the field. */
function assertRejection(
  rejection: stats.RejectedEvent,
  index: number,
  field: string,
  description: RegExp,
): void {
  assert.equal(rejection.index, index);
  assert.equal(rejection.field, field);
  assert.ok(rejection.description?.startsWith(field), rejection.description);
  assert.match(String(rejection.description), description);
}

describe("checkEvents", () => {
  test("turns valid wire events into store events, none rejected", () => {
    const received = batch(routeEvent("r1"), lookupEvent("l1"));
    const { valid, validReceived, rejected } = checkEvents(received);
    assert.deepEqual(valid, [
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
    assert.deepEqual(validReceived, received.events);
    assert.deepEqual(rejected, []);
  });

  test("accepts a look-up with an empty name (nothing known at the point) and zero counts", () => {
    const [lookup, route] = checkEvents(
      batch(
        lookupEvent("l1", point(0, 0), ""),
        routeEvent("r1", summary({ pointCount: 0, distanceMeters: 0 })),
      ),
    ).valid;
    assert.equal(lookup?.kind === "featureLookedUp" && lookup.name, "");
    assert.equal(route?.kind === "routeRecorded" && route.summary.pointCount, 0);
  });

  test("accepts 1000 events and ids of 128 characters", () => {
    const events = Array.from({ length: maxEventsPerBatch }, (_, i) =>
      lookupEvent(`${i}`.padStart(128, "x")),
    );
    assert.equal(checkEvents(batch(...events)).valid.length, 1000);
  });

  test("an event of several calls keeps how many and the ids it names; one of one call stays as it was", () => {
    const summed = { ...lookupEvent("sum-1"), calls: 3, callIds: ["c1:lookup", "c2:lookup"] };
    const single = { ...lookupEvent("c3:lookup"), calls: 1 };
    const [first, second] = checkEvents(batch(summed, single)).valid;
    assert.equal(first?.calls, 3);
    assert.deepEqual(first?.callIds, ["c1:lookup", "c2:lookup"]);
    assert.equal(second?.calls, undefined);
    assert.equal(second?.callIds, undefined);
  });

  test("calls past 1000, more call ids than calls, a bad call id, and a route of several calls are rejected", () => {
    const cases: [stats.Event__Output, string, RegExp][] = [
      [{ ...lookupEvent("x"), calls: 1001 }, "events[1].calls", /at most 1000, got 1001/],
      [
        { ...lookupEvent("x"), calls: 2, callIds: ["a", "b", "c"] },
        "events[1].call_ids",
        /at most events\[1\]\.calls \(2\) calls, got 3/,
      ],
      [
        { ...lookupEvent("x"), calls: 2, callIds: ["a", ""] },
        "events[1].call_ids[1]",
        /1 to 128 characters/,
      ],
      [{ ...lookupEvent("x"), calls: 2, callIds: ["a\u0000"] }, "events[1].call_ids[0]", /U\+0000/],
      [{ ...routeEvent("r"), calls: 2 }, "events[1].calls", /must be 1 for a route_recorded/],
    ];
    for (const [event, field, description] of cases) {
      assertRejection(rejectedOnly(batch(lookupEvent("ok"), event)), 1, field, description);
    }
  });

  test("more than 10000 call ids in a batch fail as a whole", () => {
    const ids = (from: number) => Array.from({ length: 1000 }, (_, i) => `c${from + i}`);
    const events = Array.from({ length: 11 }, (_, i) => ({
      ...lookupEvent(`sum-${i}`),
      calls: 1000,
      callIds: ids(i * 1000),
    }));
    assert.equal(checkEvents(batch(...events.slice(0, 10))).valid.length, 10);
    assert.throws(
      () => checkEvents(batch(...events)),
      invalidArgument(/at most 10000 call ids per request, got 11000/),
    );
  });

  test("an empty batch fails as a whole", () => {
    assert.throws(() => checkEvents(batch()), invalidArgument(/^events must not be empty$/));
  });

  test("more than 1000 events fail as a whole", () => {
    const events = Array.from({ length: maxEventsPerBatch + 1 }, (_, i) => lookupEvent(`id-${i}`));
    assert.throws(
      () => checkEvents(batch(...events)),
      invalidArgument(/at most 1000 events.*1001/),
    );
  });

  test("each invalid event is rejected by its index and field; the valid ones around it stay", () => {
    const noKind: stats.Event__Output = {
      id: "e1",
      caller: "",
      traceparent: "",
      calls: 0,
      callIds: [],
    };
    const received = batch(
      lookupEvent("ok-0"),
      lookupEvent(""),
      routeEvent("ok-2"),
      noKind,
      routeEvent("bad-4", summary({ featureCount: -1 })),
      lookupEvent("ok-5"),
    );
    const { valid, validReceived, rejected } = checkEvents(received);
    assert.deepEqual(
      valid.map((event) => event.id),
      ["ok-0", "ok-2", "ok-5"],
    );
    assert.deepEqual(validReceived, [received.events[0], received.events[2], received.events[5]]);
    assert.deepEqual(
      rejected.map(({ index, field }) => ({ index, field })),
      [
        { index: 1, field: "events[1].id" },
        { index: 3, field: "events[3].kind" },
        { index: 4, field: "events[4].route_recorded.summary.feature_count" },
      ],
    );
  });

  test("a missing id is rejected, naming the field", () => {
    assertRejection(rejectedOnly(batch(lookupEvent(""))), 0, "events[0].id", / must have 1 to/);
  });

  test("an id longer than 128 characters is rejected, naming the event by its index", () => {
    assertRejection(
      rejectedOnly(batch(lookupEvent("ok"), lookupEvent("x".repeat(129)))),
      1,
      "events[1].id",
      /^events\[1\]\.id must have 1 to 128 characters$/,
    );
  });

  test("a caller longer than 320 characters is rejected", () => {
    const event = { ...lookupEvent("l1"), caller: "c".repeat(321) };
    assertRejection(rejectedOnly(batch(event)), 0, "events[0].caller", / at most 320 /);
  });

  test("a route event without its summary is rejected", () => {
    assertRejection(
      rejectedOnly(batch(routeEvent("r1", null))),
      0,
      "events[0].route_recorded.summary",
      /^events\[0\]\.route_recorded\.summary is required$/,
    );
  });

  test("a negative count is rejected, naming the count", () => {
    for (const [field, name] of [
      ["pointCount", "point_count"],
      ["featureCount", "feature_count"],
      ["distanceMeters", "distance_meters"],
      ["elapsedSeconds", "elapsed_seconds"],
    ] as const) {
      assertRejection(
        rejectedOnly(batch(routeEvent("r1", summary({ [field]: -1 })))),
        0,
        `events[0].route_recorded.summary.${name}`,
        /-1$/,
      );
    }
  });

  test("a route longer than its legs can be is rejected, naming the distance", () => {
    assertRejection(
      rejectedOnly(batch(routeEvent("r1", summary({ pointCount: 2, distanceMeters: 20037510 })))),
      0,
      "events[0].route_recorded.summary.distance_meters",
      /must be at most 20037509 for 2 point/,
    );
  });

  test("a look-up event without its feature is rejected", () => {
    const event: stats.Event__Output = {
      id: "l1",
      caller: "",
      traceparent: "",
      calls: 0,
      callIds: [],
      featureLookedUp: { feature: null },
      kind: "featureLookedUp",
    };
    assertRejection(
      rejectedOnly(batch(event)),
      0,
      "events[0].feature_looked_up.feature",
      / is required$/,
    );
  });

  test("a look-up event without a location is rejected", () => {
    assertRejection(
      rejectedOnly(batch(lookupEvent("l1", null))),
      0,
      "events[0].feature_looked_up.feature.location",
      / is required$/,
    );
  });

  test("a look-up event with an out-of-range location is rejected", () => {
    assertRejection(
      rejectedOnly(batch(lookupEvent("l1", point(900000001, 0)))),
      0,
      "events[0].feature_looked_up.feature.location.latitude",
      /900000001/,
    );
    assertRejection(
      rejectedOnly(batch(lookupEvent("l1", point(0, -1800000001)))),
      0,
      "events[0].feature_looked_up.feature.location.longitude",
      /-1800000001/,
    );
  });

  test("a NUL in a feature's name is rejected", () => {
    assertRejection(
      rejectedOnly(batch(lookupEvent("l1", undefined, "Old\u0000Mill"))),
      0,
      "events[0].feature_looked_up.feature.name",
      /U\+0000/,
    );
  });

  test("an event with no kind is rejected", () => {
    const event: stats.Event__Output = {
      id: "e1",
      caller: "",
      traceparent: "",
      calls: 0,
      callIds: [],
    };
    assertRejection(
      rejectedOnly(batch(lookupEvent("l1"), event)),
      1,
      "events[1].kind",
      / must be route_recorded or feature_looked_up \(the event has neither\)$/,
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
