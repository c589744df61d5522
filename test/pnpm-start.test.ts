// `pnpm start` as a person or a script meets it, through the real pnpm: it says how to reach
// the stack (a line to paste, a JSON file for scripts), its services log at the level asked,
// and a signal to the pnpm process, or the end of the process that started the stack, stops
// every process of it within the grace period, in order, with nothing left behind.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, sep } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { StackFacts } from "@cloudrun-grpc/local-stack";
import { connectError } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const cliMain = join(repoRoot, "packages", "cli", "dist", "main.js");
const stackMain = join(repoRoot, "packages", "local-stack", "dist", "main.js");
/** Cloud Run's time between SIGTERM and SIGKILL; the services' grace (8 s) fits in it. */
const gracePeriodMs = 10_000;

interface Started {
  child: ChildProcess;
  dataDir: string;
  factsFile: string;
  /** Everything printed so far, stdout and stderr. */
  output(): string;
  exited: Promise<number | string>;
}

const running: Started[] = [];

/**
 * A fresh STACK_DATA_DIR, reachable by the stack's PostgreSQL server where it runs as the
 * machine's postgres user (as root without user namespaces), as a repository's .stack-data
 * is; mkdtemp makes it 0700.
 */
function stackDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "stack-data-"));
  chmodSync(dir, 0o755);
  return dir;
}

/** Starts `command` in its own process group (so the test can clean up all of it). */
function startStackCommand(
  command: string,
  args: string[],
  env: Record<string, string>,
  dataDir = stackDataDir(),
): Started {
  // Without node --test's marker: the stack is no test process.
  const { NODE_TEST_CONTEXT: _context, LOG_LEVEL: _level, ...inherited } = process.env;
  // A user's shell, not a pnpm script's: when `pnpm test` runs this, PATH starts with
  // node_modules/.bin, whose `node` is pnpm's shell shim (it runs node as a child and passes no
  // signal on), and `pnpm` (#!/usr/bin/env node) would start through it: the pid signalled
  // would be the shim's, not pnpm's.
  inherited.PATH = (inherited.PATH ?? "")
    .split(delimiter)
    .filter((entry) => !entry.endsWith(`node_modules${sep}.bin`) && !entry.includes("node-gyp-bin"))
    .join(delimiter);
  const child = spawn(command, args, {
    cwd: repoRoot,
    detached: true,
    env: { ...inherited, STACK_DATA_DIR: dataDir, ...env },
  });
  let output = "";
  child.stdout?.on("data", (chunk) => (output += chunk));
  child.stderr?.on("data", (chunk) => (output += chunk));
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown")),
  );
  const started = {
    child,
    dataDir,
    factsFile: join(dataDir, "local-stack.json"),
    output: () => output,
    exited,
  };
  running.push(started);
  return started;
}

const pnpmStart = (env: Record<string, string> = {}, args: string[] = []) => {
  try {
    execFileSync("pnpm", ["--version"]);
  } catch {
    throw new Error("this test needs pnpm on PATH, as the README's commands do");
  }
  return startStackCommand("pnpm", ["start", ...args], env);
};

/** Waits for the stack's facts file: the stack is up and its demo is over. */
async function factsOf(started: Started, timeoutMs = 240_000): Promise<StackFacts> {
  let ended = false;
  void started.exited.then(() => (ended = true));
  const until = Date.now() + timeoutMs;
  while (!existsSync(started.factsFile)) {
    assert.ok(!ended, `the stack ended before it was ready:\n${started.output()}`);
    assert.ok(Date.now() < until, `no ${started.factsFile} in time:\n${started.output()}`);
    await sleep(100);
  }
  // The stack writes the file, then prints how to use it, ending with this line: this process
  // may see the file before it has read those lines from the pipe.
  while (!started.output().includes("Press Ctrl-C to stop.")) {
    assert.ok(!ended, `the stack ended before it said how to use it:\n${started.output()}`);
    assert.ok(Date.now() < until, `no "Press Ctrl-C to stop." in time:\n${started.output()}`);
    await sleep(20);
  }
  return JSON.parse(readFileSync(started.factsFile, "utf8")) as StackFacts;
}

/**
 * Whether `pid` is one of this run's processes still: alive, and (where /proc tells) with this
 * run's STACK_DATA_DIR in its environment, so a pid reused by another process does not count.
 */
function isRunning(pid: number, started: Started): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  if (!existsSync("/proc/self/environ")) return true;
  return processesWithEnv(envEntry(started), [pid]).length > 0;
}

const envEntry = (started: Started) => `STACK_DATA_DIR=${started.dataDir}`;

