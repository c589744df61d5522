import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Point } from "@cloudrun-grpc/domain";
import { distanceMeters } from "@cloudrun-grpc/domain";
import { FeatureIndex } from "../src/features.js";
import { RouteRecorder } from "../src/route-summary.js";

const mill: Point = { latitude: 400_000_000, longitude: -750_000_000 };
const bridge: Point = { latitude: 401_000_000, longitude: -750_000_000 };
const nowhere: Point = { latitude: 402_000_000, longitude: -750_000_000 };
const features = new FeatureIndex([
  { name: "Old Mill", location: mill },
  { name: "Red Bridge", location: bridge },
]);

/** A clock the test moves by hand. */
function fakeClock(start: number) {
  const clock = { now: start, read: () => clock.now };
  return clock;
}

describe("RouteRecorder", () => {
  test("an empty route is all zeros, however long the stream stayed open", () => {
    const clock = fakeClock(1_000);
    const recorder = new RouteRecorder(features, clock.read);
    clock.now += 60_000;
    assert.deepEqual(recorder.summary(), {
      pointCount: 0,
      featureCount: 0,
      distanceMeters: 0,
      elapsedSeconds: 0,
    });
  });

  test("counts every point, repeated ones included", () => {
    const recorder = new RouteRecorder(features);
    for (const point of [mill, nowhere, nowhere, bridge]) recorder.add(point);
    assert.equal(recorder.points, 4);
    assert.equal(recorder.summary().pointCount, 4);
  });

  test("sums the distance point to point, rounded to whole metres", () => {
    const recorder = new RouteRecorder(features);
    // 0.1° of latitude each way (about 11119.5 m): there and back is twice that, not 0.
    for (const point of [mill, bridge, mill]) recorder.add(point);
    const leg = distanceMeters(mill, bridge);
    assert.ok(Math.abs(leg - 11_119.5) < 1, `leg ${leg}`);
    assert.equal(recorder.summary().distanceMeters, Math.round(2 * leg));
    assert.ok(Number.isInteger(recorder.summary().distanceMeters));
  });

  test("one point has no distance", () => {
    const recorder = new RouteRecorder(features);
    recorder.add(nowhere);
    assert.equal(recorder.summary().distanceMeters, 0);
    assert.equal(recorder.summary().pointCount, 1);
  });

  test("counts distinct features: the same one twice counts once, unnamed points not at all", () => {
    const recorder = new RouteRecorder(features);
    for (const point of [
      nowhere,
      mill,
      nowhere,
      mill,
      bridge,
      { ...mill, latitude: mill.latitude + 1 },
    ]) {
      recorder.add(point);
    }
    assert.equal(recorder.summary().featureCount, 2);
  });

  test("a route through no feature has a feature count of 0", () => {
    const recorder = new RouteRecorder(features);
    recorder.add(nowhere);
    recorder.add({ latitude: 0, longitude: 0 });
    assert.equal(recorder.summary().featureCount, 0);
  });

  test("elapsed time runs from the first point, in whole seconds", () => {
    const clock = fakeClock(0);
    const recorder = new RouteRecorder(features, clock.read);
    clock.now = 10_000; // the stream was open 10 s before the first point
    recorder.add(mill);
    clock.now = 12_000;
    recorder.add(bridge);
    clock.now = 14_999;
    assert.equal(recorder.summary().elapsedSeconds, 4);
    clock.now = 15_000;
    assert.equal(recorder.summary().elapsedSeconds, 5);
  });
});
