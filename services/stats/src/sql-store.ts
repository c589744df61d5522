// The stats store in PostgreSQL. Exactly once: a batch inserts its event ids into a ledger and
// adds what the new ones count to the aggregates in the same transaction, with single-statement
// upserts (no read-modify-write in JS), so retries and concurrent instances add up exactly.
// Changes are announced with NOTIFY; every instance LISTENs, so a watch on one instance sees a
// change made through another. While the database is unreachable the store answers UNAVAILABLE,
// keeps the service NOT_SERVING and reconnects with backoff.
import { type Logger, type Readiness, StatusError } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { sql } from "drizzle-orm";
import { type EventColumns, type LedgerKeys, planBatch } from "./aggregate.js";
import { type Database, type DatabaseOptions, openDatabase, type StatsDb } from "./db/database.js";
import { callerCounts, countedEvents, featureLookups, totals } from "./db/schema.js";
import { type DatabaseTarget, describeTarget } from "./db/target.js";
import type { RecordResult, Snapshot, SnapshotQuery, StatsEvent, StatsStore } from "./store.js";

export const changeChannel = "stats_changed";

export interface SqlStatsStoreOptions {
  target: DatabaseTarget;
  database: Omit<DatabaseOptions, "onConnectionError">;
  logger: Logger;
  /** Set while the database is reachable and migrated. */
  readiness: Readiness;
  /** How long counted event ids are remembered. */
  eventIdRetentionMs: number;
}

const maxReconnectDelayMs = 10_000;
const pruneEveryMs = 60 * 60 * 1000;

export class SqlStatsStore implements StatsStore {
  private database: Database | undefined;
  private lastError = "not connected yet";
  /** What the last connection attempt failed with, while none has succeeded since. */
  private connectFailure: unknown;
  private stopped = false;
  private connecting: Promise<void> | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  /** Ends the wait between two connection attempts (at close). */
  private wakeUp: (() => void) | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly where: string;

  constructor(private readonly options: SqlStatsStoreOptions) {
    this.where = describeTarget(options.target);
  }

  /** Connects (and keeps reconnecting) in the background; readiness says when it can serve. */
  start(): void {
    this.connecting ??= this.connect();
    this.pruneTimer = setInterval(() => void this.pruneCountedIds(), pruneEveryMs);
    this.pruneTimer.unref();
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearInterval(this.pruneTimer);
    // A stop during an outage must not sit out the reconnect backoff (Cloud Run allows 10 s).
    this.wakeUp?.();
    await this.connecting;
    // The final failure: stopped while still trying to connect; the error in full this time.
    if (this.connectFailure !== undefined) {
      this.options.logger.error(
        { database: this.where, err: this.connectFailure },
        `stats stopped while its database was unreachable (${this.lastError})`,
      );
      this.connectFailure = undefined;
    }
    const database = this.database;
    this.database = undefined;
    await database?.close();
  }

  async record(events: StatsEvent[]): Promise<RecordResult> {
    const { keys, columns } = planBatch(events);
    if (keys.ids.length === 0) return { accepted: 0, duplicates: events.length };
    const result = await this.run((db) => db.execute(recordStatement(keys, columns)));
    // One row per event with new calls.
    const accepted = (result as unknown as { rows: unknown[] }).rows.length;
    return { accepted, duplicates: events.length - accepted };
  }

