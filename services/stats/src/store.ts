// The stats store: what stats counts, behind the interface the handlers use. The one
// implementation is PostgreSQL (sql-store.ts).
import type { Bounds, Point } from "@cloudrun-grpc/domain";

/** What every event has: its id, its caller, and the calls it stands for. */
interface EventBase {
  id: string;
  caller: string;
  /** How many calls: 1 when left out; a route is always 1. */
  calls?: number;
  /** The ids of those calls that are counted by their own id; the event's id covers the rest. */
  callIds?: readonly string[];
}

/** An event as stats accepts it, after validation. */
export type StatsEvent =
  | (EventBase & {
      kind: "routeRecorded";
      summary: {
        pointCount: number;
        featureCount: number;
        distanceMeters: number;
        elapsedSeconds: number;
      };
    })
  | (EventBase & { kind: "featureLookedUp"; name: string; location: Point });

/** What a batch counted: events with new calls (all or some), and events with none. */
export interface RecordResult {
  accepted: number;
  duplicates: number;
}

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
  /**
   * Counts each call whose id is new (a call named in callIds by its own id, the event's other
   * calls by the event's id); an id seen before, in this batch or an earlier one, is ignored.
   */
  record(events: StatsEvent[]): Promise<RecordResult>;
  snapshot(query: SnapshotQuery): Promise<{ snapshot: Snapshot; lookupsWithin: number }>;
  /** Calls `listener` after every change; returns the function that unsubscribes. */
  onChange(listener: () => void): () => void;
}
