// stats as a process (dist/main.js, built), stopped with SIGTERM as Cloud Run and the local
// stack stop it, on PostgreSQL, while its database start waits (a migration under another
// instance's lock) and while it serves: it drains and exits 0 (never killed by the signal)
// within SHUTDOWN_GRACE_MS + 1 s, every line it wrote is a whole JSON line, and "stopping"
// comes before "stopped".
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { createStatsClient, type stats } from "@cloudrun-grpc/proto";
import {
  deadline,
  type TestDatabase,
  TestDatabases,
  unary,
  until,
} from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";

const mainPath = fileURLToPath(new URL("../dist/main.js", import.meta.url));
// The key stats' migrations lock (migrationLockKey in src/db/database.ts).
const migrationLockKey = 7_423_011;

interface LogLine {
  severity: string;
  message: string;
  port?: number;
}

interface StatsProcess {
  child: ChildProcess;
  /** Every stdout line so far, parsed: a line that is not JSON fails the test. */
  lines(): LogLine[];
  messages(): string[];
  /** Resolves once a line with this message has come (fails if the process exits first). */
  logged(message: string, timeoutMs?: number): Promise<LogLine>;
  /** SIGTERM now; the exit code and signal, and how long after the signal it exited. */
  terminate(): Promise<{ code: number | null; signal: NodeJS.Signals | null; afterMs: number }>;
}

const running: ChildProcess[] = [];
after(() => {
  for (const child of running) if (child.exitCode === null) child.kill("SIGKILL");
});

function startStats(env: Record<string, string>): StatsProcess {
  const clean = { ...process.env };
  for (const name of Object.keys(clean)) if (name.startsWith("STATS_")) delete clean[name];
  const child = spawn(process.execPath, [mainPath], {
    env: {
      ...clean,
      AUTH_MODE: "off",
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.push(child);
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (chunk) => {
    stdout += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  const lines = () =>
    stdout
      .split("\n")
      .slice(0, -1) // the part after the last newline is not a whole line yet
      .map((line) => {
        try {
          return JSON.parse(line) as LogLine;
        } catch {
          return assert.fail(`not a JSON line: ${JSON.stringify(line)}\n${stdout}`);
        }
      });
  const messages = () => lines().map((line) => line.message);
  return {
    child,
    lines,
    messages,
    async logged(message, timeoutMs = 30_000) {
      await until(
        () => {
          if (child.exitCode !== null || child.signalCode !== null) {
            assert.fail(`stats exited before "${message}":\n${stdout}\n${stderr}`);
          }
          return messages().includes(message);
        },
        `stats logs "${message}"`,
        timeoutMs,
      );
      return lines().find((line) => line.message === message) as LogLine;
    },
    async terminate() {
      const sentAt = Date.now();
      child.kill("SIGTERM");
      const [code, signal] = await exited;
      const afterMs = Date.now() - sentAt;
      assert.ok(stdout === "" || stdout.endsWith("\n"), `a line cut short: ${stdout}`);
      return { code, signal, afterMs };
    },
  };
}

/** The stop's lines: in order, each once, and nothing but whole JSON lines. */
function assertStoppedInOrder(stats: StatsProcess): void {
  const messages = stats.messages();
  const stopping = messages.indexOf("stopping");
  const stopped = messages.indexOf("stopped");
  assert.ok(stopping >= 0, `"stopping" logged: ${messages.join(", ")}`);
  assert.ok(stopped > stopping, `"stopped" after "stopping": ${messages.join(", ")}`);
  assert.equal(messages.filter((message) => message === "stopping").length, 1);
  assert.equal(messages.at(-1), "stopped", `nothing after "stopped": ${messages.join(", ")}`);
}

const graceMs = 8_000;
// Cloud Run's 10 s: the drain gets SHUTDOWN_GRACE_MS, the clean-up at most 1 s more.
const stopBoundMs = graceMs + 1_000;

const lookup = (id: string): stats.Event => ({
  id,
  caller: "test@local",
  featureLookedUp: { feature: { name: "", location: { latitude: 1, longitude: 1 } } },
});

async function recordOne(port: number, id: string): Promise<number> {
  const client = createStatsClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const answer = await unary<stats.RecordEventsResponse__Output>((done) =>
      client.RecordEvents({ events: [lookup(id)] }, deadline(), done),
    );
    return answer.accepted;
  } finally {
    client.close();
  }
}

describe("stats on PostgreSQL stops cleanly on SIGTERM", { timeout: 60_000 }, () => {
  const databases = new TestDatabases("stats_shutdown");
  let database: TestDatabase;
  before(async () => {
    database = await databases.create();
  });
  after(() => databases.dropAll());

  test("while serving: drains, exits 0, stopping then stopped", async (t) => {
    const stats = startStats({ STATS_DATABASE_URL: database.url() });
    const { port } = await stats.logged("listening");
    await stats.logged("ready: serving");
    assert.equal(await recordOne(port as number, "served-pg-1"), 1);
    const exit = await stats.terminate();
    t.diagnostic(`exited ${exit.afterMs} ms after SIGTERM`);
    assert.deepEqual([exit.code, exit.signal], [0, null], stats.messages().join(", "));
    assert.ok(exit.afterMs < stopBoundMs, `stopped in ${exit.afterMs} ms`);
    assertStoppedInOrder(stats);
  });

  test("while its migration waits for another instance's: exits 0 within the grace period", async (t) => {
    // Another instance migrating: this test holds the migrations' lock, so stats' start
    // waits on it for as long as the test likes.
    const other = new pg.Client({ connectionString: database.url() });
    await other.connect();
    try {
      await other.query("select pg_advisory_lock($1)", [migrationLockKey]);
      const shortGraceMs = 2_000;
      const stats = startStats({
        STATS_DATABASE_URL: database.url(),
        SHUTDOWN_GRACE_MS: String(shortGraceMs),
      });
      await stats.logged("listening");
      await until(
        async () =>
          (
            await other.query(
              "select 1 from pg_locks where locktype = 'advisory' and objid = $1 and not granted",
              [migrationLockKey],
            )
          ).rowCount === 1,
        "stats waits for the migrations' lock",
        30_000,
      );
      const exit = await stats.terminate();
      t.diagnostic(`exited ${exit.afterMs} ms after SIGTERM`);
      assert.deepEqual([exit.code, exit.signal], [0, null], stats.messages().join(", "));
      assert.ok(exit.afterMs < shortGraceMs + 1_000, `stopped in ${exit.afterMs} ms`);
      assertStoppedInOrder(stats);
      assert.ok(!stats.messages().includes("stats database ready"));
    } finally {
      await other.end();
    }
  });
});