/** No process of this run is left, whatever its pid (pnpm, turbo, the stack, a service). */
function assertNothingLeft(started: Started): void {
  assert.deepEqual(processesWithEnv(envEntry(started)), [], started.output());
}

/** Waits until none of `pids` runs; returns how long it took, or fails after `timeoutMs`. */
async function allGone(pids: number[], timeoutMs: number, started: Started): Promise<number> {
  const since = Date.now();
  for (;;) {
    const left = pids.filter((pid) => isRunning(pid, started));
    if (left.length === 0) return Date.now() - since;
    assert.ok(
      Date.now() - since < timeoutMs,
      `still running after ${timeoutMs} ms: ${left.join(", ")}\n${started.output()}`,
    );
    await sleep(50);
  }
}

const processesOf = (facts: StackFacts): number[] => [
  facts.pid,
  ...Object.values(facts.services).map((service) => {
    assert.ok(service.pid, "pnpm start (processes mode) names each service's pid");
    return service.pid;
  }),
];
const portOf = (url: string) => Number(new URL(url).port);

/**
 * `pnpm cli get-stats` with the facts file's environment alone, no flags (and an empty HOME,
 * so no credentials of this machine's user take the metadata server's place) answers with
 * the demo's routes (one per start on the same folder), counted for the local client identity.
 */
function assertCliReaches(facts: StackFacts, routes = 1): void {
  const home = mkdtempSync(join(tmpdir(), "empty-home-"));
  const cli = spawnSync(process.execPath, [cliMain, "get-stats"], {
    env: { ...facts.env, HOME: home },
    encoding: "utf8",
    timeout: 30_000,
  });
  rmSync(home, { recursive: true, force: true });
  assert.equal(cli.status, 0, `${cli.stdout}${cli.stderr}`);
  assert.match(cli.stdout, new RegExp(`caller ${facts.tokenAuthority.identity}: ${routes} routes`));
}

/** The services' JSON lines as the stack shows them (`[gateway] {…}`), in order. */
function serviceLines(output: string) {
  return output.split("\n").flatMap((line, index) => {
    const match = /^\[(gateway|route|stats)\] (\{.*\})$/.exec(line);
    if (!match) return [];
    const entry = JSON.parse(match[2] as string) as {
      severity: string;
      message: string;
      rpc?: { side: string; method: string; code: string };
    };
    return [{ service: match[1] as string, index, ...entry }];
  });
}

