// The stats tables. Migrations in drizzle/ are generated from this file with drizzle-kit
// (`pnpm --filter @cloudrun-grpc/stats db:generate`) and applied by the service at start.
// Counters are bigint read as JS numbers: totals stay far below 2^53 (a sum of int64 distances
// in metres would need 9e15 m of routes to lose precision).
import { sql } from "drizzle-orm";
import {
  bigint,
  check,
  index,
  integer,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
} from "drizzle-orm/pg-core";

const counter = (name: string) => bigint(name, { mode: "number" }).notNull().default(0);

/** One row (id = 1): the totals, and a version that grows with every change. */
export const totals = pgTable(
  "stats_totals",
  {
    id: smallint("id").primaryKey(),
    routesRecorded: counter("routes_recorded"),
    pointsRecorded: counter("points_recorded"),
    distanceMeters: counter("distance_meters"),
    featuresPassed: counter("features_passed"),
    elapsedSeconds: counter("elapsed_seconds"),
    featureLookups: counter("feature_lookups"),
    version: counter("version"),
  },
  (table) => [check("stats_totals_single_row", sql`${table.id} = 1`)],
);

/** Look-ups per location (E7 coordinates), with the latest name route gave it. */
export const featureLookups = pgTable(
  "feature_lookups",
  {
    latitude: integer("latitude").notNull(),
    longitude: integer("longitude").notNull(),
    name: text("name").notNull().default(""),
    lookups: counter("lookups"),
  },
  (table) => [
    primaryKey({ columns: [table.latitude, table.longitude] }),
    // Top N: most looked-up first, ties by location (the order GetStats promises).
    index("feature_lookups_top").on(table.lookups.desc(), table.latitude, table.longitude),
  ],
);

/** Counts per verified caller. */
export const callerCounts = pgTable("caller_counts", {
  caller: text("caller").primaryKey(),
  routesRecorded: counter("routes_recorded"),
  featureLookups: counter("feature_lookups"),
});

/** Every event id ever counted: the ledger that makes a retried report count once. */
export const countedEvents = pgTable(
  "counted_events",
  {
    id: text("id").primaryKey(),
    countedAt: timestamp("counted_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [index("counted_events_counted_at").on(table.countedAt)],
);
