// `pnpm bench --gateway <url>` (bench/remote.ts) run for real, as a user runs it against their
// deployment: here against the gateway's local Cloud Run front end (https, the stack's own CA,
// tokens from the local authority's metadata server through google-auth-library), with h2load
// as the load. Its rows must come out with calls and no errors, in the table and in
// remote.json, and the gateway must have logged those calls as OK; a token the front end
// refuses and a URL with a path must end it at once with one clear line.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type CloudRunStack, startCloudRunStack } from "@cloudrun-grpc/local-stack";
import { until } from "@cloudrun-grpc/test-support";
import { describeLocalOnly } from "./support/target.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const methods = ["GetFeature", "ListFeatures", "RecordRoute"] as const;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** `pnpm bench` as its script runs it (node --import tsx bench/main.ts), on this Node. */
async function bench(args: string[], env: Record<string, string>): Promise<Run> {
  const started = Date.now();
  const child = spawn(process.execPath, ["--import", "tsx", "bench/main.ts", ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  return { code, stdout, stderr, ms: Date.now() - started };
}

interface RemoteRow {
  method: string;
  concurrency: number;
  rate: number;
  calls: number;
  errors: number;
}

describeLocalOnly("pnpm bench --gateway against the local Cloud Run front end", () => {
  let stack: CloudRunStack;
  let env: Record<string, string>;
  const resultsDir = mkdtempSync(join(tmpdir(), "bench-gateway-"));
  /** The `rpc` of the gateway instances' call lines (runtime's rpc-log.ts). */
  const gatewayCalls: { method?: string; code?: string; side?: string }[] = [];

  before(async () => {
    const h2load = spawnSync("h2load", ["--version"], { encoding: "utf8" });
    assert.ok(
      !h2load.error && h2load.status === 0,
      "h2load is missing: pnpm bench --gateway needs it (apt-get install nghttp2-client)",
    );
    const quiet = () => {};
    stack = await startCloudRunStack({
      // A call line for every OK call (the default keeps one trace in ten): the test counts them.
      env: { all: { LOG_LEVEL: "info", LOG_FORMAT: "json", LOG_RPC_SAMPLE_RATE: "1" } },
      logger: { info: quiet, warn: quiet, error: quiet },
      onLine: (service, _instance, line) => {
        if (service !== "gateway" || !line.startsWith("{")) return;
        const call = (JSON.parse(line) as { rpc?: (typeof gatewayCalls)[number] }).rpc;
        if (call) gatewayCalls.push(call);
      },
    });
    env = {
      BENCH_SECONDS: "1",
      BENCH_CONCURRENCY: "4",
      GCE_METADATA_HOST: stack.auth.authority.metadataHosts.client as string,
      GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: stack.caFile,
    };
  });

  after(async () => {
    await stack?.stop();
    rmSync(resultsDir, { recursive: true, force: true });
  });

  test("measures GetFeature, ListFeatures and RecordRoute through the front end: calls, no errors, remote.json", async () => {
    const run = await bench(["--gateway", stack.urls.gateway], {
      ...env,
      BENCH_RESULTS_DIR: resultsDir,
    });
    assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
    // The token's source and the TLS check it made itself, h2load not verifying.
    assert.match(
      run.stdout,
      /token: an ID token for https:\/\/localhost:\d+ from the metadata server/,
    );
    assert.ok(
      run.stdout.includes(`verified against ${stack.caFile}; h2load does not verify certificates`),
      run.stdout,
    );
    for (const method of methods) {
      const line = run.stdout
        .split("\n")
        .find((candidate) => candidate.startsWith(`| ${method}, remote gateway, auth on | 4 |`));
      assert.ok(line, `no ${method} row in:\n${run.stdout}`);
      const cells = line.split("|").map((cell) => cell.trim());
      // | row | c | rate /s | p50 | p90 | p99 | errors | h2load µs/call |
      assert.ok(Number(cells[3]?.split(" ")[0]?.replaceAll(",", "")) > 0, line);
      assert.equal(cells[7], "0", line);
    }

    const file = join(resultsDir, "remote.json");
    const written = JSON.parse(readFileSync(file, "utf8")) as {
      gateway: string;
      h2loadVerifiesCertificates: boolean;
      tls: { roots: string };
      problems: string[];
      rows: RemoteRow[];
    };
    assert.equal(written.gateway, stack.urls.gateway);
    assert.equal(written.h2loadVerifiesCertificates, false);
    assert.equal(written.tls.roots, stack.caFile);
    assert.deepEqual(written.problems, []);
    assert.deepEqual(
      written.rows.map((row) => [row.method, row.concurrency, row.errors]),
      methods.map((method) => [method, 4, 0]),
    );
    for (const row of written.rows) {
      assert.ok(row.rate > 0 && row.calls > 0, JSON.stringify(row));
      // Each measured call really went through the gateway and ended OK there (h2load sees only
      // HTTP statuses): the gateway logged at least that many OK calls of the method.
      await until(
        () =>
          gatewayCalls.filter(
            (call) =>
              call.side === "server" &&
              call.code === "OK" &&
              call.method?.endsWith(`/${row.method}`) === true,
          ).length >= row.calls,
        `the gateway logged ${row.calls} OK ${row.method} calls`,
      );
    }
  });

  test("a token the front end refuses ends the bench at once with one line saying why", async () => {
    const refusedDir = join(resultsDir, "refused");
    const cases = [
      {
        // A real token of the local authority, for another audience.
        token: await stack.auth.tokenFor("client", "https://elsewhere.example"),
        line: /^pnpm bench --gateway: 401 from https:\/\/localhost:\d+: the token does not verify there/m,
      },
      {
        // route's own identity holds no invoker role on the gateway.
        token: await stack.auth.tokenFor("route", stack.urls.gateway),
        line: new RegExp(
          `^pnpm bench --gateway: 403: ${stack.auth.emails.route.replaceAll(".", "\\.")} is not an invoker of https://localhost:\\d+`,
          "m",
        ),
      },
    ];
    for (const { token, line } of cases) {
      const run = await bench(["--gateway", stack.urls.gateway, "--token", token], {
        ...env,
        BENCH_RESULTS_DIR: refusedDir,
      });
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, line);
      assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
      assert.ok(run.ms < 15_000, `took ${run.ms} ms`);
      assert.equal(existsSync(join(refusedDir, "remote.json")), false);
    }
  });

  test("a gateway URL with a path, or with a section that needs local baselines, is refused with exit 2", async () => {
    const withPath = await bench(
      ["--gateway", `${stack.urls.gateway}/gateway.v1.GatewayService`],
      env,
    );
    assert.equal(withPath.code, 2, withPath.stderr);
    assert.match(withPath.stderr, /give the gateway's origin only \(https:\/\/localhost:\d+\)/);
    const withBaselines = await bench(["--gateway", stack.urls.gateway, "long-streams"], env);
    assert.equal(withBaselines.code, 2, withBaselines.stderr);
    assert.match(withBaselines.stderr, /--gateway runs the gateway's unary and streams rows only/);
  });
});
