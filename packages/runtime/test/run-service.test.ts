// runService as a process: a stop signal in any phase (before the service is built, while it
// starts, while it serves) ends in a drain and exit 0, never in death by the signal; and the
// last log lines are all written, whole and in order, even when libuv's thread pool (where
// asynchronous writes run) is busy at that moment. The service is a fixture (see
// fixtures/signalled-service.ts) that waits where a test wants to send the signal.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const fixturePath = fileURLToPath(new URL("./fixtures/signalled-service.ts", import.meta.url));
const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
});

/** Every stdout line must be a JSON object; its messages, in order. */
function messages(stdout: string): string[] {
  return stdout
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const entry = JSON.parse(line) as { message?: unknown };
      assert.equal(typeof entry.message, "string", line);
      return entry.message as string;
    });
}

function startFixture(fixture: string) {
  const child = spawn(process.execPath, ["--import", "tsx", fixturePath], {
    env: { ...process.env, FIXTURE: fixture, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  children.push(child);
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (chunk) => {
    stdout += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  /** Resolves once `read()` has `text`; fails if the process exits first or it takes 20 s. */
  const waitFor = async (read: () => string, text: string) => {
    const until = Date.now() + 20_000;
    while (!read().includes(text)) {
      if (child.exitCode !== null || child.signalCode !== null) {
        assert.fail(`exited before "${text}": ${stdout}\n${stderr}`);
      }
      if (Date.now() > until) assert.fail(`no "${text}" in 20 s: ${stdout}\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  return {
    child,
    exited,
    stdout: () => stdout,
    waitForStdout: (text: string) => waitFor(() => stdout, text),
    waitForStderr: (text: string) => waitFor(() => stderr, text),
  };
}

describe("runService stops on a signal in every phase", { timeout: 60_000 }, () => {
  test("signalled before runService runs (while the modules load): nothing is built, exit 0", async () => {
    const service = startFixture("early");
    await service.waitForStderr("caught");
    service.child.kill("SIGTERM");
    service.child.stdin?.end("go on\n");
    assert.deepEqual(await service.exited, [0, null]);
    assert.deepEqual(messages(service.stdout()), ["stopping", "stopped"]);
  });

  test("signalled while the service starts: stopped once started, exit 0, a second signal ignored", async () => {
    const service = startFixture("slow-factory");
    await service.waitForStderr("factory running");
    service.child.kill("SIGTERM");
    // The signal is taken at once, while the factory still runs.
    await service.waitForStdout('"stopping"');
    // A second signal (Ctrl-C after the stack's SIGTERM) changes nothing.
    service.child.kill("SIGINT");
    service.child.stdin?.end("go on\n");
    assert.deepEqual(await service.exited, [0, null]);
    assert.deepEqual(messages(service.stdout()), ["stopping", "listening", "draining", "stopped"]);
  });

  test("signalled while serving, the thread pool busy: every line written, in order", async () => {
    const service = startFixture("busy-pool");
    await service.waitForStdout('"listening"');
    service.child.kill("SIGTERM");
    assert.deepEqual(await service.exited, [0, null]);
    assert.deepEqual(messages(service.stdout()), ["listening", "stopping", "draining", "stopped"]);
  });
});
