// The local stack's start can be aborted (Ctrl-C during `pnpm start`): it stops what it had
// started, and nothing is left running.
import assert from "node:assert/strict";
import { test } from "node:test";
import { startStack } from "@cloudrun-grpc/local-stack";
import { connectError } from "./support/grpc.js";
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
