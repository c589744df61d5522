// pnpm bench [unary|streams|rest|long-streams|ablation|stats-reads|payload|all ...]: starts what it measures on loopback,
// warms up, runs bounded, prints a table and writes bench-results/<name>.json. Figures vary
// between machines and runs: read the ratios, which compare with a baseline measured in the
// same run on the same machine. Default: unary streams rest long-streams (about 8 minutes);
// `long-streams` alone needs no h2load (RecordRoutes of 250,000 points from grpc-js); `ablation`
// adds our runtime's pieces one at a time to baseline B's proxy (about 2 minutes more);
// `payload` sweeps a unary answer from 100 B to 1 MiB as gRPC and as JSON (about 2 minutes).
//   BENCH_SECONDS (3 for the hops, 5 else)  measured seconds per run
//   BENCH_ROUNDS (3)           runs per hop row, interleaved with the other rows of its group;
//                              a row is their median, its ratio the median of per-round ratios
//   BENCH_CONCURRENCY (1,16,64)  calls in flight (payload: the first value only, 16 when unset)
//   BENCH_PROFILE=<dir>        run gateway and route with node --cpu-prof into <dir>
//   BENCH_RESULTS_DIR (bench-results)  where the JSON results go
// pnpm bench --gateway <https://host[:port]> [unary] [streams] [--token <jwt> | --no-token]
//   [--connections N]: the gateway rows of unary and streams against a gateway running
//   elsewhere (bench/remote.ts); the token from Application Default Credentials unless given
//   (--token or BENCH_TOKEN); writes <results dir>/remote.json.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { benchHops, type HopRow } from "./hops.js";
import { benchPayload, defaultTargets } from "./payload.js";
import { benchRemote, RemoteProblem } from "./remote.js";
import { benchStatsReads } from "./stats-reads.js";
import { type BenchArgs, sections as known, parseBenchArgs, UsageError } from "./support/args.js";
import { requireH2load } from "./support/h2load.js";
import {
  formatComparisonTable,
  formatPayloadTable,
  overtakes,
  payloadComparisons,
} from "./support/payload-report.js";
import { h2loadTlsNote } from "./support/remote-tls.js";
import { BenchToken } from "./support/remote-token.js";
import { formatHopTable, formatRemoteTable, targets } from "./support/report.js";

const concurrencies = (process.env.BENCH_CONCURRENCY ?? "1,16,64").split(",").map(Number);
let args: BenchArgs;
try {
  args = parseBenchArgs(process.argv.slice(2), process.env, concurrencies);
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  console.error(error.message);
  process.exit(2);
}

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const machine = `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
const resultsDir = process.env.BENCH_RESULTS_DIR || "bench-results";
mkdirSync(resultsDir, { recursive: true });
const load = () =>
  loadavg()
    .map((value) => value.toFixed(2))
    .join(" ");

if (args.kind === "remote") {
  requireH2load();
  const token = new BenchToken(args.token, args.gateway);
  const options = {
    gateway: args.gateway,
    sections: args.sections,
    token,
    connections: args.connections,
    seconds,
    warmupSeconds: 1,
    firstWarmupSeconds: 3,
    concurrencies,
  };
  console.log(
    `remote gateway ${args.gateway}: ${args.sections.join(", ")}; ${seconds} s per row after a 1 s warm-up (3 s before a method's first row), at concurrency ${concurrencies.join(", ")}, ${args.connections} connection(s); load from ${machine}; load average before: ${load()}`,
  );
  const started = Date.now();
  let run: Awaited<ReturnType<typeof benchRemote>>;
  try {
    run = await benchRemote({
      ...options,
      onChecked: (tls) => {
        console.log(`token: ${token.describe()}`);
        console.log(
          tls
            ? `TLS: ${tls.subject}, issued by ${tls.issuer}, valid to ${tls.validTo}, verified against ${tls.roots}; ${h2loadTlsNote}`
            : "h2c (http://): no TLS",
        );
        console.log(
          "not measured here: baselines and CPU per process (the processes are not this machine's); errors are what h2load sees (HTTP statuses, broken streams), not gRPC statuses in trailers",
        );
      },
    });
  } catch (error) {
    if (!(error instanceof RemoteProblem)) throw error;
    console.error(`pnpm bench --gateway: ${error.message}`);
    process.exit(1);
  }
  console.log(`\n${formatRemoteTable(run.rows)}\n`);
  for (const problem of run.problems) console.error(`not to be trusted: ${problem}`);
  const file = join(resultsDir, "remote.json");
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        gateway: args.gateway,
        machine,
        date: new Date().toISOString(),
        options: { ...options, token: token.describe() },
        tls: run.tls ?? null,
        h2loadVerifiesCertificates: false,
        wallSeconds: Math.round((Date.now() - started) / 1000),
        loadAverageAfter: loadavg(),
        problems: run.problems,
        rows: run.rows,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`written: ${file}`);
  if (run.rows.some((row) => row.errors > 0)) {
    console.error("some calls failed: the figures above are not to be trusted");
  }
  if (run.rows.some((row) => row.errors > 0) || run.problems.length > 0) process.exit(1);
  process.exit(0);
}

const asked = args.sections;
const chosen = new Set<string>(
  asked.length === 0 ? ["unary", "streams", "rest", "long-streams"] : asked,
);
if (chosen.has("all")) for (const name of known) chosen.add(name);
const hopSections = (["unary", "streams", "rest", "ablation", "long-streams"] as const).filter(
  (name) => chosen.has(name),
);

let failed = false;

if (hopSections.length > 0) {
  // long-streams drives its calls from a grpc-js client: it alone does not need h2load.
  if (hopSections.some((name) => name !== "long-streams")) requireH2load();
  const profileDir = process.env.BENCH_PROFILE;
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  if (!Number.isInteger(rounds) || rounds < 1) {
    console.error(`BENCH_ROUNDS must be a whole number from 1, got ${process.env.BENCH_ROUNDS}`);
    process.exit(2);
  }
  const options = {
    seconds: process.env.BENCH_SECONDS ? seconds : 3,
    warmupSeconds: 1,
    firstWarmupSeconds: 3,
    concurrencies,
    rounds,
    ...(profileDir ? { profileDir } : {}),
  };
  console.log(
    `hops: ${hopSections.join(", ")}; ${rounds} rounds at each concurrency (${concurrencies.join(", ")}), each a ${options.seconds} s run of every row of a group after a 1 s warm-up (3 s before a scenario's first run); a row is the median of its runs; on ${machine}; load average before: ${load()}`,
  );
  const started = Date.now();
  const benchCpu = process.cpuUsage();
  const rows: HopRow[] = await benchHops([...hopSections], options);
  const cpu = process.cpuUsage(benchCpu);
  console.log(`\n${formatHopTable(rows)}\n`);
  const checks = targets(rows);
  for (const check of checks) console.log(`${check.met ? "met    " : "NOT MET"}  ${check.text}`);
  writeFileSync(
    join(resultsDir, "hops.json"),
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
  console.log(`\nwritten: ${join(resultsDir, "hops.json")}`);
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
    join(resultsDir, "stats-reads.json"),
    `${JSON.stringify({ machine, load, date: new Date().toISOString(), rows }, null, 2)}\n`,
  );
  console.log(`\nwritten: ${join(resultsDir, "stats-reads.json")}`);
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
  const file = join(resultsDir, "payload.json");
  writeFileSync(
    file,
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
  console.log(`\nwritten: ${file}`);
  if (rows.some((row) => row.errors > 0)) failed = true;
}

if (failed) {
  console.error("some calls failed: the figures above are not to be trusted");
  process.exit(1);
}
