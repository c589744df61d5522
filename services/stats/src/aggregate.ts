// What a batch of events asks of the database, laid out for its one statement (sql-store.ts):
// the ledger keys that count calls, and the events as columns. The database then adds each
// event's new calls to the aggregates with one upsert per caller, per location and for the
// totals, whatever the number of calls.
//
// Every call is counted by one ledger key: a call an event names in callIds by its own id, the
// event's other calls (calls - callIds) by the event's id. A key met twice in a batch (an event
// sent twice, a call named by two events) counts where it is met first.
import type { StatsEvent } from "./store.js";

export interface LedgerKeys {
  ids: string[];
  /** For each key: the index of its event in the batch. */
  events: number[];
  /** For each key: how many of that event's calls it counts. */
  covers: number[];
}

/** The events as columns, index for index with the batch; a route's look-up columns are 0/"". */
export interface EventColumns {
  caller: string[];
  /** 1 for routeRecorded, 0 for featureLookedUp. */
  route: number[];
  latitude: number[];
  longitude: number[];
  name: string[];
  pointCount: number[];
  featureCount: number[];
  distanceMeters: number[];
  elapsedSeconds: number[];
}

export interface BatchPlan {
  keys: LedgerKeys;
  columns: EventColumns;
}

export function planBatch(events: readonly StatsEvent[]): BatchPlan {
  const keys: LedgerKeys = { ids: [], events: [], covers: [] };
  const columns: EventColumns = {
    caller: [],
    route: [],
    latitude: [],
    longitude: [],
    name: [],
    pointCount: [],
    featureCount: [],
    distanceMeters: [],
    elapsedSeconds: [],
  };
  const seen = new Set<string>();
  const addKey = (id: string, event: number, covers: number) => {
    if (covers <= 0 || seen.has(id)) return;
    seen.add(id);
    keys.ids.push(id);
    keys.events.push(event);
    keys.covers.push(covers);
  };
  events.forEach((event, index) => {
    const callIds = event.callIds ?? [];
    for (const callId of callIds) addKey(callId, index, 1);
    addKey(event.id, index, (event.calls ?? 1) - callIds.length);
    columns.caller.push(event.caller);
    if (event.kind === "routeRecorded") {
      columns.route.push(1);
      columns.latitude.push(0);
      columns.longitude.push(0);
      columns.name.push("");
      columns.pointCount.push(event.summary.pointCount);
      columns.featureCount.push(event.summary.featureCount);
      columns.distanceMeters.push(event.summary.distanceMeters);
      columns.elapsedSeconds.push(event.summary.elapsedSeconds);
    } else {
      columns.route.push(0);
      columns.latitude.push(event.location.latitude);
      columns.longitude.push(event.location.longitude);
      columns.name.push(event.name);
      columns.pointCount.push(0);
      columns.featureCount.push(0);
      columns.distanceMeters.push(0);
      columns.elapsedSeconds.push(0);
    }
  });
  return { keys, columns };
}
