CREATE TABLE "caller_counts" (
	"caller" text PRIMARY KEY NOT NULL,
	"routes_recorded" bigint DEFAULT 0 NOT NULL,
	"feature_lookups" bigint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "counted_events" (
	"id" text PRIMARY KEY NOT NULL,
	"counted_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "feature_lookups" (
	"latitude" integer NOT NULL,
	"longitude" integer NOT NULL,
	"name" text DEFAULT '' NOT NULL,
	"lookups" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "feature_lookups_latitude_longitude_pk" PRIMARY KEY("latitude","longitude")
);
--> statement-breakpoint
CREATE TABLE "stats_totals" (
	"id" smallint PRIMARY KEY NOT NULL,
	"routes_recorded" bigint DEFAULT 0 NOT NULL,
	"points_recorded" bigint DEFAULT 0 NOT NULL,
	"distance_meters" bigint DEFAULT 0 NOT NULL,
	"features_passed" bigint DEFAULT 0 NOT NULL,
	"elapsed_seconds" bigint DEFAULT 0 NOT NULL,
	"feature_lookups" bigint DEFAULT 0 NOT NULL,
	"version" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "stats_totals_single_row" CHECK ("stats_totals"."id" = 1)
);
--> statement-breakpoint
CREATE INDEX "counted_events_counted_at" ON "counted_events" USING btree ("counted_at");--> statement-breakpoint
CREATE INDEX "feature_lookups_top" ON "feature_lookups" USING btree ("lookups" DESC NULLS LAST,"latitude","longitude");