describeLocalOnly("pnpm start", () => {
  after(() => {
    // A test that failed half-way leaves nothing running: every process that carries this
    // run's STACK_DATA_DIR (pnpm, the stack, its services), found by its environment, never by
    // a remembered pid (pids are reused quickly here, and another process may have one now).
    for (const started of running) {
      for (const pid of processesWithEnv(envEntry(started))) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      rmSync(started.dataDir, { recursive: true, force: true });
    }
  });

  test("tells how to reach the stack, logs at the level asked, and stops all of it in order on SIGTERM to pnpm", {
    timeout: 300_000,
  }, async () => {
    const start = pnpmStart({ LOG_LEVEL: "info", LOG_FORMAT: "json" });
    const facts = await factsOf(start);
    const { GATEWAY_URL, GCE_METADATA_HOST } = facts.env;
    assert.equal(GATEWAY_URL, facts.services.gateway.url);
    assert.equal(GCE_METADATA_HOST, facts.tokenAuthority.metadataHost);
    assert.equal(facts.tokenAuthority.jwksUrl, `${facts.tokenAuthority.issuer}/jwks`);
    for (const pid of processesOf(facts)) assert.ok(isRunning(pid, start), `pid ${pid} runs`);

    // What a person reads: the line to paste, and which authority port is which.
    const shown = start.output();
    assert.ok(
      shown.includes(
        `\n  export GATEWAY_URL=${GATEWAY_URL} GCE_METADATA_HOST=${GCE_METADATA_HOST}\n`,
      ),
      shown,
    );
    assert.match(shown, new RegExp(`token issuer +${facts.tokenAuthority.issuer} `));
    assert.match(shown, new RegExp(`metadata host +${GCE_METADATA_HOST} `));

    // The CLI reaches the gateway with that environment alone, no flags.
    assertCliReaches(facts);

    // LOG_LEVEL=info reached the services: their INFO lines are shown. The demo's own end of
    // its WatchStats is INFO on the gateway and on stats, and nothing a new user sees warns.
    const lines = serviceLines(start.output());
    assert.ok(lines.some((line) => line.severity === "INFO" && line.message === "listening"));
    for (const [service, method] of [
      ["gateway", "/gateway.v1.GatewayService/WatchStats"],
      ["stats", "/stats.v1.StatsService/WatchStats"],
    ]) {
      const ended = lines.filter(
        (line) =>
          line.service === service && line.rpc?.side === "server" && line.rpc.method === method,
      );
      assert.deepEqual(
        ended.map((line) => [line.severity, line.rpc?.code]),
        [["INFO", "CANCELLED"]],
        `${service} logs the demo's cancelled watch once, at INFO`,
      );
    }
    assert.deepEqual(
      lines.filter((line) => !["DEBUG", "INFO"].includes(line.severity)),
      [],
      "no warnings",
    );

    const mark = start.output().length;
    process.kill(start.child.pid as number, "SIGTERM");
    await allGone(processesOf(facts), gracePeriodMs, start);
    assert.equal(await start.exited, 0, "pnpm start ends as the stack does: 0, no ELIFECYCLE");
    assertNothingLeft(start);
    assert.ok(!existsSync(start.factsFile), "the facts file is removed at stop");
    for (const service of Object.values(facts.services)) {
      assert.equal(await connectError(portOf(service.url)), "ECONNREFUSED");
    }

    // In order: gateway first (no new work reaches the others), stats last, each one's stop
    // lines all shown before the next one's first, and the stack's own last word after all of
    // theirs. (The order among one service's own lines is its logger's, not the stack's.)
    const stopped = start.output().slice(mark).split("\n");
    const at = (text: string) => stopped.indexOf(text);
    const span = (service: string) => {
      const found = stopped
        .map((line, index) => ({ line, index }))
        .filter(({ line }) =>
          ["stopping", "draining", "stopped"].some(
            (message) =>
              line.startsWith(`[${service}] `) && line.includes(`"message":"${message}"`),
          ),
        )
        .map(({ index }) => index);
      assert.ok(found.length > 0, `${service} shows how it stopped:\n${stopped.join("\n")}`);
      return { first: Math.min(...found), last: Math.max(...found) };
    };
    const [gateway, route, stats] = [span("gateway"), span("route"), span("stats")];
    const sequence = [
      at("stopping the stack…"),
      gateway.first,
      gateway.last,
      route.first,
      route.last,
      stats.first,
      stats.last,
      at("stopped; nothing left running"),
    ];
    assert.ok(
      sequence.every((index, i) => index >= 0 && (i === 0 || index >= (sequence[i - 1] ?? 0))),
      `stop lines in order ${JSON.stringify(sequence)}:\n${stopped.join("\n")}`,
    );
  });

  test("SIGINT to the pnpm process alone stops everything; at the default level the services print nothing", {
    timeout: 300_000,
  }, async () => {
    const start = pnpmStart();
    const facts = await factsOf(start);
    assert.deepEqual(serviceLines(start.output()), [], "nothing below WARNING, and no warning");
    process.kill(start.child.pid as number, "SIGINT");
    await allGone(processesOf(facts), gracePeriodMs, start);
    assert.equal(await start.exited, 0);
    assertNothingLeft(start);
    assert.ok(!existsSync(start.factsFile));
  });

  test("pnpm start --cloud-run: each service behind its local Cloud Run front end, each scale event printed, the CLI through the front end; pnpm killed outright, the stack sees its parent gone and stops every instance", {
    timeout: 300_000,
  }, async () => {
    const start = pnpmStart({ CLOUD_RUN_CONCURRENCY: "2" }, ["--cloud-run"]);
    const facts = await factsOf(start);
    assert.equal(facts.mode, "cloud-run");
    const shown = start.output();
    for (const [name, { url }] of Object.entries(facts.services)) {
      assert.match(url, /^https:\/\/localhost:\d+$/);
      assert.match(shown, new RegExp(`\n${name} +${url}  \\(`), `${name}'s front end is shown`);
    }
    const caFile = facts.env.GRPC_DEFAULT_SSL_ROOTS_FILE_PATH as string;
    assert.ok(caFile && existsSync(caFile), "the front ends' CA is a file while the stack runs");
    assert.ok(
      shown.includes(
        `\n  export GATEWAY_URL=${facts.env.GATEWAY_URL} GCE_METADATA_HOST=${facts.env.GCE_METADATA_HOST} GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=${caFile}\n`,
      ),
      shown,
    );
    // Each instance's start and readiness, as the front ends decided them; every one of them
    // (the demo's load at a concurrency of 2 starts more than one of some) is a process.
    const instances = [
      ...shown.matchAll(/\[cloud-run\] (\w+): instance \S+ started \([^)]*\), pid (\d+)/g),
    ].map((match) => ({ service: match[1], pid: Number(match[2]) }));
    for (const service of ["gateway", "route", "stats"]) {
      assert.ok(
        instances.some((instance) => instance.service === service),
        `${service}'s first instance is shown starting:\n${shown}`,
      );
      assert.match(shown, new RegExp(`\\[cloud-run\\] ${service}: instance ${service}-1 ready`));
    }

    // The CLI reaches the gateway through its front end with that environment alone.
    assertCliReaches(facts);

    // Each instance carries this run's STACK_DATA_DIR, so the checks below can see it.
    for (const { pid } of instances) assert.ok(isRunning(pid, start), `instance pid ${pid} runs`);
    // (pnpm killed outright is tried in this mode only: the stack's watch on its parent is the
    // same in both modes; processes mode's stop is tried with SIGTERM and SIGINT above, and its
    // services ending by themselves with the stack killed, below.)
    process.kill(start.child.pid as number, "SIGKILL");
    await allGone([facts.pid, ...instances.map((instance) => instance.pid)], gracePeriodMs, start);
    assert.ok(!existsSync(start.factsFile), "the stack removed its facts file");
    assert.ok(!existsSync(caFile), "and the CA's file");
    for (const service of Object.values(facts.services)) {
      assert.equal(await connectError(portOf(service.url)), "ECONNREFUSED");
    }
    assertNothingLeft(start);
  });

  test("a second stack on the same data folder refuses to start; the first one killed outright, its services and its database server end by themselves, and the next start finds its data", {
    timeout: 180_000,
  }, async () => {
    // Straight from the build (no pnpm), so the stack's own pid is the one started here.
    const start = startStackCommand(process.execPath, [stackMain], {
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
    });
    const facts = await factsOf(start);
    assert.equal(facts.pid, start.child.pid);
    // The stack's PostgreSQL server, its cluster in the data folder.
    const cluster = join(start.dataDir, "postgres");
    const servers = postgresServersOf(start);
    assert.equal(servers.length, 1, `one PostgreSQL server of this run:\n${start.output()}`);
    assert.ok(existsSync(join(cluster, "postmaster.pid")), "it runs on the stack's cluster");

    const second = spawnSync(process.execPath, [stackMain], {
      cwd: repoRoot,
      env: { ...process.env, STACK_DATA_DIR: start.dataDir },
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(second.status, 1, `${second.stdout}${second.stderr}`);
    assert.match(
      second.stderr,
      new RegExp(`another local stack \\(pid ${facts.pid}\\) is running`),
    );
    assert.deepEqual(JSON.parse(readFileSync(start.factsFile, "utf8")), facts, "its facts stay");

    // A SIGKILL runs no handler: the services learn it from their stdin, and drain and exit;
    // so does the database server (its supervising shell reads end-of-file).
    process.kill(facts.pid, "SIGKILL");
    await allGone([...processesOf(facts), ...servers], gracePeriodMs, start);
    for (const service of Object.values(facts.services)) {
      assert.equal(await connectError(portOf(service.url)), "ECONNREFUSED");
    }
    assertNothingLeft(start);
    assert.ok(!existsSync(join(cluster, "postmaster.pid")), "the server shut down cleanly");

    // The next start of the same folder counts on: the first start's demo route is still there.
    // (A stack killed outright could not remove its facts file: the next one writes its own.)
    rmSync(start.factsFile, { force: true });
    const again = startStackCommand(process.execPath, [stackMain], {}, start.dataDir);
    const next = await factsOf(again);
    assertCliReaches(next, 2);
    process.kill(next.pid, "SIGTERM");
    await allGone(processesOf(next), gracePeriodMs, again);
    assertNothingLeft(again);
  });
});

/** This run's PostgreSQL server: the postmaster (its children end with it). */
function postgresServersOf(started: Started): number[] {
  return processesWithEnv(envEntry(started)).filter((pid) => {
    try {
      const argv0 = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? "";
      return argv0.endsWith(`${sep}bin${sep}postgres`);
    } catch {
      return false;
    }
  });
}

/** The processes (of `among`, else all) whose environment holds `entry`, from /proc (Linux). */
function processesWithEnv(entry: string, among?: number[]): number[] {
  if (!existsSync("/proc/self/environ")) return [];
  return (among?.map(String) ?? readdirSync("/proc").filter((name) => /^\d+$/.test(name)))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(entry);
      } catch {
        return false; // gone, or not ours to read
      }
    })
    .map(Number);
}
