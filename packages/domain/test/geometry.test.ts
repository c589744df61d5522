import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Point } from "@cloudrun-grpc/domain";
import { distanceMeters } from "../src/geometry.js";

const e7 = (degrees: number) => Math.round(degrees * 1e7);
const point = (latitude: number, longitude: number): Point => ({
  latitude: e7(latitude),
  longitude: e7(longitude),
});

/** The spherical law of cosines, on the same sphere: an independent formula for the check. */
function lawOfCosinesMeters(from: Point, to: Point): number {
  const radians = (value: number) => ((value / 1e7) * Math.PI) / 180;
  const lat1 = radians(from.latitude);
  const lat2 = radians(to.latitude);
  const cosine =
    Math.sin(lat1) * Math.sin(lat2) +
    Math.cos(lat1) * Math.cos(lat2) * Math.cos(radians(to.longitude - from.longitude));
  return 6_371_000 * Math.acos(Math.min(1, cosine));
}

describe("distanceMeters", () => {
  test("is 0 from a point to itself", () => {
    const here = point(40.7128, -74.006);
    assert.equal(distanceMeters(here, here), 0);
  });

  test("one degree of latitude along a meridian is about 111195 m", () => {
    const distance = distanceMeters(point(40, -75), point(41, -75));
    assert.ok(Math.abs(distance - 111_195) < 1, `got ${distance}`);
  });

  test("one degree of longitude on the equator, across the antimeridian, is about 111195 m", () => {
    const distance = distanceMeters(point(0, 179.5), point(0, -179.5));
    assert.ok(Math.abs(distance - 111_195) < 1, `got ${distance}`);
  });

  test("London to Paris matches the spherical law of cosines within 0.1%", () => {
    const london = point(51.5074, -0.1278);
    const paris = point(48.8566, 2.3522);
    const expected = lawOfCosinesMeters(london, paris);
    const distance = distanceMeters(london, paris);
    assert.ok(expected > 340_000 && expected < 347_000, `law of cosines gave ${expected}`);
    assert.ok(
      Math.abs(distance - expected) / expected < 0.001,
      `got ${distance}, expected ${expected}`,
    );
  });

  test("is the same in both directions", () => {
    const a = point(40.2, -74.8);
    const b = point(40.9, -74.1);
    assert.equal(distanceMeters(a, b), distanceMeters(b, a));
  });
});
