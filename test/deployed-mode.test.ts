// TEST_TARGET=deployed without the cloud: a local stack with auth on plays the deployed one, and
// `pnpm test:deployed` (scripts/test-deployed.mjs) runs the suite against its gateway. The suite
// gets its ID tokens as a runner would, from google-auth-library's Application Default
// Credentials: here the metadata protocol of the stack's token authority, as the local client
// identity (GCE_METADATA_HOST). The stack's stats are not empty when the suite starts, as a
// deployed stack's would not be.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { localProject, type Stack, startStack } from "@cloudrun-grpc/local-stack";
import { createStatsClient, type stats } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { deadline, targetOf, unary } from "./support/grpc.js";
import {
  describeLocalOnly,
  internalServices,
  parseTarget,
  startsProcesses,
} from "./support/target.js";

describe("TEST_TARGET and GATEWAY_URL", () => {
  test("local by default; cloud-run needs nothing more; deployed needs GATEWAY_URL, an http(s) origin", () => {
    assert.deepEqual(parseTarget({}), { kind: "local" });
    assert.deepEqual(parseTarget({ TEST_TARGET: "cloud-run" }), { kind: "cloud-run" });
    assert.deepEqual(parseTarget({ TEST_TARGET: "local", GATEWAY_URL: "https://x.run.app" }), {
      kind: "local",
    });
    assert.deepEqual(
      parseTarget({ TEST_TARGET: "deployed", GATEWAY_URL: "https://gateway-abc-uc.a.run.app/" }),
      { kind: "deployed", gatewayUrl: "https://gateway-abc-uc.a.run.app" },
    );
    const refused: [Record<string, string>, RegExp][] = [
      [{ TEST_TARGET: "deployed" }, /^TEST_TARGET=deployed needs GATEWAY_URL/],
      [{ TEST_TARGET: "deployed", GATEWAY_URL: "" }, /^TEST_TARGET=deployed needs GATEWAY_URL/],
      [{ TEST_TARGET: "deployed", GATEWAY_URL: "gateway.run.app" }, /^GATEWAY_URL must be a URL/],
      [
        { TEST_TARGET: "deployed", GATEWAY_URL: "ftp://gateway.run.app" },
        /^GATEWAY_URL must use http: \(h2c\) or https: \(TLS\), got "ftp:"/,
      ],
      [
        { TEST_TARGET: "deployed", GATEWAY_URL: "https://gateway.run.app/v1" },
        /^GATEWAY_URL must be an origin without path/,
      ],
      [
        { TEST_TARGET: "cloud" },
        /^TEST_TARGET must be "local", "cloud-run" or "deployed", got "cloud"/,
      ],
    ];
    for (const [env, message] of refused) {
      assert.throws(() => parseTarget(env), { message }, JSON.stringify(env));
    }
  });
});

const script = fileURLToPath(new URL("../scripts/test-deployed.mjs", import.meta.url));

/** Runs scripts/test-deployed.mjs; kills it with all it started after `timeoutMs`. */
function testDeployed(
  env: NodeJS.ProcessEnv,
  args: string[] = [],
  timeoutMs = 30_000,
): Promise<{ code: number | string; output: string; stdout: string }> {
  return new Promise((resolve) => {
    // Its own process group, so a run past its time is ended with every process under it.
    const child = spawn(process.execPath, [script, ...args], { env, detached: true });
    let stdout = "";
    let output = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      output += chunk;
    });
    child.stderr.on("data", (chunk) => (output += chunk));
    const timer = setTimeout(() => {
      output += `\n[killed after ${timeoutMs} ms]`;
      try {
        process.kill(-(child.pid as number), "SIGKILL");
      } catch {
        // already gone
      }
    }, timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? "unknown", output, stdout });
    });
  });
}

/**
 * This process's environment without what would change the child's run: node --test marks its
 * own test processes with NODE_TEST_CONTEXT (a node --test that inherits it reports as one of
 * them), and the target is the child's to be given.
 */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const {
    NODE_TEST_CONTEXT: _context,
    TEST_TARGET: _target,
    GATEWAY_URL: _url,
    ...env
  } = process.env;
  return { ...env, ...extra };
}

interface TapResult {
  name: string;
  ok: boolean;
  /** The reason, when skipped. */
  skip: string | undefined;
  children: TapResult[];
}

