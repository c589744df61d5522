// stats' local database, measured: node --import tsx bench/stats-database.ts [seconds]
// (not part of pnpm test). On the local stack's embedded PostgreSQL server (the PGlite figures
// in bench/PERFORMANCE.md come from this script at the commit that added it, when stats still
// had PGlite):
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
import {
  closedLoop,
  processCpuUs,
  processPeakRssMiB,
  processTreeCpuUs,
  processTreePssMiB,
} from "./support/load.js";

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
  /** The database's own processes: the postmaster's pid. */
  serverPid: number;
  startMs: number;
  url: string;
  stop(): Promise<void>;
}

async function embeddedDatabase(): Promise<Database> {
  const started = performance.now();
  const server: EmbeddedPostgres = await startEmbeddedPostgres();
  return {
    name: "embedded PostgreSQL 17",
    serverPid: server.pid,
    startMs: Math.round(performance.now() - started),
    url: server.url,
    stop: () => server.stop(),
  };
}

const results: Record<string, unknown>[] = [];
for (const makeDatabase of [embeddedDatabase]) {
  const database = await makeDatabase();
  try {
    const service = await startStats(database.url);
    let peakPss = 0;
    const serverPid = database.serverPid;
    const sampler = setInterval(async () => {
      peakPss = Math.max(peakPss, await processTreePssMiB(serverPid));
    }, 100);
    const cpu = async () => ({
      stats: await processCpuUs(service.pid),
      database: await processTreeCpuUs(serverPid),
    });
    const before = await cpu();
    const load = await closedLoop(() => record(service.client, batch(10)), {
      concurrency: 8,
      warmupMs: 0,
      durationMs: seconds * 1000,
    });
    const after = await cpu();
    clearInterval(sampler);
    const events = load.calls * 10;
    const statsPeak = await processPeakRssMiB(service.pid);
    const row: Record<string, unknown> = {
      database: database.name,
      "server start ms": database.startMs,
      "stats listening→SERVING ms": service.listeningToServingMs,
      "GetStats at listening": service.earlyCall,
      "events/s": Math.round(events / seconds),
      "stats CPU µs/event": Math.round((after.stats - before.stats) / events),
      "database CPU µs/event": Math.round((after.database - before.database) / events),
      "stats peak RSS MiB": statsPeak,
      "database peak PSS MiB": peakPss,
      "total MiB": statsPeak + peakPss,
    };
    await service.stop();

    {
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
      row["database peak PSS MiB, 3 stats"] = await processTreePssMiB(serverPid);
      await Promise.all(instances.map((instance) => instance.stop()));
    }
    results.push(row);
    console.error(row);
  } finally {
    await database.stop();
  }
}
console.log(JSON.stringify(results, null, 2));
