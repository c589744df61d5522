// Tried as a new user would: a fresh clone of this repository (its last commit), the README's
// first command (`pnpm install` then `pnpm start`), nothing else. The stack must start, show
// every method working, keep running until Ctrl-C, then stop with nothing left listening.
// (The README's second command, `pnpm test`, is what CI runs on a fresh clone.)
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { connectError } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));

function pnpmOnPath(): string {
  try {
    return execFileSync("pnpm", ["--version"], { encoding: "utf8" }).trim();
  } catch {
    throw new Error(
      "this test needs pnpm on PATH, as the README's commands do (npm install -g pnpm@<packageManager version>)",
    );
  }
}

describeLocalOnly("a new user's first command on a fresh clone", () => {
  let clone: string;
  let start: ChildProcess;
  let output = "";
  let installOutput = "";

  before(() => {
    pnpmOnPath();
    clone = mkdtempSync(join(tmpdir(), "fresh-clone-"));
    execFileSync("git", ["clone", "--quiet", repoRoot, clone], { stdio: "inherit" });
    const install = spawnSync(
      "pnpm",
      ["install", "--frozen-lockfile", "--prefer-offline", "--reporter=append-only"],
      { cwd: clone, encoding: "utf8", timeout: 300_000 },
    );
    installOutput = `${install.stdout}${install.stderr}`;
    assert.equal(install.status, 0, `pnpm install failed:\n${installOutput}`);
  });

  test("a fresh install warns about no command it cannot link (every bin exists before a build)", () => {
    assert.doesNotMatch(installOutput, /Failed to create bin/, installOutput);
  });
  after(() => {
    // If the test failed half-way, leave nothing running.
    if (start?.pid && start.exitCode === null && start.signalCode === null) {
      try {
        process.kill(-start.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    if (clone) rmSync(clone, { recursive: true, force: true });
  });

  test("pnpm start builds, starts three services, shows every method working, and stops cleanly on Ctrl-C", async () => {
    // Its own process group, so Ctrl-C can be sent to all of it as a terminal would.
    start = spawn("pnpm", ["start"], {
      cwd: clone,
      detached: true,
      env: { ...process.env, LOG_LEVEL: "" },
    });
    start.stdout?.on("data", (chunk) => (output += chunk));
    start.stderr?.on("data", (chunk) => (output += chunk));
    const exited = new Promise<void>((resolve) => start.once("exit", () => resolve()));

    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 240_000);
      const check = () => {
        if (output.includes("Press Ctrl-C to stop.")) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      start.stdout?.on("data", check);
      void exited.then(() => resolve(false));
    });
    assert.ok(ready, `pnpm start did not become ready:\n${output}`);

    for (const section of [
      "== ListFeatures (server streaming)",
      "== GetFeature (unary)",
      "== RecordRoute (client streaming), 1000 points",
      "Route: 1000 points",
      "== RouteChat (bidi streaming)",
      "earlier note at",
      "== DescribeArea",
      "== GetStats (unary)",
      "Routes recorded: 1 (1000 points",
      "== WatchStats (server streaming), first update",
    ]) {
      assert.ok(output.includes(section), `the demo shows "${section}":\n${output}`);
    }
    const ports = [...output.matchAll(/listening on http:\/\/127\.0\.0\.1:(\d+)/g)].map((match) =>
      Number(match[1]),
    );
    assert.equal(ports.length, 3, `three services print where they listen:\n${output}`);
    for (const port of ports)
      assert.equal(await connectError(port), undefined, `port ${port} is open while running`);

    process.kill(-(start.pid as number), "SIGINT");
    await exited;
    assert.match(output, /stopped; nothing left running/);
    for (const port of ports)
      assert.equal(await connectError(port), "ECONNREFUSED", `port ${port} is closed after Ctrl-C`);
  });
});
