// What stats reads from the wire, checked. grpc-js decodes anything that parses as protobuf,
// with defaults for missing fields, so every field is checked here before it is counted.
import type { stats } from "@cloudrun-grpc/proto";
import {
  invalidArgument,
  requirePoint,
  requireRectangle,
  requireTopN,
} from "@cloudrun-grpc/runtime";
import type { SnapshotQuery, StatsEvent } from "./store.js";

export const maxEventsPerBatch = 1000;
const maxIdLength = 128;
const maxCallerLength = 320;
const maxNameLength = 200;

function requireCount(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0) {
    throw invalidArgument(`${what} must be a whole number ≥ 0, got ${value}`);
  }
  return value;
}

export function requireEvent(event: stats.Event__Output, index: number): StatsEvent {
  const at = `events[${index}]`;
  if (event.id.length === 0 || event.id.length > maxIdLength) {
    throw invalidArgument(`${at}.id must have 1 to ${maxIdLength} characters`);
  }
  if (event.caller.length > maxCallerLength) {
    throw invalidArgument(`${at}.caller must have at most ${maxCallerLength} characters`);
  }
  const { id, caller } = event;
  if (event.kind === "routeRecorded") {
    const summary = event.routeRecorded?.summary;
    if (!summary) throw invalidArgument(`${at}.route_recorded.summary is required`);
    const field = (name: string) => `${at}.route_recorded.summary.${name}`;
    return {
      id,
      caller,
      kind: "routeRecorded",
      summary: {
        pointCount: requireCount(summary.pointCount, field("point_count")),
        featureCount: requireCount(summary.featureCount, field("feature_count")),
        distanceMeters: requireCount(summary.distanceMeters, field("distance_meters")),
        elapsedSeconds: requireCount(summary.elapsedSeconds, field("elapsed_seconds")),
      },
    };
  }
  if (event.kind === "featureLookedUp") {
    const feature = event.featureLookedUp?.feature;
    if (!feature) throw invalidArgument(`${at}.feature_looked_up.feature is required`);
    const location = requirePoint(feature.location, `${at}.feature_looked_up.feature.location`);
    if (feature.name.length > maxNameLength) {
      throw invalidArgument(
        `${at}.feature_looked_up.feature.name must have at most ${maxNameLength} characters`,
      );
    }
    return { id, caller, kind: "featureLookedUp", name: feature.name, location };
  }
  throw invalidArgument(`${at} must be a route_recorded or a feature_looked_up event`);
}

export function requireEvents(request: stats.RecordEventsRequest__Output): StatsEvent[] {
  if (request.events.length === 0) throw invalidArgument("events must not be empty");
  if (request.events.length > maxEventsPerBatch) {
    throw invalidArgument(
      `at most ${maxEventsPerBatch} events per request, got ${request.events.length}`,
    );
  }
  return request.events.map(requireEvent);
}

export function requireSnapshotQuery(request: stats.GetStatsRequest__Output): SnapshotQuery {
  const topN = requireTopN(request.topN);
  const namedOnly = request.namedOnly;
  return request.within
    ? { topN, namedOnly, within: requireRectangle(request.within, "within") }
    : { topN, namedOnly };
}
