// pnpm bench [unary|streams|rest|long-streams|ablation|stats-reads|payload|all ...]: starts what it measures on loopback,
// warms up, runs bounded, prints a table and writes bench-results/<name>.json. Figures vary
// between machines and runs: read the ratios, which compare with a baseline measured in the
// same run on the same machine. Default: unary streams rest long-streams (about 7 minutes);
// `long-streams` alone needs no h2load (RecordRoutes of 250,000 points from grpc-js); `ablation`
// adds our runtime's pieces one at a time to baseline B's proxy (about 2 minutes more);
// `payload` sweeps a unary answer from 100 B to 1 MiB as gRPC and as JSON (about 2 minutes).
//   BENCH_SECONDS (5)          measured seconds per row and concurrency
//   BENCH_CONCURRENCY (1,16,64)  calls in flight (payload: the first value only, 16 when unset)
//   BENCH_PROFILE=<dir>        run gateway and route with node --cpu-prof into <dir>
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { benchHops, type HopRow } from "./hops.js";
import { benchPayload, defaultTargets } from "./payload.js";
import { benchStatsReads } from "./stats-reads.js";
import { requireH2load } from "./support/h2load.js";
import {
  formatComparisonTable,
  formatPayloadTable,
  overtakes,
  payloadComparisons,
} from "./support/payload-report.js";
import { formatHopTable, targets } from "./support/report.js";

const known = [
  "unary",
  "streams",
  "rest",
  "ablation",
  "long-streams",
  "stats-reads",
  "payload",
  "all",
] as const;
const asked = process.argv.slice(2);
for (const name of asked) {
  if (!(known as readonly string[]).includes(name)) {
    console.error(`unknown section ${name}: pnpm bench [${known.join("|")}] ...`);
    process.exit(2);
  }
}
const chosen = new Set(asked.length === 0 ? ["unary", "streams", "rest", "long-streams"] : asked);
if (chosen.has("all")) for (const name of known) chosen.add(name);
const hopSections = (["unary", "streams", "rest", "ablation", "long-streams"] as const).filter(
  (name) => chosen.has(name),
);

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
mkdirSync("bench-results", { recursive: true });
let failed = false;

if (hopSections.length > 0) {
  // long-streams drives its calls from a grpc-js client: it alone does not need h2load.
  if (hopSections.some((name) => name !== "long-streams")) requireH2load();
  const concurrencies = (process.env.BENCH_CONCURRENCY ?? "1,16,64").split(",").map(Number);
  const profileDir = process.env.BENCH_PROFILE;
  const options = {
    seconds,
    warmupSeconds: 1,
    firstWarmupSeconds: 3,
    concurrencies,
    ...(profileDir ? { profileDir } : {}),
  };
  console.log(
    `hops: ${hopSections.join(", ")}; ${seconds} s per row after a 1 s warm-up (3 s before a scenario's first row), at concurrency ${concurrencies.join(", ")}, on ${machine}; load average before: ${loadavg()
      .map((value) => value.toFixed(2))
      .join(" ")}`,
  );
  const started = Date.now();
  const benchCpu = process.cpuUsage();
  const rows: HopRow[] = await benchHops([...hopSections], options);
  const cpu = process.cpuUsage(benchCpu);
  console.log(`\n${formatHopTable(rows)}\n`);
  const checks = targets(rows);
  for (const check of checks) console.log(`${check.met ? "met    " : "NOT MET"}  ${check.text}`);
  writeFileSync(
    "bench-results/hops.json",
    `${JSON.stringify(
      {
        machine,
        date: new Date().toISOString(),
        options,
        loadAverageAfter: loadavg(),
        wallSeconds: Math.round((Date.now() - started) / 1000),
        // The bench process itself reads the services' log lines (as a log agent would).
        benchProcessCpuSeconds: Math.round((cpu.user + cpu.system) / 1e4) / 100,
        targets: checks,
        rows,
      },
      null,
      2,
    )}\n`,
  );
  console.log("\nwritten: bench-results/hops.json");
  if (rows.some((row) => row.errors > 0)) failed = true;
}

if (chosen.has("stats-reads")) {
  const concurrency = 16;
  const load = { concurrency, warmupMs: 1_000, durationMs: seconds * 1_000 };
  console.log(
    `\nstats read path: ${seconds} s per row at concurrency ${concurrency}, on ${machine}`,
  );
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
  writeFileSync(
    "bench-results/stats-reads.json",
    `${JSON.stringify({ machine, load, date: new Date().toISOString(), rows }, null, 2)}\n`,
  );
  console.log("\nwritten: bench-results/stats-reads.json");
  if (rows.some((row) => row.errors > 0)) failed = true;
}

if (chosen.has("payload")) {
  requireH2load();
  const listed = (process.env.BENCH_CONCURRENCY ?? "16").split(",").map(Number);
  const options = {
    seconds,
    warmupSeconds: 1,
    firstWarmupSeconds: 3,
    concurrency: listed[0] ?? 16,
    targetBytes: defaultTargets,
  };
  const loadBefore = loadavg();
  console.log(
    `\npayload: a page of route's features as gRPC (bare grpc-js) and as JSON (node:http, node:http2), ${seconds} s per row after a 1 s warm-up (3 s before each server's first row), at concurrency ${options.concurrency}${listed.length > 1 ? " (the first of BENCH_CONCURRENCY)" : ""}, on ${machine}; load average before: ${loadBefore.map((value) => value.toFixed(2)).join(" ")}`,
  );
  console.log(
    "MB/s and CPU ns/B count the page's protobuf bytes for every protocol (the same data; JSON sends JSON B)\n",
  );
  const started = Date.now();
  const rows = await benchPayload(options);
  const comparisons = payloadComparisons(rows);
  const summary = overtakes(comparisons);
  console.log(`\n${formatPayloadTable(rows)}\n\n${formatComparisonTable(comparisons)}\n`);
  console.log(summary.text);
  writeFileSync(
    "bench-results/payload.json",
    `${JSON.stringify(
      {
        machine,
        date: new Date().toISOString(),
        options,
        loadAverageBefore: loadBefore,
        loadAverageAfter: loadavg(),
        wallSeconds: Math.round((Date.now() - started) / 1000),
        overtakes: summary,
        comparisons,
        rows,
      },
      null,
      2,
    )}\n`,
  );
  console.log("\nwritten: bench-results/payload.json");
  if (rows.some((row) => row.errors > 0)) failed = true;
}

if (failed) {
  console.error("some calls failed: the figures above are not to be trusted");
  process.exit(1);
}
