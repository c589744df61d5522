// Points and areas as the RouteGuide contract has them: E7 integers (degrees × 10^7).

export interface Point {
  latitude: number;
  longitude: number;
}

export const e7 = 1e7;

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

const earthRadiusMeters = 6_371_000;

const toRadians = (e7Degrees: number) => ((e7Degrees / e7) * Math.PI) / 180;

/** Great-circle distance in metres (haversine formula on a spherical Earth). */
export function distanceMeters(from: Point, to: Point): number {
  const lat1 = toRadians(from.latitude);
  const lat2 = toRadians(to.latitude);
  const deltaLat = lat2 - lat1;
  const deltaLon = toRadians(to.longitude - from.longitude);
  const a =
    Math.sin(deltaLat / 2) ** 2 + Math.cos(lat1) * Math.cos(lat2) * Math.sin(deltaLon / 2) ** 2;
  return 2 * earthRadiusMeters * Math.atan2(Math.sqrt(a), Math.sqrt(1 - a));
}