  async snapshot(query: SnapshotQuery): Promise<{ snapshot: Snapshot; lookupsWithin: number }> {
    const area = query.within;
    const within = area
      ? sql`${featureLookups.latitude} between ${area.minLatitude} and ${area.maxLatitude}
          and ${featureLookups.longitude} between ${area.minLongitude} and ${area.maxLongitude}`
      : sql`true`;
    const named = query.namedOnly ? sql`${featureLookups.name} <> ''` : sql`true`;
    // One statement, so one round trip and one consistent view (a statement sees one snapshot
    // of the database): the totals, the lists and the version belong together. The lists come
    // back as JSON arrays; counters stay far below 2^53, so JSON numbers are exact.
    const result = await this.run((db) =>
      db.execute(sql`
        select
          (select row_to_json(t) from ${totals} t where t.id = 1) as totals,
          (select coalesce(json_agg(top), '[]'::json) from (
             select ${featureLookups.latitude} as latitude, ${featureLookups.longitude} as longitude,
                    ${featureLookups.name} as name, ${featureLookups.lookups} as lookups
             from ${featureLookups}
             where ${within} and ${named}
             order by ${featureLookups.lookups} desc, ${featureLookups.latitude}, ${featureLookups.longitude}
             limit ${query.topN}
           ) top) as top,
          (select coalesce(sum(${featureLookups.lookups}), 0)::text from ${featureLookups}
             where ${within}) as lookups_within,
          (select coalesce(json_agg(c order by c.caller collate "C"), '[]'::json) from (
             select ${callerCounts.caller} as caller, ${callerCounts.routesRecorded} as routes_recorded,
                    ${callerCounts.featureLookups} as feature_lookups
             from ${callerCounts}
           ) c) as callers
      `),
    );
    const [row] = (result as unknown as { rows: SnapshotRow[] }).rows;
    const counts = row?.totals ? parseJson<TotalsRow>(row.totals) : undefined;
    return {
      snapshot: {
        routesRecorded: Number(counts?.routes_recorded ?? 0),
        pointsRecorded: Number(counts?.points_recorded ?? 0),
        distanceMeters: Number(counts?.distance_meters ?? 0),
        featuresPassed: Number(counts?.features_passed ?? 0),
        elapsedSeconds: Number(counts?.elapsed_seconds ?? 0),
        featureLookups: Number(counts?.feature_lookups ?? 0),
        version: Number(counts?.version ?? 0),
        topFeatures: parseJson<TopRow[]>(row?.top).map(
          ({ latitude, longitude, name, lookups }) => ({
            location: { latitude, longitude },
            name,
            lookups: Number(lookups),
          }),
        ),
        callers: parseJson<CallerRow[]>(row?.callers).map((entry) => ({
          caller: entry.caller,
          routesRecorded: Number(entry.routes_recorded),
          featureLookups: Number(entry.feature_lookups),
        })),
      },
      lookupsWithin: area ? Number(row?.lookups_within ?? 0) : 0,
    };
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  /** Runs `work` on the database, turning its failures into gRPC statuses. */
  private async run<T>(work: (db: StatsDb) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      const database = this.database;
      if (!database) {
        throw new StatusError(
          grpc.status.UNAVAILABLE,
          `stats database unavailable (${this.lastError}): try again`,
        );
      }
      try {
        return await work(database.db);
      } catch (error) {
        const failure = classify(error);
        // Concurrent batches can deadlock on shared rows; PostgreSQL aborts one: run it again.
        if (failure === "conflict" && attempt < 5) continue;
        if (failure === "connection") {
          this.lost(database, error);
          throw new StatusError(
            grpc.status.UNAVAILABLE,
            `stats database unavailable (${this.lastError}): try again`,
          );
        }
        if (failure === "timeout") {
          throw new StatusError(
            grpc.status.UNAVAILABLE,
            "stats database did not answer in time: try again",
          );
        }
        throw error;
      }
    }
  }

