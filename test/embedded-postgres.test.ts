// The local stack's own PostgreSQL server (startEmbeddedPostgres), stats' database when none is
// given: several stats processes share it and count together, one cluster folder never gets a
// second server (so two stacks never corrupt one folder), a kept cluster keeps its data across
// restarts, and no server process or temporary folder outlives a stop, nor the end of the
// process that started it (SIGKILL included).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  type ServiceProcess,
  startEmbeddedPostgres,
  startService,
} from "@cloudrun-grpc/local-stack";
import { createStatsClient, type StatsServiceClient, type stats } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { deadline, unary } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const localStack = fileURLToPath(new URL("../packages/local-stack/dist/index.js", import.meta.url));

/** Whether a process runs with this pid (signal 0 checks without signalling). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The processes whose command line mentions `text` (e.g. a cluster's folder). */
function processesMentioning(text: string): number[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(text);
      } catch {
        return false;
      }
    })
    .map(Number);
}

async function lookups(client: StatsServiceClient): Promise<number> {
  const answer = await unary<stats.GetStatsResponse__Output>((done) =>
    client.GetStats({ topN: 1 }, deadline(), done),
  );
  return Number(answer.snapshot?.featureLookups ?? 0);
}

describeLocalOnly("the stack's embedded PostgreSQL server", () => {
  const folders: string[] = [];
  after(() => {
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
  });

  test("three stats on one server count together; stop() leaves no process and no folder", {
    timeout: 120_000,
  }, async () => {
    const server = await startEmbeddedPostgres();
    const running: ServiceProcess[] = [];
    const clients: StatsServiceClient[] = [];
    try {
      assert.match(server.url, /^postgres:\/\/postgres:[^@]+@127\.0\.0\.1:\d+\/stats$/);
      assert.ok(alive(server.pid), "the postmaster runs");
      for (const service of await Promise.all(
        [1, 2, 3].map(() =>
          startService({ name: "stats", env: { STATS_DATABASE_URL: server.url } }),
        ),
      )) {
        running.push(service);
        assert.equal(service.databaseUrl, server.url);
        clients.push(
          createStatsClient(service.url.replace("http://", ""), grpc.credentials.createInsecure()),
        );
      }
      // The same 30 ids through all three at once: each counts once, whichever took it.
      const events = Array.from({ length: 30 }, (_, index) => ({
        id: `shared-${index}`,
        caller: "test@local",
        featureLookedUp: {
          feature: {
            name: "",
            location: { latitude: 400_000_000 + index, longitude: -740_000_000 },
          },
        },
      }));
      const answers = await Promise.all(
        clients.map((client) =>
          unary<stats.RecordEventsResponse__Output>((done) =>
            client.RecordEvents({ events }, deadline(), done),
          ),
        ),
      );
      assert.equal(
        answers.reduce((sum, answer) => sum + answer.accepted, 0),
        30,
      );
      for (const client of clients) assert.equal(await lookups(client), 30);
    } finally {
      for (const client of clients) client.close();
      for (const service of running) await service.stop();
      await server.stop();
    }
    assert.ok(!alive(server.pid), "the postmaster has ended");
    assert.deepEqual(processesMentioning(server.dataDir), [], "no process of it is left");
    assert.ok(!existsSync(server.dataDir), "its temporary folder is removed");
  });

  test("a kept cluster: a second server on its folder is refused, the first keeps serving, and its data outlives a restart", {
    timeout: 120_000,
  }, async () => {
    const parent = mkdtempSync(join(tmpdir(), "embedded-postgres-"));
    // Reachable by the server's user where it runs as the machine's postgres user (as root
    // without user namespaces), as a repository's .stack-data is; mkdtemp makes it 0700.
    chmodSync(parent, 0o755);
    folders.push(parent);
    const dataDir = join(parent, "cluster");
    const first = await startEmbeddedPostgres({ dataDir });
    try {
      const client = new pg.Client(first.url);
      await client.connect();
      await client.query("create table kept (value text)");
      await client.query("insert into kept values ('before the restart')");
      await assert.rejects(
        startEmbeddedPostgres({ dataDir }),
        new RegExp(`${dataDir} is in use by another PostgreSQL server \\(pid ${first.pid}\\)`),
      );
      assert.deepEqual((await client.query("select value from kept")).rows, [
        { value: "before the restart" },
      ]);
      await client.end();
    } finally {
      await first.stop();
    }
    assert.ok(existsSync(join(dataDir, "PG_VERSION")), "a kept cluster stays");

    const second = await startEmbeddedPostgres({ dataDir });
    try {
      const client = new pg.Client(second.url);
      await client.connect();
      assert.deepEqual((await client.query("select value from kept")).rows, [
        { value: "before the restart" },
      ]);
      await client.end();
    } finally {
      await second.stop();
    }
  });

  test("the process that started it killed outright: the server stops and its folder goes", {
    timeout: 60_000,
  }, async () => {
    const owner = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { startEmbeddedPostgres } = await import(${JSON.stringify(localStack)});
         const server = await startEmbeddedPostgres();
         console.log(JSON.stringify({ pid: server.pid, dataDir: server.dataDir }));
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise((resolve) => owner.once("exit", resolve));
    const first = await new Promise<string>((resolve) =>
      createInterface({ input: owner.stdout }).once("line", resolve),
    );
    const server = JSON.parse(first) as { pid: number; dataDir: string };
    assert.ok(alive(server.pid) && existsSync(server.dataDir), "it runs, in its folder");
    owner.kill("SIGKILL");
    await exited;
    // Fast shutdown takes milliseconds; the supervising shell then removes the folder.
    const until = Date.now() + 20_000;
    while ((alive(server.pid) || existsSync(server.dataDir)) && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(!alive(server.pid), "the postmaster has ended");
    assert.deepEqual(processesMentioning(server.dataDir), [], "no process of it is left");
    assert.ok(!existsSync(server.dataDir), "its temporary folder is removed");
  });
});
