// stats' local database, measured: node --import tsx bench/stats-database.ts [seconds]
// (not part of pnpm test). For each database the local stack could give stats:
//   start      from stats' `listening` line to its health check answering SERVING, and how a
//              GetStats made right after `listening` ends (its code, after how long); for the
//              embedded server also its own start (initdb included), before stats starts
//   counting   RecordEvents batches of 10 new events at concurrency 8 for the given seconds:
//              events/s, CPU µs per counted event of stats and of the database's processes
//   memory     stats' peak RSS (VmHWM), the database's peak PSS (its processes' resident memory
//              with shared pages split among them, sampled every 100 ms) and their sum
//   instances  three stats on one database, each counting 1,000 events: whether they all
//              start and the totals add up
// PSS, not RSS, for PostgreSQL: its processes share shared_buffers, and summing their RSS
// counts those pages once per process.
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type EmbeddedPostgres,
  freePort,
  serviceEntry,
  startEmbeddedPostgres,
} from "@cloudrun-grpc/local-stack";
import { createStatsClient, type StatsServiceClient, type stats } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { closedLoop, processCpuUs, processPeakRssMiB } from "./support/load.js";

const seconds = Number(process.argv[2] ?? 10);

interface Stats {
  pid: number;
  client: StatsServiceClient;
  listeningToServingMs: number;
  /** How a GetStats made at `listening` ended. */
  earlyCall: string;
  stop(): Promise<void>;
}

const Health = grpc.makeGenericClientConstructor(
  healthService as unknown as grpc.ServiceDefinition,
  "Health",
);

/** Starts stats on `databaseUrl` and times it from `listening` to SERVING. */
async function startStats(databaseUrl: string): Promise<Stats> {
  const port = await freePort();
  const child = spawn(process.execPath, [serviceEntry("stats")], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      AUTH_MODE: "off",
      LOG_LEVEL: "info",
      STATS_DATABASE_URL: databaseUrl,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<void>((done) => child.once("close", () => done()));
  const listening = new Promise<number>((done) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line.includes('"message":"listening"')) done(performance.now());
    });
  });
  const listenedAt = await listening;
  const target = `127.0.0.1:${port}`;
  const client = createStatsClient(target, grpc.credentials.createInsecure());
  const early = new Promise<string>((done) => {
    const started = performance.now();
    client.GetStats({ topN: 1 }, { deadline: Date.now() + 30_000 }, (error) => {
      const ms = Math.round(performance.now() - started);
      done(`${error ? grpc.status[error.code] : "OK"} after ${ms} ms`);
    });
  });
  const health = new Health(target, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    Check: (
      request: { service: string },
      options: grpc.CallOptions,
      done: grpc.requestCallback<{ status: string }>,
    ) => void;
  };
  for (;;) {
    const status = await new Promise<string>((done) =>
      health.Check(
        { service: "stats.v1.StatsService" },
        { deadline: Date.now() + 30_000 },
        (error, answer) => done(error ? error.message : String(answer?.status)),
      ),
    );
    if (status === "SERVING") break;
    await sleep(10);
  }
  const listeningToServingMs = Math.round(performance.now() - listenedAt);
  health.close();
  return {
    pid: child.pid as number,
    client,
    listeningToServingMs,
    earlyCall: await early,
    async stop() {
      client.close();
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/** The postmaster and its children (the backends, the background processes). */
function processTree(root: number): number[] {
  const pids = [root];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (Number(stat.split(") ")[1]?.split(" ")[1]) === root) pids.push(Number(entry));
    } catch {}
  }
  return pids;
}

/** CPU of the tree so far, ended children included (cutime, cstime of the root), in µs. */
function treeCpuUs(root: number): number {
  let ticks = 0;
  for (const pid of processTree(root)) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
      ticks += Number(fields[11]) + Number(fields[12]);
      if (pid === root) ticks += Number(fields[13]) + Number(fields[14]);
    } catch {}
  }
  return ticks * 10_000;
}

function treePssMiB(root: number): number {
  let kib = 0;
  for (const pid of processTree(root)) {
    try {
      kib += Number(/Pss:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1]);
    } catch {}
  }
  return Math.round(kib / 1024);
}