  private async connect(): Promise<void> {
    let delayMs = 250;
    let previous: string | undefined;
    while (!this.stopped) {
      let opened: Database | undefined;
      try {
        opened = await openDatabase(this.options.target, {
          ...this.options.database,
          onConnectionError: (error) => {
            if (opened && this.database === opened) this.lost(opened, error);
          },
        });
        // Stopped meanwhile (a migration may wait for another instance's): no more work.
        if (!this.stopped) await opened.migrate();
        if (!this.stopped) await opened.listen(changeChannel, () => this.changed());
        if (this.stopped) {
          await opened.close();
          return;
        }
        this.database = opened;
        this.connectFailure = undefined;
        this.options.logger.info({ database: this.where }, "stats database ready");
        this.options.readiness.set(true);
        // Changes may have been made through other instances while this one was away.
        this.changed();
        return;
      } catch (error) {
        await opened?.close().catch(() => {});
        this.lastError = errorText(error);
        this.connectFailure = error;
        // A wait that is expected (a database not up yet or busy) is one line with the reason
        // and the next try. Anything else may be a bug: its stack comes with it the first
        // time, then one line while it repeats.
        const expected = classify(error) !== "other";
        const withStack = !expected && this.lastError !== previous;
        previous = this.lastError;
        this.options.logger.warn(
          { database: this.where, ...(withStack ? { err: error } : {}), retryInMs: delayMs },
          `stats database unreachable (${this.lastError}): retrying in ${delayMs} ms`,
        );
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delayMs);
          this.wakeUp = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wakeUp = undefined;
        delayMs = Math.min(delayMs * 2, maxReconnectDelayMs);
      }
    }
  }

  /** The connection is gone: stop serving, close what is left, reconnect. */
  private lost(database: Database, error: unknown): void {
    if (this.database !== database) return;
    this.database = undefined;
    this.lastError = errorText(error);
    this.options.readiness.set(false);
    this.options.logger.error(
      { database: this.where, err: error },
      `stats database connection lost (${this.lastError}): reconnecting`,
    );
    void database.close().catch(() => {});
    this.connecting = this.connect();
  }

  /**
   * Forgets counted ids older than the retention (a report is retried within minutes, not
   * days): the ledger stays bounded by the retention. Runs hourly, in batches small enough for
   * the query timeout, on one instance at a time (the others skip a batch another holds the
   * lock for); failures are only logged.
   */
  async pruneCountedIds(): Promise<void> {
    const before = new Date(Date.now() - this.options.eventIdRetentionMs);
    try {
      for (let batches = 0; batches < maxPruneBatches && !this.stopped; batches += 1) {
        const deleted = await this.run((db) =>
          db.transaction(async (tx) => {
            const locked = await tx.execute(
              sql`select pg_try_advisory_xact_lock(${pruneLockKey}) as locked`,
            );
            if (!(locked as unknown as { rows: { locked: boolean }[] }).rows[0]?.locked) return 0;
            const rows = await tx
              .delete(countedEvents)
              .where(
                sql`${countedEvents.id} in (select ${countedEvents.id} from ${countedEvents}
                  where ${countedEvents.countedAt} < ${before} limit ${pruneBatchSize})`,
              )
              .returning({ id: countedEvents.id });
            return rows.length;
          }),
        );
        if (deleted < pruneBatchSize) return;
      }
    } catch (error) {
      this.options.logger.warn({ err: error }, "pruning counted event ids failed");
    }
  }
}

/**
 * A batch in one statement (one round trip, one implicit transaction): the ledger keys are
 * inserted, and each event adds the calls whose keys were new to the aggregates, with one
 * upsert per caller, per location and for the totals (sums in SQL, never read-modify-write).
 * Rows are taken in a fixed order (ids, callers in "C" order, locations), the same for every
 * batch, since the statement is; a deadlock PostgreSQL breaks anyway is retried (run()).
 * Data-modifying WITH clauses run once and to completion whether or not the final SELECT reads
 * them, and see one another only through RETURNING, which is what `fresh` hands on
 * (https://www.postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING).
 * NOTIFY is delivered at commit, only when something was counted. Answers one row per event
 * with new calls.
 */
