// A client's call never fails because stats is down: route answers first and keeps its
// reports queued, retrying until stats is back; then stats counts every one of them once, on
// top of what it had counted before it was killed (its database outlives the process).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { connectGateway } from "@cloudrun-grpc/cli";
import { type ServiceProcess, startService } from "@cloudrun-grpc/local-stack";
import type { gateway } from "@cloudrun-grpc/proto";
import { deadline, eventually, unary } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

describeLocalOnly("stats down", () => {
  const running: ServiceProcess[] = [];
  const dataDir = mkdtempSync(join(tmpdir(), "stats-down-"));
  const database = { STATS_DATABASE_URL: `pglite://${dataDir}` };
  after(async () => {
    for (const service of running.reverse()) await service.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("calls succeed while stats is killed, and stats counts what happened once it is back", async () => {
    const firstStats = await startService({ name: "stats", env: database });
    running.push(firstStats);
    const route = await startService({ name: "route", env: { STATS_URL: firstStats.url } });
    running.push(route);
    const gatewayService = await startService({
      name: "gateway",
      env: { ROUTE_URL: route.url, STATS_URL: firstStats.url },
    });
    running.push(gatewayService);
    const client = connectGateway(gatewayService.url, { kind: "none" });
    const getStats = async () =>
      (
        await unary<gateway.GetStatsResponse__Output>((done) =>
          client.GetStats({ topN: 1 }, deadline(), done),
        ).catch(() => ({ snapshot: null }))
      ).snapshot;
    try {
      // Counted before the kill: 5 look-ups, acknowledged by stats.
      const before = { latitude: 400_000_008, longitude: -740_000_008 };
      for (let index = 0; index < 5; index += 1) {
        await unary((done) => client.GetFeature({ point: before }, deadline(), done));
      }
      await eventually(getStats, (value) => value?.featureLookups === 5, 20_000);

      firstStats.child.kill("SIGKILL");
      await firstStats.exited;

      const point = { latitude: 400_000_007, longitude: -740_000_007 };
      for (let index = 0; index < 20; index += 1) {
        const answer = await unary<gateway.GetFeatureResponse__Output>((done) =>
          client.GetFeature({ point }, deadline(), done),
        );
        assert.deepEqual(answer.feature, { name: "", location: point });
      }
      const recorded = await unary<gateway.RecordRouteResponse__Output>((done) => {
        const stream = client.RecordRoute(deadline(), done);
        for (let index = 0; index < 10; index += 1) stream.write({ point });
        stream.end();
      });
      assert.equal(recorded.summary?.pointCount, 10);

      // Stats comes back at the same address on the same database. How soon route's reports
      // arrive depends on grpc-js's reconnect backoff and the reporter's (each at most a few
      // seconds here); the wait below is a generous upper bound.
      const secondStats = await startService({
        name: "stats",
        port: firstStats.port,
        env: database,
      });
      running.push(secondStats);
      const snapshot = await eventually(
        getStats,
        (value) => value?.featureLookups === 25 && value.routesRecorded === 1,
        45_000,
      );
      assert.equal(snapshot?.featureLookups, 25, "5 from before the kill, 20 while it was down");
      assert.equal(snapshot?.routesRecorded, 1);
      assert.equal(snapshot?.pointsRecorded, 10);
      assert.ok(
        routeLoggedRetry(running),
        "route says it is keeping reports queued while stats is unreachable",
      );
    } finally {
      client.close();
    }
  });
});

function routeLoggedRetry(services: ServiceProcess[]): boolean {
  return services.some(
    (service) =>
      service.name === "route" &&
      service.lines.some((line) => line.includes("stats unreachable: keeping events queued")),
  );
}
