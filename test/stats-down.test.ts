// A client's call never fails because stats is down, and no report is lost or counted twice:
// under steady load through the gateway stats is killed (SIGKILL, mid-batch as likely as not),
// the load goes on for six seconds while route keeps its reports queued and retries, then
// stats comes back on the same port and the same database. In the end stats holds exactly what
// the clients did, before, during and after the outage, each look-up and route once.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  freePort,
  type ServiceProcess,
  type Stack,
  startService,
  startStack,
} from "@cloudrun-grpc/local-stack";
import { type GatewayServiceClient, serviceNames } from "@cloudrun-grpc/proto";
import { eventually, healthStatus, stackGatewayClient } from "./support/grpc.js";
import { Load, readTotals, sleep, steadyLoad, totalsOnceCaughtUp } from "./support/load.js";
import { describeLocalOnly } from "./support/target.js";

describeLocalOnly("stats down", () => {
  let stack: Stack | undefined;
  let secondStats: ServiceProcess | undefined;
  let client: GatewayServiceClient | undefined;
  after(async () => {
    client?.close();
    // The second stats first: the stack's stop ends its database server too.
    await secondStats?.stop();
    await stack?.stop();
  });

  test("stats killed under load and restarted: every call succeeds, every look-up and route counts once", async () => {
    const statsPort = await freePort();
    stack = await startStack({ ports: { stats: statsPort } });
    const gateway = await stackGatewayClient(stack);
    client = gateway;
    const load = new Load(gateway, steadyLoad);
    let countedBeforeKill = 0;
    let duringOutage = 0;
    try {
      // Stats has counted some of the load (so the database holds something to keep).
      const early = await eventually(
        () => readTotals(gateway),
        (totals) => totals.featureLookups >= 20,
        20_000,
      );
      countedBeforeKill = early.featureLookups;
      assert.ok(countedBeforeKill >= 20, "stats counts the load before it is killed");

      stack.stats.child.kill("SIGKILL");
      await stack.stats.exited;
      const atKill = load.calls;
      // Longer than route's batch timeout (5 s): a batch waiting for stats' channel
      // (waitForReady) then fails for sure, and route must say it keeps its reports. A shorter
      // outage can pass with no failed batch at all (none in flight at the kill, the next one
      // served by the new stats), as one full run showed.
      await sleep(6_000);
      duringOutage = load.calls - atKill;

      // Back at the same address (route and gateway know no other) on the same database.
      secondStats = await startService({
        name: "stats",
        port: statsPort,
        env: {
          ...stack.auth?.envFor("stats", stack.stats.url),
          STATS_DATABASE_URL: stack.databaseUrl,
        },
      });
      // Route's held reports reach stats within 2 s of its serving again (its retries and its
      // channel's reconnects are at most half a second apart): what the clients did up to that
      // moment is counted by then.
      await eventually(
        () => healthStatus(stack?.stats.url as string, serviceNames.stats).catch(() => ""),
        (status) => status === "SERVING",
        20_000,
      );
      const servingAt = Date.now();
      const sentBeforeServing = { ...load.sent };
      const caughtUp = await totalsOnceCaughtUp(gateway, sentBeforeServing, 10_000);
      const catchUpMs = Date.now() - servingAt;
      console.log(`# held reports counted ${catchUpMs} ms after stats served again`);
      assert.ok(
        caughtUp.featureLookups >= sentBeforeServing.featureLookups &&
          caughtUp.routesRecorded >= sentBeforeServing.routesRecorded,
        "route's held reports reach stats once it serves again",
      );
      assert.ok(catchUpMs <= 2_000, `held reports arrive within 2 s, not ${catchUpMs} ms`);
      // A second more of load against the restarted stats: no call may fail then either.
      await sleep(1_000);
    } finally {
      await load.stop();
    }

    assert.deepEqual(
      load.failures.map(({ method, error }) => `${method}: ${error.message}`),
      [],
      "no client call failed",
    );
    assert.ok(duringOutage > 0, "calls went on while stats was down");
    assert.ok(
      stack.route.lines.some((line) => line.includes("stats unreachable: keeping events queued")),
      "route says it is keeping reports queued while stats is unreachable",
    );

    await load.marker();
    const totals = await totalsOnceCaughtUp(gateway, load.sent, 20_000);
    assert.deepEqual(totals, load.sent, "stats counted every report exactly once");
  });
});