function recordStatement(keys: LedgerKeys, columns: EventColumns) {
  const array = (values: unknown[], type: string) => sql`${sql.param(values)}::${sql.raw(type)}[]`;
  return sql`
    with keys as (
      select * from unnest(${array(keys.ids, "text")}, ${array(keys.events, "int4")},
                           ${array(keys.covers, "int4")}) as k(id, event, covers)
    ),
    fresh as (
      insert into ${countedEvents} (id) select id from keys order by id
      on conflict do nothing
      returning id
    ),
    counted as (
      select keys.event, sum(keys.covers)::int4 as calls
      from keys join fresh on fresh.id = keys.id
      group by keys.event
    ),
    events as (
      select e.*, counted.calls
      from unnest(${array(columns.caller, "text")}, ${array(columns.route, "int4")},
                  ${array(columns.latitude, "int4")}, ${array(columns.longitude, "int4")},
                  ${array(columns.name, "text")}, ${array(columns.pointCount, "int8")},
                  ${array(columns.featureCount, "int8")}, ${array(columns.distanceMeters, "int8")},
                  ${array(columns.elapsedSeconds, "int8")})
             with ordinality as e(caller, route, latitude, longitude, name, point_count,
                                  feature_count, distance_meters, elapsed_seconds, position)
      join counted on counted.event = e.position - 1
    ),
    add_callers as (
      insert into ${callerCounts} (caller, routes_recorded, feature_lookups)
      select caller, sum(calls * route), sum(calls * (1 - route))
      from events group by caller order by caller collate "C"
      on conflict (caller) do update set
        routes_recorded = ${callerCounts}.routes_recorded + excluded.routes_recorded,
        feature_lookups = ${callerCounts}.feature_lookups + excluded.feature_lookups
    ),
    add_lookups as (
      insert into ${featureLookups} (latitude, longitude, name, lookups)
      select latitude, longitude,
             -- The batch's last non-empty name; "" keeps the stored one.
             coalesce((array_agg(name order by position desc) filter (where name <> ''))[1], ''),
             sum(calls)
      from events where route = 0
      group by latitude, longitude order by latitude, longitude
      on conflict (latitude, longitude) do update set
        lookups = ${featureLookups}.lookups + excluded.lookups,
        -- The latest name route gave (its data set may change between deploys).
        name = case when excluded.name <> '' then excluded.name else ${featureLookups}.name end
    ),
    add_totals as (
      insert into ${totals} (id, routes_recorded, points_recorded, distance_meters,
                             features_passed, elapsed_seconds, feature_lookups, version)
      select 1, sum(calls * route), sum(point_count * calls * route),
             sum(distance_meters * calls * route), sum(feature_count * calls * route),
             sum(elapsed_seconds * calls * route), sum(calls * (1 - route)), 1
      from events having count(*) > 0
      on conflict (id) do update set
        routes_recorded = ${totals}.routes_recorded + excluded.routes_recorded,
        points_recorded = ${totals}.points_recorded + excluded.points_recorded,
        distance_meters = ${totals}.distance_meters + excluded.distance_meters,
        features_passed = ${totals}.features_passed + excluded.features_passed,
        elapsed_seconds = ${totals}.elapsed_seconds + excluded.elapsed_seconds,
        feature_lookups = ${totals}.feature_lookups + excluded.feature_lookups,
        version = ${totals}.version + 1
    ),
    notified as (select pg_notify(${changeChannel}, '') from events limit 1)
    select event, (select count(*)::int4 from notified) as notified from counted
  `;
}

const pruneLockKey = 7_423_012;
const pruneBatchSize = 5_000;
// At most 5 million ids an hour: more than any reporter sends, so the ledger cannot grow.
const maxPruneBatches = 1_000;

interface TotalsRow {
  routes_recorded: number;
  points_recorded: number;
  distance_meters: number;
  features_passed: number;
  elapsed_seconds: number;
  feature_lookups: number;
  version: number;
}
interface TopRow {
  latitude: number;
  longitude: number;
  name: string;
  lookups: number;
}
interface CallerRow {
  caller: string;
  routes_recorded: number;
  feature_lookups: number;
}
interface SnapshotRow {
  totals: TotalsRow | string | null;
  top: TopRow[] | string;
  lookups_within: string;
  callers: CallerRow[] | string;
}

/** node-postgres parses json columns; text is read too, whatever hands it over. */
function parseJson<T>(value: T | string | null | undefined): T {
  return (typeof value === "string" ? JSON.parse(value) : value) as T;
}

/** The driver error behind drizzle's wrapping, and its cause chain. */
function* causes(error: unknown): Generator<{ code?: unknown; message?: unknown }> {
  let current: unknown = error;
  for (let depth = 0; current && typeof current === "object" && depth < 5; depth += 1) {
    yield current as { code?: unknown; message?: unknown };
    current = (current as { cause?: unknown }).cause;
  }
}

const connectionCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
]);

function classify(error: unknown): "connection" | "timeout" | "conflict" | "other" {
  for (const cause of causes(error)) {
    const code = typeof cause.code === "string" ? cause.code : "";
    const message = typeof cause.message === "string" ? cause.message : "";
    if (code === "40P01" || code === "40001") return "conflict";
    // The database is there but busy: a query too slow, no connection free in this pool, or
    // none left on the server. The connections we have stay.
    if (
      code === "57014" ||
      code === "53300" ||
      /Query read timeout|timeout exceeded when trying to connect/i.test(message)
    )
      return "timeout";
    if (connectionCodes.has(code) || code.startsWith("08")) return "connection";
    if (/Connection terminated|not queryable/i.test(message)) return "connection";
  }
  return "other";
}

function errorText(error: unknown): string {
  for (const cause of [...causes(error)].reverse()) {
    if (typeof cause.message === "string" && cause.message !== "") return cause.message;
    if (typeof cause.code === "string") return cause.code;
  }
  return String(error);
}
