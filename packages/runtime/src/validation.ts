// Checks of what services read from the wire, shared by route, stats and gateway.
// Points are E7 integers (degrees × 10^7), as in the RouteGuide contract.
import type { routeguide } from "@cloudrun-grpc/proto";
import { invalidArgument } from "./errors.js";

export interface Point {
  latitude: number;
  longitude: number;
}

export const e7 = 1e7;

/** Checks a point read from the wire; throws INVALID_ARGUMENT naming `what` when it is unusable. */
export function requirePoint(
  point: routeguide.Point__Output | null | undefined,
  what: string,
): Point {
  if (!point) throw invalidArgument(`${what} is required`, what);
  const { latitude, longitude } = point;
  if (!Number.isInteger(latitude) || latitude < -90 * e7 || latitude > 90 * e7) {
    throw invalidArgument(
      `${what}.latitude must be from -900000000 to 900000000 (E7 degrees), got ${latitude}`,
      `${what}.latitude`,
    );
  }
  if (!Number.isInteger(longitude) || longitude < -180 * e7 || longitude > 180 * e7) {
    throw invalidArgument(
      `${what}.longitude must be from -1800000000 to 1800000000 (E7 degrees), got ${longitude}`,
      `${what}.longitude`,
    );
  }
  return { latitude, longitude };
}

export interface Bounds {
  minLatitude: number;
  maxLatitude: number;
  minLongitude: number;
  maxLongitude: number;
}

/** The area between two opposite corners given in any order. */
export function boundsOf(a: Point, b: Point): Bounds {
  return {
    minLatitude: Math.min(a.latitude, b.latitude),
    maxLatitude: Math.max(a.latitude, b.latitude),
    minLongitude: Math.min(a.longitude, b.longitude),
    maxLongitude: Math.max(a.longitude, b.longitude),
  };
}

export function requireRectangle(
  rectangle: routeguide.Rectangle__Output | null | undefined,
  what = "rectangle",
): Bounds {
  if (!rectangle) throw invalidArgument(`${what} is required`);
  return boundsOf(
    requirePoint(rectangle.lo, `${what}.lo`),
    requirePoint(rectangle.hi, `${what}.hi`),
  );
}

/** Edges included: a point on the border is inside. */
export function contains(bounds: Bounds, point: Point): boolean {
  return (
    point.latitude >= bounds.minLatitude &&
    point.latitude <= bounds.maxLatitude &&
    point.longitude >= bounds.minLongitude &&
    point.longitude <= bounds.maxLongitude
  );
}

export const pointKey = (point: Point) => `${point.latitude},${point.longitude}`;

/** The contracts' `top_n`: 0 means 10; at most 1000. */
export const maxTopN = 1000;
const defaultTopN = 10;

export function requireTopN(topN: number): number {
  if (!Number.isInteger(topN) || topN < 0 || topN > maxTopN) {
    throw invalidArgument(
      `top_n must be from 0 to ${maxTopN} (0 means ${defaultTopN}), got ${topN}`,
    );
  }
  return topN === 0 ? defaultTopN : topN;
}
