// stats on a real PostgreSQL server, as Cloud Run runs it against Cloud SQL: the process
// starts whether or not the database is there, says NOT_SERVING (for its own name) and
// UNAVAILABLE until it is, and recovers by itself; two instances on one database add up to
// the same totals, and a watch on one sees what was recorded through the other.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type ServiceProcess, startService } from "@cloudrun-grpc/local-stack";
import {
  createStatsClient,
  type StatsServiceClient,
  serviceNames,
  type stats,
} from "@cloudrun-grpc/proto";
import {
  FaultProxy,
  postgresAdminUrl,
  type TestDatabase,
  TestDatabases,
} from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import { deadline, eventually, failure, healthStatus, unary } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const lookup = (id: string, latitude: number): stats.Event => ({
  id,
  caller: "test@local",
  featureLookedUp: { feature: { name: "", location: { latitude, longitude: -740_000_000 } } },
});

describeLocalOnly("stats on PostgreSQL", () => {
  const databases = new TestDatabases("stats_test");
  let database: TestDatabase;
  const running: ServiceProcess[] = [];
  const clients: grpc.Client[] = [];
  const proxies: FaultProxy[] = [];
  before(async () => {
    database = await databases.create();
  });
  after(async () => {
    for (const client of clients) client.close();
    for (const service of running) await service.stop();
    for (const proxy of proxies) await proxy.down();
    await databases.dropAll();
  });
  /** A proxy in front of the PostgreSQL server, listening. */
  const startProxy = async () => {
    const server = new URL(postgresAdminUrl);
    const proxy = new FaultProxy({ host: server.hostname, port: Number(server.port || 5432) });
    proxies.push(proxy);
    await proxy.up();
    return proxy;
  };

  const client = (service: ServiceProcess): StatsServiceClient => {
    const made = createStatsClient(
      service.url.replace("http://", ""),
      grpc.credentials.createInsecure(),
    );
    clients.push(made);
    return made;
  };
  const record = (to: StatsServiceClient, events: stats.Event[]) =>
    unary<stats.RecordEventsResponse__Output>((done) =>
      to.RecordEvents({ events }, deadline(), done),
    );
  const snapshot = async (from: StatsServiceClient) =>
    (
      await unary<stats.GetStatsResponse__Output>((done) =>
        from.GetStats({ topN: 10 }, deadline(), done),
      )
    ).snapshot;

  test("database away at start: listening, NOT_SERVING and UNAVAILABLE; SERVING once it is back", {
    timeout: 90_000,
  }, async () => {
    const proxy = await startProxy();
    await proxy.down();
    // Started without waiting for readiness: it must listen while the database is away.
    const linesSeen: string[] = [];
    const pending = startService({
      name: "stats",
      env: { STATS_DATABASE_URL: database.url(proxy.port), STATS_DATABASE_TIMEOUT_MS: "1000" },
      onLine: (_service, line) => linesSeen.push(line),
    });
    const listening = await eventually(
      async () => linesSeen.find((line) => line.includes('"listening"')),
      (line) => line !== undefined,
      30_000,
    );
    const port = (JSON.parse(listening as string) as { port: number }).port;
    const target = `127.0.0.1:${port}`;
    assert.equal(await healthStatus(target, serviceNames.stats), "NOT_SERVING");
    assert.equal(await healthStatus(target, ""), "SERVING", "the process itself is alive");
    const early = createStatsClient(target, grpc.credentials.createInsecure());
    clients.push(early);
    const refused = await failure(record(early, [lookup("early-1", 400_000_001)]));
    assert.equal(refused.code, grpc.status.UNAVAILABLE);
    assert.match(refused.details, /stats database unavailable .*try again/);
    await eventually(
      async () => linesSeen.some((line) => line.includes("stats database unreachable")),
      (seen) => seen,
      10_000,
    );

    await proxy.up();
    const stats = await pending;
    running.push(stats);
    assert.equal(await healthStatus(target, serviceNames.stats), "SERVING");
    assert.deepEqual(await record(early, [lookup("early-1", 400_000_001)]), {
      accepted: 1,
      duplicates: 0,
      rejected: [],
    });
  });

  test("connection lost while running: UNAVAILABLE and NOT_SERVING, then back, nothing acknowledged lost", {
    timeout: 90_000,
  }, async () => {
    const proxy = await startProxy();
    const stats = await startService({
      name: "stats",
      env: { STATS_DATABASE_URL: database.url(proxy.port), STATS_DATABASE_TIMEOUT_MS: "1000" },
    });
    running.push(stats);
    const to = client(stats);
    const target = stats.url.replace("http://", "");
    const before = (await snapshot(to))?.featureLookups ?? 0;
    assert.equal(
      (await record(to, [lookup("cut-1", 400_000_002), lookup("cut-2", 400_000_003)])).accepted,
      2,
    );

    await proxy.down();
    const refused = await failure(record(to, [lookup("cut-3", 400_000_004)]));
    assert.equal(refused.code, grpc.status.UNAVAILABLE);
    assert.equal(
      await eventually(
        () => healthStatus(target, serviceNames.stats),
        (s) => s === "NOT_SERVING",
      ),
      "NOT_SERVING",
    );

    await proxy.up();
    assert.equal(
      await eventually(
        () => healthStatus(target, serviceNames.stats),
        (s) => s === "SERVING",
        30_000,
      ),
      "SERVING",
    );
    // The refused report is sent again (as route does) and counts once; the acknowledged ones stayed.
    assert.equal(
      (await record(to, [lookup("cut-3", 400_000_004), lookup("cut-1", 400_000_002)])).accepted,
      1,
    );
    assert.equal((await snapshot(to))?.featureLookups, before + 3);
  });

  test("two instances on one database: the same exact totals, and a watch on one sees the other's change", {
    timeout: 90_000,
  }, async () => {
    const [a, b] = await Promise.all(
      [1, 2].map(() =>
        startService({ name: "stats", env: { STATS_DATABASE_URL: database.url() } }),
      ),
    );
    running.push(a as ServiceProcess, b as ServiceProcess);
    const [toA, toB] = [client(a as ServiceProcess), client(b as ServiceProcess)];
    const start = (await snapshot(toA))?.featureLookups ?? 0;

    const watch = toB.WatchStats({ topN: 1 });
    const updates: number[] = [];
    watch.on("data", (update: stats.WatchStatsResponse__Output) =>
      updates.push(update.snapshot?.featureLookups ?? -1),
    );
    watch.on("error", () => {});
    await eventually(
      async () => updates.length,
      (count) => count >= 1,
    );

    // Recorded only through A: B's watch hears it (NOTIFY reaches every instance).
    await record(toA, [lookup("only-a-1", 400_200_001), lookup("only-a-2", 400_200_002)]);
    await eventually(
      async () => updates.at(-1),
      (last) => last === start + 2,
      5_000,
    );

    // The same 40 ids sent to both instances at once: each counts once, whichever took it.
    const events = Array.from({ length: 40 }, (_, index) =>
      lookup(`pair-${index}`, 400_100_000 + index),
    );
    const results = await Promise.all([record(toA, events), record(toB, [...events].reverse())]);
    assert.equal(
      results.reduce((sum, result) => sum + result.accepted, 0),
      40,
    );
    assert.equal((await snapshot(toA))?.featureLookups, start + 42);
    assert.equal((await snapshot(toB))?.featureLookups, start + 42);
    await eventually(
      async () => updates.at(-1),
      (last) => last === start + 42,
      5_000,
    );
    watch.cancel();
  });
});
