// pnpm bench: starts what it measures on loopback, warms up, runs bounded, prints a table and
// writes bench-results/<name>.json. Figures vary between machines and runs: read the ratios,
// which compare with a baseline measured in the same run on the same machine.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { benchStatsReads } from "./stats-reads.js";

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 16);
const load = { concurrency, warmupMs: 1_000, durationMs: seconds * 1_000 };
const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;

console.log(`stats read path: ${seconds} s per row at concurrency ${concurrency}, on ${machine}`);
console.log("load: a grpc-js client in this process, closed loop\n");
const rows = await benchStatsReads(load);
console.table(
  rows.map((row) => ({
    database: row.database,
    scenario: row.scenario,
    "calls/s": row.callsPerSecond,
    "× baseline": row.ratioToBaseline,
    "p50 µs": row.p50Us,
    "p90 µs": row.p90Us,
    "p99 µs": row.p99Us,
    "CPU µs/call": row.cpuUsPerCall,
    "peak RSS MiB": row.peakRssMiB,
    errors: row.errors,
  })),
);
mkdirSync("bench-results", { recursive: true });
writeFileSync(
  "bench-results/stats-reads.json",
  `${JSON.stringify({ machine, load, date: new Date().toISOString(), rows }, null, 2)}\n`,
);
console.log("\nwritten: bench-results/stats-reads.json");
if (rows.some((row) => row.errors > 0)) {
  console.error("some calls failed: the figures above are not to be trusted");
  process.exit(1);
}
