// The stats store: what stats counts, behind a small interface so the storage can change
// (a PostgreSQL store replaces the in-memory one later) without touching the handlers.
import { type Bounds, contains, type Point, pointKey } from "@cloudrun-grpc/runtime";

/** An event as stats accepts it, after validation. */
export type StatsEvent =
  | {
      id: string;
      caller: string;
      kind: "routeRecorded";
      summary: {
        pointCount: number;
        featureCount: number;
        distanceMeters: number;
        elapsedSeconds: number;
      };
    }
  | { id: string; caller: string; kind: "featureLookedUp"; name: string; location: Point };

export interface FeatureLookupCount {
  location: Point;
  name: string;
  lookups: number;
}

export interface CallerCount {
  caller: string;
  routesRecorded: number;
  featureLookups: number;
}

export interface Totals {
  routesRecorded: number;
  pointsRecorded: number;
  distanceMeters: number;
  featuresPassed: number;
  elapsedSeconds: number;
  featureLookups: number;
}

export interface Snapshot extends Totals {
  topFeatures: FeatureLookupCount[];
  callers: CallerCount[];
  version: number;
}

export interface SnapshotQuery {
  topN: number;
  /** Only list look-ups inside these bounds, and count them in `lookupsWithin`. */
  within?: Bounds;
  /** Only list locations with a named feature (all look-ups still count in `lookupsWithin`). */
  namedOnly?: boolean;
}

export interface StatsStore {
  /** Counts each event whose id is new; an id seen before is ignored. */
  record(events: StatsEvent[]): Promise<{ accepted: number; duplicates: number }>;
  snapshot(query: SnapshotQuery): Promise<{ snapshot: Snapshot; lookupsWithin: number }>;
  /** Calls `listener` after every change; returns the function that unsubscribes. */
  onChange(listener: () => void): () => void;
}

/** Most looked-up first; ties in a stable order (by latitude, then longitude). */
export function byLookupsDescending(a: FeatureLookupCount, b: FeatureLookupCount): number {
  return (
    b.lookups - a.lookups ||
    a.location.latitude - b.location.latitude ||
    a.location.longitude - b.location.longitude
  );
}

/**
 * Aggregates in this process's memory. Right for one instance and for tests; it forgets
 * everything at restart and each instance sees only its own share.
 */
export class MemoryStatsStore implements StatsStore {
  private readonly totals: Totals = {
    routesRecorded: 0,
    pointsRecorded: 0,
    distanceMeters: 0,
    featuresPassed: 0,
    elapsedSeconds: 0,
    featureLookups: 0,
  };
  private readonly lookups = new Map<string, FeatureLookupCount>();
  private readonly callers = new Map<string, CallerCount>();
  private readonly listeners = new Set<() => void>();
  private version = 0;
  // Ids already counted, oldest first. Bounded: a retry of an event older than the last
  // `maxRememberedIds` ids would count twice (the reporter retries within seconds).
  private readonly seenIds = new Set<string>();

  constructor(private readonly maxRememberedIds = 1_000_000) {}

  async record(events: StatsEvent[]): Promise<{ accepted: number; duplicates: number }> {
    let accepted = 0;
    for (const event of events) {
      if (this.seenIds.has(event.id)) continue;
      this.remember(event.id);
      this.apply(event);
      accepted += 1;
    }
    if (accepted > 0) {
      this.version += 1;
      for (const listener of this.listeners) listener();
    }
    return { accepted, duplicates: events.length - accepted };
  }

  async snapshot(query: SnapshotQuery): Promise<{ snapshot: Snapshot; lookupsWithin: number }> {
    let lookupsWithin = 0;
    const candidates: FeatureLookupCount[] = [];
    for (const entry of this.lookups.values()) {
      if (query.within && !contains(query.within, entry.location)) continue;
      lookupsWithin += entry.lookups;
      if (query.namedOnly && entry.name === "") continue;
      candidates.push(entry);
    }
    const topFeatures = candidates
      .sort(byLookupsDescending)
      .slice(0, query.topN)
      .map((entry) => ({ ...entry, location: { ...entry.location } }));
    const callers = [...this.callers.values()]
      .sort((a, b) => (a.caller < b.caller ? -1 : a.caller > b.caller ? 1 : 0))
      .map((entry) => ({ ...entry }));
    return {
      snapshot: { ...this.totals, topFeatures, callers, version: this.version },
      lookupsWithin: query.within ? lookupsWithin : 0,
    };
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private remember(id: string): void {
    this.seenIds.add(id);
    if (this.seenIds.size > this.maxRememberedIds) {
      const oldest = this.seenIds.values().next().value as string;
      this.seenIds.delete(oldest);
    }
  }

  private callerEntry(caller: string): CallerCount {
    let entry = this.callers.get(caller);
    if (!entry) {
      entry = { caller, routesRecorded: 0, featureLookups: 0 };
      this.callers.set(caller, entry);
    }
    return entry;
  }

  private apply(event: StatsEvent): void {
    const caller = this.callerEntry(event.caller);
    if (event.kind === "routeRecorded") {
      const { summary } = event;
      this.totals.routesRecorded += 1;
      this.totals.pointsRecorded += summary.pointCount;
      this.totals.distanceMeters += summary.distanceMeters;
      this.totals.featuresPassed += summary.featureCount;
      this.totals.elapsedSeconds += summary.elapsedSeconds;
      caller.routesRecorded += 1;
      return;
    }
    this.totals.featureLookups += 1;
    caller.featureLookups += 1;
    const key = pointKey(event.location);
    const entry = this.lookups.get(key);
    if (entry) {
      entry.lookups += 1;
      // Keep the latest known name: the data set is route's, and may change between deploys.
      if (event.name) entry.name = event.name;
    } else {
      this.lookups.set(key, { location: { ...event.location }, name: event.name, lookups: 1 });
    }
  }
}
