// Two stats processes on one embedded database folder (a restart whose old process is still
// stopping, a second local stack on the same STATS_DATABASE_URL): the second waits for the
// folder, saying so in one readable line per try (the reason and the next try, no stack
// trace), and takes the folder once the first stops. One stopped while it still waits ends
// with an error line that carries the error itself.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, test } from "node:test";
import { type ServiceProcess, serviceEntry, startService } from "@cloudrun-grpc/local-stack";
import { eventually } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

interface LogLine {
  severity?: string;
  message?: string;
  retryInMs?: number;
  err?: { type?: string; message?: string; stack?: string };
  [field: string]: unknown;
}

const parsed = (lines: readonly string[]): LogLine[] =>
  lines.flatMap((line) => {
    try {
      return [JSON.parse(line) as LogLine];
    } catch {
      return [];
    }
  });

const waitLines = (lines: readonly string[]) =>
  parsed(lines).filter((line) => line.message?.startsWith("stats database unreachable"));

describeLocalOnly("two stats processes on one embedded database folder", () => {
  const dir = mkdtempSync(join(tmpdir(), "stats-folder-lock-"));
  const database = { STATS_DATABASE_URL: `pglite://${dir}` };
  const started: ServiceProcess[] = [];
  after(async () => {
    for (const service of started) await service.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the second waits for the folder with one line per try, no stack trace, and takes it once the first stops", async () => {
    const first = await startService({ name: "stats", env: database });
    started.push(first);
    const secondLines: string[] = [];
    const secondStarting = startService({
      name: "stats",
      env: database,
      onLine: (_service, line) => secondLines.push(line),
    });
    // Not awaited until the first stops; a failure to start is still seen there.
    secondStarting.catch(() => {});

    const retries = await eventually(
      async () => waitLines(secondLines),
      (lines) => lines.length >= 2,
      30_000,
    );
    assert.ok(retries.length >= 2, `two tries at least: ${secondLines.join("\n")}`);
    assert.equal(await first.stop(), 0);
    const second = await secondStarting;
    started.push(second);

    const reason = `${dir} is in use by another stats process (pid ${first.child.pid})`;
    const tries = waitLines(secondLines);
    for (const line of tries) {
      assert.equal(line.severity, "WARNING");
      assert.equal(
        line.message,
        `stats database unreachable (${reason}): retrying in ${line.retryInMs} ms`,
      );
      assert.equal(line.err, undefined, "no error object (and so no stack) for an expected wait");
    }
    // The next try comes later each time (backoff from 250 ms).
    assert.deepEqual(
      tries.slice(0, 2).map((line) => line.retryInMs),
      [250, 500],
    );
    // Nothing the second printed, stdout or stderr, carries a stack trace.
    const withStack = secondLines.filter((line) => /stack|\bat .*\.js:\d+/.test(line));
    assert.deepEqual(withStack, []);
    // Its health said SERVING; its log line may still be on the way through the pipe.
    assert.ok(
      await eventually(
        async () => parsed(secondLines).some((line) => line.message === "stats database ready"),
        (ready) => ready,
        5_000,
      ),
      "the second took the folder once the first had stopped",
    );
  });

  test("one stopped while it still waits for the folder ends with an error line that keeps the error", async () => {
    const holder = started.at(-1);
    assert.ok(holder && holder.child.exitCode === null, "a stats process holds the folder");
    // Started by hand: startService would wait for a readiness that never comes.
    const child = spawn(process.execPath, [serviceEntry("stats")], {
      env: { ...process.env, PORT: "0", HOST: "127.0.0.1", AUTH_MODE: "off", ...database },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const lines: string[] = [];
    createInterface({ input: child.stdout }).on("line", (line) => lines.push(line));
    createInterface({ input: child.stderr }).on("line", (line) => lines.push(line));
    const exited = new Promise<number | string>((resolve) =>
      child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown")),
    );
    try {
      // Listening (its signal handlers are set from then on) and waiting for the folder.
      const listening = () => parsed(lines).some((line) => line.message === "listening");
      await eventually(
        async () => listening() && waitLines(lines).length >= 1,
        (ready) => ready,
        30_000,
      );
      assert.ok(listening() && waitLines(lines).length >= 1, lines.join("\n"));
      child.kill("SIGTERM");
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }

    const reason = `${dir} is in use by another stats process (pid ${holder.child.pid})`;
    const finals = parsed(lines).filter((line) => line.severity === "ERROR");
    assert.equal(finals.length, 1, lines.join("\n"));
    const final = finals[0] as LogLine;
    assert.equal(final.message, `stats stopped while its database was unreachable (${reason})`);
    assert.equal(final.err?.type, "FolderInUseError");
    assert.equal(final.err?.message, reason);
    assert.match(String(final.err?.stack), /^FolderInUseError: .*\n\s+at /);
  });
});
