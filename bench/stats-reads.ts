// Is stats' read path a bottleneck? GetStats (totals, top N, per caller: one SQL statement)
// against 5,000 looked-up locations and 50 callers, beside a baseline measured on
// the same process in the same run: the health check, a unary call that touches no database.
// Also RecordEvents (a 10-event batch: one write transaction). Each on the local stack's
// embedded PostgreSQL server and on the machine's PostgreSQL.
import { startService } from "@cloudrun-grpc/local-stack";
import { createStatsClient, type stats } from "@cloudrun-grpc/proto";
// Databases and the unary helper come from the tests' support, so the bench makes them alike.
import { TestDatabases } from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { unary } from "../test/support/grpc.js";
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

/**
 * On the machine's PostgreSQL, a database of the bench's own, dropped after; without a URL,
 * startService gives stats an embedded server of its own.
 */
async function withDatabase<T>(
  kind: "embedded" | "postgres",
  work: (url?: string) => Promise<T>,
): Promise<T> {
  if (kind === "embedded") return work(undefined);
  const databases = new TestDatabases("stats_bench");
  try {
    return await work((await databases.create()).url());
  } finally {
    await databases.dropAll();
  }
}

export async function benchStatsReads(load: LoadOptions): Promise<Row[]> {
  const rows: Row[] = [];
  for (const database of ["embedded", "postgres"] as const) {
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
