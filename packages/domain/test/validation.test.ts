import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { StatusError } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import {
  type Bounds,
  boundsOf,
  contains,
  type Point,
  requirePoint,
  requireRectangle,
  requireTopN,
} from "../src/index.js";

/** A matcher for assert.throws: INVALID_ARGUMENT whose message matches `pattern`. */
function invalidArgument(pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof StatusError, `expected a StatusError, got ${String(error)}`);
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.match(error.details, pattern);
    return true;
  };
}

describe("requirePoint", () => {
  test("returns the point's coordinates", () => {
    assert.deepEqual(requirePoint({ latitude: 409146138, longitude: -746188906 }, "point"), {
      latitude: 409146138,
      longitude: -746188906,
    });
  });

  test("a missing point is INVALID_ARGUMENT naming the field", () => {
    assert.throws(
      () => requirePoint(null, "note.location"),
      invalidArgument(/^note\.location is required$/),
    );
    assert.throws(() => requirePoint(undefined, "point"), invalidArgument(/^point is required$/));
  });

  test("accepts the boundary values", () => {
    for (const latitude of [900000000, -900000000]) {
      for (const longitude of [1800000000, -1800000000]) {
        assert.deepEqual(requirePoint({ latitude, longitude }, "point"), { latitude, longitude });
      }
    }
  });

  test("rejects a latitude one beyond the range, naming the field", () => {
    for (const latitude of [900000001, -900000001]) {
      assert.throws(
        () => requirePoint({ latitude, longitude: 0 }, "point"),
        invalidArgument(new RegExp(`^point\\.latitude must be .*got ${latitude}$`)),
      );
    }
  });

  test("rejects a longitude one beyond the range, naming the field", () => {
    for (const longitude of [1800000001, -1800000001]) {
      assert.throws(
        () => requirePoint({ latitude: 0, longitude }, "point"),
        invalidArgument(new RegExp(`^point\\.longitude must be .*got ${longitude}$`)),
      );
    }
  });

  test("rejects coordinates that are not whole numbers", () => {
    assert.throws(
      () => requirePoint({ latitude: 1.5, longitude: 0 }, "p"),
      invalidArgument(/^p\.latitude/),
    );
    assert.throws(
      () => requirePoint({ latitude: 0, longitude: Number.NaN }, "p"),
      invalidArgument(/^p\.longitude/),
    );
  });
});

describe("requireRectangle and boundsOf", () => {
  const southWest: Point = { latitude: 400000000, longitude: -750000000 };
  const northEast: Point = { latitude: 410000000, longitude: -740000000 };
  const northWest: Point = { latitude: northEast.latitude, longitude: southWest.longitude };
  const southEast: Point = { latitude: southWest.latitude, longitude: northEast.longitude };
  const expected: Bounds = {
    minLatitude: 400000000,
    maxLatitude: 410000000,
    minLongitude: -750000000,
    maxLongitude: -740000000,
  };

  test("corners in any of the 4 orders give the same bounds", () => {
    const orders: [Point, Point][] = [
      [southWest, northEast],
      [northEast, southWest],
      [northWest, southEast],
      [southEast, northWest],
    ];
    for (const [lo, hi] of orders) {
      assert.deepEqual(boundsOf(lo, hi), expected);
      assert.deepEqual(requireRectangle({ lo, hi }), expected);
    }
  });

  test("a missing rectangle or corner is INVALID_ARGUMENT naming it", () => {
    assert.throws(() => requireRectangle(null), invalidArgument(/^rectangle is required$/));
    assert.throws(
      () => requireRectangle({ lo: null, hi: northEast }),
      invalidArgument(/^rectangle\.lo is required$/),
    );
    assert.throws(
      () => requireRectangle({ lo: southWest, hi: null }),
      invalidArgument(/^rectangle\.hi is required$/),
    );
  });

  test("an out-of-range corner is INVALID_ARGUMENT naming the corner", () => {
    assert.throws(
      () => requireRectangle({ lo: southWest, hi: { latitude: 0, longitude: 1800000001 } }),
      invalidArgument(/^rectangle\.hi\.longitude/),
    );
  });
});

describe("contains", () => {
  const bounds: Bounds = { minLatitude: 10, maxLatitude: 20, minLongitude: -20, maxLongitude: -10 };

  test("includes the inside, the edges and the corners", () => {
    for (const point of [
      { latitude: 15, longitude: -15 },
      { latitude: 10, longitude: -15 },
      { latitude: 20, longitude: -15 },
      { latitude: 15, longitude: -20 },
      { latitude: 15, longitude: -10 },
      { latitude: 10, longitude: -20 },
      { latitude: 20, longitude: -10 },
    ]) {
      assert.equal(contains(bounds, point), true, JSON.stringify(point));
    }
  });

  test("excludes points one unit outside any edge", () => {
    for (const point of [
      { latitude: 9, longitude: -15 },
      { latitude: 21, longitude: -15 },
      { latitude: 15, longitude: -21 },
      { latitude: 15, longitude: -9 },
    ]) {
      assert.equal(contains(bounds, point), false, JSON.stringify(point));
    }
  });
});

describe("requireTopN", () => {
  test("0 means 10", () => {
    assert.equal(requireTopN(0), 10);
  });

  test("1 to 1000 are taken as they are", () => {
    assert.equal(requireTopN(1), 1);
    assert.equal(requireTopN(1000), 1000);
  });

  test("out of range is rejected naming top_n", () => {
    for (const topN of [1001, -1]) {
      assert.throws(() => requireTopN(topN), invalidArgument(new RegExp(`^top_n .*got ${topN}$`)));
    }
  });
});
