// Checks of what the services read from the wire (points, rectangles, top_n), shared by
// route, stats and gateway: a bad value is INVALID_ARGUMENT naming the field.
import type { routeguide } from "@cloudrun-grpc/proto";
import { invalidArgument } from "@cloudrun-grpc/runtime";
import { type Bounds, boundsOf, e7, type Point } from "./geometry.js";

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