let nextId = 0;
function batch(size: number): stats.Event[] {
  return Array.from({ length: size }, (_, index) => ({
    id: `bench-${process.pid}-${nextId++}`,
    caller: `caller-${index % 5}@bench`,
    featureLookedUp: {
      feature: {
        name: "",
        location: { latitude: 400_000_000 + (nextId % 500) * 100, longitude: -740_000_000 },
      },
    },
  }));
}

function record(client: StatsServiceClient, events: stats.Event[]): Promise<void> {
  return new Promise((done, fail) =>
    client.RecordEvents({ events }, (error) => (error ? fail(error) : done())),
  );
}

function totalLookups(client: StatsServiceClient): Promise<number> {
  return new Promise((done, fail) =>
    client.GetStats({ topN: 0 }, (error, answer) =>
      error ? fail(error) : done(Number(answer?.snapshot?.featureLookups ?? 0)),
    ),
  );
}

interface Database {
  name: string;
  /** The database's own processes, when not inside stats. */
  serverPid?: number;
  startMs?: number;
  url: string;
  shared: boolean;
  stop(): Promise<void>;
}

async function pgliteDatabase(): Promise<Database> {
  const dir = mkdtempSync(join(tmpdir(), "stats-bench-pglite-"));
  return {
    name: "PGlite (in stats)",
    url: `pglite://${dir}`,
    shared: false,
    async stop() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function embeddedDatabase(): Promise<Database> {
  const started = performance.now();
  const server: EmbeddedPostgres = await startEmbeddedPostgres();
  return {
    name: "embedded PostgreSQL 17",
    serverPid: server.pid,
    startMs: Math.round(performance.now() - started),
    url: server.url,
    shared: true,
    stop: () => server.stop(),
  };
}

const kinds = (process.env.BENCH_DATABASES ?? "embedded,pglite").split(",");
const results: Record<string, unknown>[] = [];
for (const kind of kinds) {
  const database = kind === "pglite" ? await pgliteDatabase() : await embeddedDatabase();
  try {
    const service = await startStats(database.url);
    let peakPss = 0;
    const sampler = setInterval(() => {
      if (database.serverPid) peakPss = Math.max(peakPss, treePssMiB(database.serverPid));
    }, 100);
    const cpu = () => ({
      stats: processCpuUs(service.pid),
      database: database.serverPid ? treeCpuUs(database.serverPid) : 0,
    });
    const before = cpu();
    const load = await closedLoop(() => record(service.client, batch(10)), {
      concurrency: 8,
      warmupMs: 0,
      durationMs: seconds * 1000,
    });
    const after = cpu();
    clearInterval(sampler);
    const events = load.calls * 10;
    const statsPeak = await processPeakRssMiB(service.pid);
    const row: Record<string, unknown> = {
      database: database.name,
      "server start ms": database.startMs ?? "-",
      "stats listening→SERVING ms": service.listeningToServingMs,
      "GetStats at listening": service.earlyCall,
      "events/s": Math.round(events / seconds),
      "stats CPU µs/event": Math.round(((await after.stats) - (await before.stats)) / events),
      "database CPU µs/event": database.serverPid
        ? Math.round((after.database - before.database) / events)
        : "(in stats)",
      "stats peak RSS MiB": statsPeak,
      "database peak PSS MiB": database.serverPid ? peakPss : "(in stats)",
      "total MiB": statsPeak + peakPss,
    };
    await service.stop();

    if (database.shared) {
      const instances = await Promise.all([1, 2, 3].map(() => startStats(database.url)));
      const base = await totalLookups(instances[0]?.client as StatsServiceClient);
      await Promise.all(
        instances.map(async ({ client }) => {
          for (let i = 0; i < 100; i += 1) await record(client, batch(10));
        }),
      );
      const counted = (await totalLookups(instances[2]?.client as StatsServiceClient)) - base;
      row["3 stats on it"] =
        `all served (listening→SERVING ${instances.map((s) => s.listeningToServingMs).join(", ")} ms), ${counted} of 3000 events counted`;
      row["database peak PSS MiB, 3 stats"] = treePssMiB(database.serverPid as number);
      await Promise.all(instances.map((instance) => instance.stop()));
    } else {
      row["3 stats on it"] = "no: one process owns the folder";
    }
    results.push(row);
    console.error(row);
  } finally {
    await database.stop();
  }
}
console.log(JSON.stringify(results, null, 2));
