// What a batch of new events adds to the aggregates, summed in memory so the database gets one
// increment per row (per caller, per location, and the totals) instead of one per event.
import { type Point, pointKey } from "@cloudrun-grpc/domain";
import type { CallerCount, StatsEvent, Totals } from "./store.js";

export interface LookupDelta {
  location: Point;
  /** The last non-empty name in the batch ("" when none: the stored name is kept). */
  name: string;
  lookups: number;
}

export interface BatchDelta {
  totals: Totals;
  /** By caller, sorted (a fixed order of row locks across concurrent batches). */
  callers: CallerCount[];
  /** By location, sorted by latitude then longitude (same reason). */
  lookups: LookupDelta[];
}

export function aggregateEvents(events: readonly StatsEvent[]): BatchDelta {
  const totals: Totals = {
    routesRecorded: 0,
    pointsRecorded: 0,
    distanceMeters: 0,
    featuresPassed: 0,
    elapsedSeconds: 0,
    featureLookups: 0,
  };
  const callers = new Map<string, CallerCount>();
  const lookups = new Map<string, LookupDelta>();
  for (const event of events) {
    let caller = callers.get(event.caller);
    if (!caller) {
      caller = { caller: event.caller, routesRecorded: 0, featureLookups: 0 };
      callers.set(event.caller, caller);
    }
    if (event.kind === "routeRecorded") {
      totals.routesRecorded += 1;
      totals.pointsRecorded += event.summary.pointCount;
      totals.distanceMeters += event.summary.distanceMeters;
      totals.featuresPassed += event.summary.featureCount;
      totals.elapsedSeconds += event.summary.elapsedSeconds;
      caller.routesRecorded += 1;
      continue;
    }
    totals.featureLookups += 1;
    caller.featureLookups += 1;
    const key = pointKey(event.location);
    const entry = lookups.get(key);
    if (entry) {
      entry.lookups += 1;
      if (event.name) entry.name = event.name;
    } else {
      lookups.set(key, { location: { ...event.location }, name: event.name, lookups: 1 });
    }
  }
  return {
    totals,
    callers: [...callers.values()].sort((a, b) => compareText(a.caller, b.caller)),
    lookups: [...lookups.values()].sort(
      (a, b) =>
        a.location.latitude - b.location.latitude || a.location.longitude - b.location.longitude,
    ),
  };
}

/** UTF-16 code-unit order: a fixed order for row locks (PostgreSQL's "C" order differs only past U+FFFF). */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
