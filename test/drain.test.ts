// Issue 6, drain: two route instances behind the gateway (the gateway balances over both, as a
// Cloud Run client is balanced over instances), steady mixed load through the gateway (unary,
// client-, server- and bidi-streaming), then one route instance gets SIGTERM, as Cloud Run
// sends when it scales in: no client call fails, the instance exits 0 once its calls are done,
// the other one takes the rest, and stats counts exactly what the clients did.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { type ServiceProcess, type Stack, startStack } from "@cloudrun-grpc/local-stack";
import type { GatewayServiceClient } from "@cloudrun-grpc/proto";
import { collect, deadline, stackGatewayClient } from "./support/grpc.js";
import { Load, sleep, totalsOnceCaughtUp } from "./support/load.js";
import { describeLocalOnly } from "./support/target.js";

const area = {
  lo: { latitude: 400_000_000, longitude: -750_000_000 },
  hi: { latitude: 402_000_000, longitude: -748_000_000 },
};
const point = { latitude: 407_838_351, longitude: -746_143_763 };

/** ListFeatures and RouteChat in a loop until stopped, each call with a deadline. */
function streamLoad(client: GatewayServiceClient) {
  const failures: { method: string; error: Error }[] = [];
  let calls = 0;
  let stopping = false;
  const listLoop = async () => {
    while (!stopping) {
      calls += 1;
      await collect(client.ListFeatures({ rectangle: area }, deadline(5_000))).catch(
        (error: Error) => failures.push({ method: "ListFeatures", error }),
      );
      await sleep(5);
    }
  };
  const chatLoop = async () => {
    while (!stopping) {
      calls += 1;
      const chat = client.RouteChat(deadline(5_000));
      // Written a note at a time, so the chat is open for a while, across the drain.
      const answers = collect(chat).catch((error: Error) => {
        failures.push({ method: "RouteChat", error });
        return [];
      });
      for (let i = 0; i < 5 && !chat.destroyed; i += 1) {
        chat.write({ note: { location: point, message: `note ${i}` } });
        await sleep(20);
      }
      chat.end();
      await answers;
    }
  };
  const running = Promise.all([listLoop(), chatLoop(), chatLoop()]);
  return {
    failures,
    get calls() {
      return calls;
    },
    async stop() {
      stopping = true;
      await running;
    },
  };
}

/** How many calls an instance has logged as served (its per-call server lines). */
function served(instance: ServiceProcess): number {
  return instance.lines.filter(
    (line) => line.includes('"side":"server"') && line.includes("RouteGuideService"),
  ).length;
}

describeLocalOnly("drain under load", () => {
  let stack: Stack | undefined;
  let client: GatewayServiceClient | undefined;
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  test("SIGTERM to one of two route instances mid-load: no call fails, stats counts exactly what was done", async () => {
    stack = await startStack({
      routeInstances: 2,
      env: {
        // The gateway and stats keep quiet; route logs each call, to tell who served what.
        all: { LOG_RPC_SAMPLE_RATE: "0" },
        route: { LOG_RPC_SAMPLE_RATE: "1" },
      },
    });
    client = await stackGatewayClient(stack);
    const [draining, staying] = stack.routes as [ServiceProcess, ServiceProcess];
    const load = new Load(client, {
      workers: 6,
      maxCalls: 6_000,
      routeEvery: 3,
      deadlineMs: 5_000,
      pauseMs: 5,
    });
    const streams = streamLoad(client);
    try {
      await load.started(400);
      assert.ok(served(draining) > 0 && served(staying) > 0, "both instances serve before");

      const exitCode = draining.stop(30_000);
      const callsAtDrain = load.calls;
      const servedByStayingAtDrain = served(staying);
      assert.equal(await exitCode, 0, "the drained instance exits 0");
      // The load goes on after the drain, on the other instance.
      await load.started(callsAtDrain + 600);
      assert.ok(served(staying) > servedByStayingAtDrain + 300, "the other instance takes over");
    } finally {
      await Promise.all([load.stop(), streams.stop()]);
    }
    const failures = [...load.failures, ...streams.failures].map(
      ({ method, error }) => `${method}: ${error.message}`,
    );
    assert.deepEqual(failures, [], "no client call failed");
    assert.ok(streams.calls > 20, `streams ran throughout (${streams.calls})`);
    const drainLog = draining.lines.map((line) => JSON.parse(line) as { message?: string });
    assert.ok(drainLog.some((entry) => entry.message === "draining"));
    assert.ok(
      !drainLog.some((entry) => entry.message?.startsWith("grace period over")),
      "every call on the drained instance finished within the grace period",
    );

    await load.marker();
    const totals = await totalsOnceCaughtUp(client, load.sent, 20_000);
    assert.deepEqual(totals, load.sent, "stats counts exactly what the clients did");
  });
});
