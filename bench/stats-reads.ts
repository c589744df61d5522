// Is stats' read path a bottleneck? GetStats (totals, top N, per caller: three SQL reads in one
// transaction) against 5,000 looked-up locations and 50 callers, beside a baseline measured on
// the same process in the same run: the health check, a unary call that touches no database.
// Also RecordEvents (a 10-event batch: one write transaction). Each on embedded PGlite and on
// the machine's PostgreSQL.
import { randomBytes } from "node:crypto";
import { startService } from "@cloudrun-grpc/local-stack";
import { createStatsClient, type stats } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import pg from "pg";
import {
  closedLoop,
  type LoadOptions,
  type LoadResult,
  processCpuUs,
  processPeakRssMiB,
} from "./support/load.js";

export interface Row extends LoadResult {
  scenario: string;
  database: string;
  concurrency: number;
  cpuUsPerCall: number;
  peakRssMiB: number;
  /** calls/s relative to the health-check baseline on the same process. */
  ratioToBaseline: number;
}

const unary = <T>(start: (done: grpc.requestCallback<T>) => void) =>
  new Promise<T>((resolve, reject) =>
    start((error, value) => (error ? reject(error) : resolve(value as T))),
  );

async function withDatabase<T>(
  kind: "pglite" | "postgres",
  work: (url?: string) => Promise<T>,
): Promise<T> {
  if (kind === "pglite") return work(undefined);
  const admin = process.env.BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
  const name = `bench_stats_${randomBytes(4).toString("hex")}`;
  const run = async (sql: string) => {
    const client = new pg.Client({ connectionString: admin });
    try {
      await client.connect();
    } catch (error) {
      throw new Error(
        `the postgres rows need PostgreSQL at ${admin} (BENCH_POSTGRES_URL): ${(error as Error).message}`,
      );
    }
    await client.query(sql).finally(() => client.end());
  };
  await run(`create database "${name}"`);
  try {
    const url = new URL(admin);
    url.pathname = `/${name}`;
    return await work(url.toString());
  } finally {
    await run(`drop database if exists "${name}" with (force)`);
  }
}

export async function benchStatsReads(load: LoadOptions): Promise<Row[]> {
  const rows: Row[] = [];
  for (const database of ["pglite", "postgres"] as const) {
    await withDatabase(database, async (url) => {
      const service = await startService({
        name: "stats",
        env: { LOG_LEVEL: "info", ...(url ? { STATS_DATABASE_URL: url } : {}) },
      });
      const target = service.url.replace("http://", "");
      const client = createStatsClient(target, grpc.credentials.createInsecure());
      const Health = grpc.makeGenericClientConstructor(
        healthService as unknown as grpc.ServiceDefinition,
        "Health",
      );
      const health = new Health(
        target,
        grpc.credentials.createInsecure(),
      ) as unknown as grpc.Client & {
        Check: (request: { service: string }, done: grpc.requestCallback<unknown>) => void;
      };
      try {
        // 5,000 locations, 50 callers, 20,000 look-ups.
        let id = 0;
        for (let batch = 0; batch < 20; batch += 1) {
          const events: stats.Event[] = Array.from({ length: 1000 }, (_, index) => ({
            id: `seed-${id++}`,
            caller: `caller-${index % 50}@bench`,
            featureLookedUp: {
              feature: {
                name: index % 3 === 0 ? `Place ${index % 5000}` : "",
                location: {
                  latitude: 400_000_000 + ((batch * 1000 + index) % 5000) * 100,
                  longitude: -740_000_000,
                },
              },
            },
          }));
          await unary((done) => client.RecordEvents({ events }, done));
        }
        const scenarios: [string, () => Promise<unknown>][] = [
          ["health check (baseline)", () => unary((done) => health.Check({ service: "" }, done))],
          ["GetStats top 10", () => unary((done) => client.GetStats({ topN: 10 }, done))],
          [
            "GetStats top 10 within an area",
            () =>
              unary((done) =>
                client.GetStats(
                  {
                    topN: 10,
                    within: {
                      lo: { latitude: 400_000_000, longitude: -741_000_000 },
                      hi: { latitude: 400_200_000, longitude: -739_000_000 },
                    },
                  },
                  done,
                ),
              ),
          ],
          [
            "RecordEvents, 10 events",
            () =>
              unary((done) =>
                client.RecordEvents(
                  {
                    events: Array.from({ length: 10 }, (_, index) => ({
                      id: `load-${id++}`,
                      caller: `caller-${index}@bench`,
                      featureLookedUp: {
                        feature: {
                          name: "",
                          location: {
                            latitude: 400_000_000 + index * 100,
                            longitude: -740_000_000,
                          },
                        },
                      },
                    })),
                  },
                  done,
                ),
              ),
          ],
        ];
        let baseline = 0;
        for (const [scenario, call] of scenarios) {
          const pid = service.child.pid as number;
          const cpuBefore = await processCpuUs(pid);
          const result = await closedLoop(call, load);
          const cpuUs = (await processCpuUs(pid)) - cpuBefore;
          if (baseline === 0) baseline = result.callsPerSecond;
          rows.push({
            scenario,
            database,
            concurrency: load.concurrency,
            ...result,
            // Includes the warm-up's calls in the CPU: an upper bound per measured call.
            cpuUsPerCall: Math.round(cpuUs / Math.max(1, result.calls)),
            peakRssMiB: await processPeakRssMiB(pid),
            ratioToBaseline: Number((result.callsPerSecond / Math.max(1, baseline)).toFixed(2)),
          });
        }
      } finally {
        client.close();
        health.close();
        await service.stop();
      }
    });
  }
  return rows;
}
