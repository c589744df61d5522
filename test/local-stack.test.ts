// The local stack's start can be aborted (Ctrl-C during `pnpm start`): it stops what it had
// started, and nothing is left running. A service counts as started by its health check.
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer } from "node:net";
import { test } from "node:test";
import { freePort, startService, startStack } from "@cloudrun-grpc/local-stack";
import { serviceNames } from "@cloudrun-grpc/proto";
import { connectError, healthStatus, targetOf } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

describeLocalOnly("aborting startStack", () => {
  test("after stats is listening stops stats and rejects", { timeout: 60_000 }, async () => {
    const aborter = new AbortController();
    let statsPort: number | undefined;
    const starting = startStack({
      signal: aborter.signal,
      onLine: (service, line) => {
        if (service !== "stats" || !line.includes('"listening"')) return;
        statsPort = (JSON.parse(line) as { port: number }).port;
        // Right after the listening line, once stats counts as started and route is starting.
        setImmediate(() => aborter.abort());
      },
    });
    await assert.rejects(starting, /the stack's start was aborted/);
    assert.ok(statsPort, "stats printed its listening line");
    assert.equal(await connectError(statsPort), "ECONNREFUSED", "stats is no longer running");
  });

  test("aborted during the first start stops it and rejects", { timeout: 60_000 }, async () => {
    const aborter = new AbortController();
    let statsPort: number | undefined;
    const starting = startStack({
      signal: aborter.signal,
      onLine: (service, line) => {
        if (service !== "stats" || !line.includes('"listening"')) return;
        statsPort = (JSON.parse(line) as { port: number }).port;
        // While stats' start is still waiting for this very line.
        aborter.abort();
      },
    });
    await assert.rejects(starting, /the stack's start was aborted/);
    assert.ok(statsPort, "stats printed its listening line");
    assert.equal(await connectError(statsPort), "ECONNREFUSED", "stats is no longer running");
  });

  test("already aborted starts nothing", async () => {
    const lines: string[] = [];
    await assert.rejects(
      startStack({ signal: AbortSignal.abort(), onLine: (_, line) => lines.push(line) }),
      /the stack's start was aborted/,
    );
    assert.deepEqual(lines, []);
  });
});

describeLocalOnly("starting one service", () => {
  test("ready by its health check, not its log: a service that logs nothing starts", async () => {
    const route = await startService({
      name: "route",
      env: { LOG_LEVEL: "silent", STATS_URL: `http://127.0.0.1:${await freePort()}` },
    });
    try {
      assert.deepEqual(route.lines, [], "it printed nothing");
      assert.equal(await healthStatus(targetOf(route.url), serviceNames.routeGuide), "SERVING");
    } finally {
      await route.stop();
    }
  });

  test("a fixed port that is taken: a clear error, and no process started", async () => {
    // Connections to it are closed at once (a health check must not hang on it).
    const taken = createServer((socket) => socket.destroy()).listen(0, "127.0.0.1");
    await once(taken, "listening");
    const { port } = taken.address() as AddressInfo;
    const lines: string[] = [];
    try {
      await assert.rejects(
        startService({
          name: "route",
          port,
          env: { STATS_URL: `http://127.0.0.1:${await freePort()}` },
          onLine: (_service, line) => lines.push(line),
        }),
        new RegExp(`route could not listen on port ${port}: it is in use`),
      );
    } finally {
      taken.close();
    }
    assert.deepEqual(lines, [], "no process printed anything");
  });
});
