import { e7, type Point } from "@cloudrun-grpc/runtime";

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
