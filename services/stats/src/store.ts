// The stats store: what stats counts, behind the interface the handlers use. The one
// implementation is PostgreSQL (sql-store.ts).
import type { Bounds, Point } from "@cloudrun-grpc/domain";

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
