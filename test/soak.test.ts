// A soak through the gateway: 20,000 mixed calls (every gateway method but WatchStats) at
// concurrency 64, each with a deadline. No call may fail, no call may stay open on any
// service afterwards (channelz), and each service's memory after the soak stays near where
// it was after a warm-up. No timing is asserted: the CPU is shared with other work.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Stack, startStack } from "@cloudrun-grpc/local-stack";
import type { GatewayServiceClient } from "@cloudrun-grpc/proto";
import type * as grpc from "@grpc/grpc-js";
import { Channelz } from "./support/channelz.js";
import { collect, deadline, eventually, stackGatewayClient, unary } from "./support/grpc.js";
import { readTotals } from "./support/load.js";
import { residentBytes } from "./support/raw-grpc.js";
import { describeLocalOnly } from "./support/target.js";

const totalCalls = 20_000;
const warmUpCalls = 2_000;
const concurrency = 64;
const callDeadlineMs = 20_000;
const mib = 1024 * 1024;

// A small rectangle holding 14 of the data set's 150 features.
const small = {
  lo: { latitude: 407_000_000, longitude: -748_000_000 },
  hi: { latitude: 409_000_000, longitude: -745_000_000 },
};
const point = (i: number) => ({
  latitude: 400_000_000 + (i % 97) * 100_000,
  longitude: -745_000_000,
});

interface Counts {
  lookups: number;
  routes: number;
}

/** One call of the mix, by its number; resolves when it has ended OK. */
async function oneCall(client: GatewayServiceClient, i: number, counts: Counts): Promise<void> {
  const options = deadline(callDeadlineMs);
  switch (i % 6) {
    case 0:
      await unary((done) => client.GetFeature({ point: point(i) }, options, done));
      counts.lookups += 1;
      return;
    case 1:
      await collect(client.ListFeatures({ rectangle: small }, options));
      return;
    case 2:
      await unary((done) => {
        const call = client.RecordRoute(options, done);
        for (let k = 0; k < 3; k += 1) call.write({ point: point(i + k) });
        call.end();
      });
      counts.routes += 1;
      return;
    case 3: {
      const call = client.RouteChat(options);
      const answers = collect(call as grpc.ClientDuplexStream<unknown, unknown>);
      for (let k = 0; k < 3; k += 1) call.write({ note: { location: point(i), message: `n${k}` } });
      call.end();
      await answers;
      return;
    }
    case 4:
      await unary((done) => client.GetStats({ topN: 3 }, options, done));
      return;
    default:
      await unary((done) => client.DescribeArea({ rectangle: small, topN: 3 }, options, done));
  }
}

/** Runs calls `from` … `to` - 1 with `concurrency` in flight; returns the failures. */
async function run(
  client: GatewayServiceClient,
  from: number,
  to: number,
  counts: Counts,
): Promise<{ call: number; error: Error }[]> {
  const failures: { call: number; error: Error }[] = [];
  let next = from;
  const worker = async () => {
    while (next < to) {
      const call = next;
      next += 1;
      try {
        await oneCall(client, call, counts);
      } catch (error) {
        failures.push({ call, error: error as Error });
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return failures;
}

describeLocalOnly("soak: 20,000 mixed calls at concurrency 64 through the gateway", () => {
  let stack: Stack;
  let client: GatewayServiceClient;
  const channelz: Channelz[] = [];

  before(async () => {
    stack = await startStack({
      // 20,000 OK lines would flood the run; failed calls are still logged.
      env: { all: { CHANNELZ_ENABLED: "true", LOG_RPC_SAMPLE_RATE: "0.01" } },
    });
    client = await stackGatewayClient(stack);
    const auth = stack.auth;
    assert.ok(auth);
    channelz.push(
      new Channelz(stack.gateway.url, await auth.tokenFor("client", stack.gateway.url)),
    );
    for (const service of [stack.route, stack.stats]) {
      channelz.push(new Channelz(service.url, await auth.tokenFor("gateway", service.url)));
    }
  });

  after(async () => {
    client?.close();
    for (const each of channelz) each.close();
    await stack?.stop();
  });

  test("no call fails, nothing stays open, memory stays bounded", {
    timeout: 300_000,
  }, async (t) => {
    const counts: Counts = { lookups: 0, routes: 0 };
    const started = Date.now();
    const warmUpFailures = await run(client, 0, warmUpCalls, counts);
    assert.deepEqual(warmUpFailures, []);
    const rssWarm = stack.services.map((service) => residentBytes(service.child.pid as number));

    const failures = await run(client, warmUpCalls, totalCalls, counts);
    const seconds = (Date.now() - started) / 1000;
    const rssAfter = stack.services.map((service) => residentBytes(service.child.pid as number));
    t.diagnostic(`${totalCalls} calls in ${seconds.toFixed(1)} s`);
    stack.services.forEach((service, index) => {
      t.diagnostic(
        `${service.name} RSS: ${((rssWarm[index] as number) / mib).toFixed(1)} MiB after the warm-up, ` +
          `${((rssAfter[index] as number) / mib).toFixed(1)} MiB after the soak`,
      );
    });
    assert.deepEqual(
      failures.slice(0, 5).map(({ call, error }) => `#${call}: ${error.message}`),
      [],
      `${failures.length} calls failed`,
    );

    // Nothing left open on any service, server or channel (route's reports may still be
    // going out to stats: polled until they are done).
    for (const each of channelz) {
      const open = await eventually(
        () => each.total(),
        (n) => n === 0,
        10_000,
      );
      assert.equal(open, 0, "calls still open");
    }

    // Memory: 18,000 calls after the warm-up. A leak of per-call state (a chat's history, a
    // stream's listeners, a call context, a few KiB a call) would add tens of MiB or more; the
    // bound leaves room for V8's heap growing to its working size and the GC not having run.
    stack.services.forEach((service, index) => {
      const bound = (rssWarm[index] as number) * 1.5 + 64 * mib;
      assert.ok(
        (rssAfter[index] as number) <= bound,
        `${service.name}: ${(rssAfter[index] as number) / mib} MiB after, bound ${bound / mib} MiB`,
      );
    });

    // stats counted what was done: every look-up and route (DescribeArea and GetStats count
    // nothing). Reports go out in order, so the totals are final once they reach these.
    const totals = await eventually(
      () => readTotals(client),
      (read) => read.featureLookups >= counts.lookups && read.routesRecorded >= counts.routes,
      20_000,
    );
    assert.equal(totals.featureLookups, counts.lookups);
    assert.equal(totals.routesRecorded, counts.routes);
  });
});