/** node:test's TAP: results nested by indentation (4 spaces a level), and the summary counts. */
function parseTap(text: string): { results: TapResult[]; summary: Record<string, number> } {
  // A result's line comes after its children's, so children wait here by depth.
  const pending: TapResult[][] = [[]];
  const summary: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const result = /^((?: {4})*)(ok|not ok) \d+ - (.*?)(?:( # SKIP)(?: (.*))?)?$/.exec(line);
    if (result) {
      const depth = (result[1] as string).length / 4;
      const siblings = pending[depth] ?? [];
      pending[depth] = siblings;
      siblings.push({
        name: (result[3] as string).replace(/\\(.)/g, "$1"),
        ok: result[2] === "ok",
        skip: result[4] ? (result[5] ?? "") : undefined,
        children: pending[depth + 1] ?? [],
      });
      pending[depth + 1] = [];
      continue;
    }
    const count = /^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$/.exec(line);
    if (count) summary[count[1] as string] = Number(count[2]);
  }
  return { results: pending[0] ?? [], summary };
}

const leaves = (results: TapResult[]): TapResult[] =>
  results.flatMap((result) => (result.children.length ? leaves(result.children) : [result]));

describeLocalOnly("pnpm test:deployed", () => {
  let stack: Stack;
  let tools: string;
  before(async () => {
    stack = await startStack();
    tools = mkdtempSync(join(tmpdir(), "fake-terraform-"));
  });
  after(async () => {
    await stack?.stop();
    if (tools) rmSync(tools, { recursive: true, force: true });
  });

  test("without GATEWAY_URL it reads terraform's gateway_url, and says what is wrong when it cannot", async () => {
    // PATH holds only a stand-in for terraform (or nothing), which notes what it was asked.
    const asked = join(tools, "asked");
    const terraform = (body: string) => {
      const file = join(tools, "terraform");
      writeFileSync(file, `#!/bin/sh\necho "$@" > "${asked}"\n${body}\n`);
      chmodSync(file, 0o755);
    };
    const run = async () => {
      const result = await testDeployed(childEnv({ PATH: tools }));
      assert.equal(result.code, 2, result.output);
      return result.output;
    };

    rmSync(join(tools, "terraform"), { force: true });
    assert.match(await run(), /^test:deployed: terraform is not on PATH\. .*set GATEWAY_URL/m);

    terraform("echo '{}'");
    assert.match(
      await run(),
      /^test:deployed: terraform -chdir=infra output -json has no gateway_url \(outputs: none\)\. Deploy the stack first/m,
    );
    assert.equal(readFileSync(asked, "utf8").trim(), "-chdir=infra output -json");

    terraform(`echo '{"route_url":{"value":"https://route.run.app","type":"string"}}'`);
    assert.match(await run(), /has no gateway_url \(outputs: route_url\)/);

    terraform('echo "Error: Backend initialization required" >&2; exit 1');
    assert.match(
      await run(),
      /terraform -chdir=infra output -json failed \(1\):\nError: Backend initialization required\nIs infra\/ initialised/,
    );

    terraform("echo 'not json'");
    assert.match(await run(), /did not print JSON/);
  });

  test("a GATEWAY_URL that is not an http(s) origin stops it before any test, with one message", async () => {
    const result = await testDeployed(childEnv({ GATEWAY_URL: "https://gateway.run.app/v1" }));
    assert.equal(result.code, 2, result.output);
    assert.match(result.output, /^test:deployed: GATEWAY_URL must be an origin without path/m);
    assert.doesNotMatch(result.output, /--test/, "node --test never ran");
  });

  test("runs the suite against the gateway with ADC ID tokens: the gateway tests pass, the local-only files are reported skipped", {
    timeout: 240_000,
  }, async () => {
    const auth = stack.auth;
    assert.ok(auth, "the stack runs with auth");
    await seedStats(stack);

    const { code, output, stdout } = await testDeployed(
      childEnv({
        GATEWAY_URL: stack.gateway.url,
        GCE_METADATA_HOST: auth.authority.metadataHosts.client as string,
      }),
      ["--test-reporter=tap"],
      200_000,
    );
    const { results, summary } = parseTap(stdout);
    const failed = leaves(results).filter((result) => !result.ok);
    assert.equal(
      code,
      0,
      `failed: ${failed.map((result) => result.name).join("; ") || "none reported"}\n${output.slice(-3000)}`,
    );
    assert.match(output, new RegExp(`the gateway at ${stack.gateway.url} \\(GATEWAY_URL\\)`));
    const suite = (name: string) => {
      const found = results.find((result) => result.name === name);
      assert.ok(found, `the run reports "${name}"`);
      return found;
    };

    // gateway.test.ts: 11 tests, all but the 2 that call route and stats directly.
    const gatewayTests = suite("gateway → route → stats, end to end").children;
    const passed = gatewayTests.filter((result) => result.ok && result.skip === undefined);
    const skipped = gatewayTests.filter((result) => result.skip !== undefined);
    assert.equal(passed.length, 9, passed.map((result) => result.name).join("\n"));
    assert.equal(gatewayTests.length, passed.length + skipped.length);
    assert.deepEqual(
      skipped.map((result) => [result.name, result.skip]),
      [
        [
          "each service answers grpc.health.v1 SERVING for the server and its service name, without a token",
          internalServices,
        ],
        [
          "each service lists its own service through server reflection, to an allowed caller only",
          internalServices,
        ],
      ],
    );
    for (const method of [
      "GetFeature",
      "ListFeatures",
      "RecordRoute",
      "RouteChat",
      "DescribeArea",
      "WatchStats",
    ]) {
      assert.ok(
        passed.some((result) => result.name.startsWith(method)),
        `${method} passed deployed`,
      );
    }
    assert.ok(passed.some((result) => result.name.startsWith("stats hold exactly")));
    const frontDoor = suite("the gateway's front door").children;
    assert.equal(frontDoor.length, 1);
    assert.ok(frontDoor.every((result) => result.ok && result.skip === undefined));

    // Every suite that starts or kills processes: reported, skipped, with the reason.
    for (const name of [
      "invoker-scoped auth across the services",
      "the routeguide CLI",
      "bad configuration stops a service with a clear message",
      "flow control through the gateway",
      "limits on one call's size and work",
      "aborting startStack",
      "a new user's first command on a fresh clone",
      "graceful shutdown on SIGTERM",
      "stats down",
      "peers over https:// (TLS on a Cloud Run-like front end)",
      "pnpm test:deployed",
    ]) {
      const result = suite(name);
      assert.deepEqual(
        { ok: result.ok, skip: result.skip, children: result.children.length },
        { ok: true, skip: startsProcesses, children: 0 },
        name,
      );
    }

    // The summary counts what the TAP reports: nothing failed, and the passes are real ones.
    const all = leaves(results);
    assert.equal(summary.fail, 0);
    assert.ok((summary.pass ?? 0) > passed.length);
    assert.equal(
      summary.pass,
      all.filter((result) => result.ok && result.skip === undefined).length,
    );
    assert.equal(summary.skipped, all.filter((result) => result.skip !== undefined).length);

    // The suite's tokens came through google-auth-library from the metadata server, as the
    // local client identity, for the gateway's URL.
    assert.ok(
      (auth.authority.mintedTokens.get(`${auth.emails.client} ${stack.gateway.url}`) ?? 0) >= 1,
      "the client identity's ID tokens for the gateway were minted",
    );
  });
});

/**
 * What a deployed stack's stats hold before a run: look-ups at a place the gateway tests look
 * up too and at one they do not, a route, from the gateway (as counted before end users were
 * passed on), from the suite's own end client (an earlier run) and from another caller. Sent
 * to stats as route sends its reports, with route's token.
 */
async function seedStats(stack: Stack): Promise<void> {
  const auth = stack.auth;
  assert.ok(auth);
  const features = JSON.parse(
    readFileSync(new URL("../services/route/data/features.json", import.meta.url), "utf8"),
  ) as { name: string; location: { latitude: number; longitude: number } }[];
  const first = features[0];
  assert.ok(first);
  const someoneElse = `someone-else@${localProject}.iam.gserviceaccount.com`;
  const lookup = (caller: string, feature: { name: string; location: object }) => ({
    id: randomUUID(),
    caller,
    featureLookedUp: { feature },
  });
  const events: stats.Event[] = [
    ...Array.from({ length: 3 }, () => lookup(someoneElse, first)),
    ...Array.from({ length: 2 }, () => lookup(auth.emails.gateway, first)),
    lookup(auth.emails.gateway, { name: "", location: { latitude: 5, longitude: 5 } }),
    lookup(auth.emails.client, first),
    {
      id: randomUUID(),
      caller: someoneElse,
      routeRecorded: {
        summary: { pointCount: 7, featureCount: 1, distanceMeters: 1234, elapsedSeconds: 3 },
      },
    },
  ];
  const client = createStatsClient(targetOf(stack.stats.url), grpc.credentials.createInsecure());
  try {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${await auth.tokenFor("route", stack.stats.url)}`);
    await unary((done) => client.RecordEvents({ events }, metadata, deadline(), done));
  } finally {
    client.close();
  }
}
