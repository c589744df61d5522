// The CLI against a running stack: every command, readable output, clear errors.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { point, recordRoute, routeChat } from "@cloudrun-grpc/cli";
import { type Stack, startStack } from "@cloudrun-grpc/local-stack";
import * as grpc from "@grpc/grpc-js";
import { stackGatewayClient } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const cliEntry = new URL("../packages/cli/dist/main.js", import.meta.url).pathname;

// The CLI gets its ID token as a user's would: google-auth-library asks the metadata server,
// here the stack's local token authority, as the local client identity.
let cliEnv: Record<string, string> = { PATH: process.env.PATH ?? "" };

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliEntry, ...args], { env: cliEnv });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describeLocalOnly("the routeguide CLI", () => {
  let stack: Stack;
  let gateway: string[];

  // Small limits (the demo sends 1000 points and 3 notes), so that long streams fail early.
  const maxRoutePoints = 1000;
  const maxChatNotes = 10;

  before(async () => {
    stack = await startStack({
      env: {
        route: { ROUTE_MAX_POINTS: String(maxRoutePoints), CHAT_MAX_NOTES: String(maxChatNotes) },
      },
    });
    gateway = ["--gateway", stack.gateway.url, "--timeout", "20"];
    cliEnv = { ...cliEnv, GCE_METADATA_HOST: stack.auth?.authority.metadataHosts.client as string };
  });
  after(async () => {
    await stack?.stop();
  });

  test("demo calls every gateway method", async () => {
    const { code, stdout, stderr } = await cli([...gateway, "demo"]);
    assert.equal(code, 0, stderr);
    for (const method of [
      "ListFeatures",
      "GetFeature",
      "RecordRoute",
      "RouteChat",
      "DescribeArea",
      "GetStats",
      "WatchStats",
    ]) {
      assert.match(stdout, new RegExp(`== ${method} `), `demo runs ${method}`);
    }
  });

  test("each command prints readable results", async () => {
    const feature = await cli([...gateway, "list-features", "40", "-75", "41", "-74"]);
    assert.equal(feature.code, 0, feature.stderr);
    assert.match(feature.stdout, /150 features in the rectangle/);
    const first = feature.stdout.match(/^\s+1\. (.+) \((-?[\d.]+), (-?[\d.]+)\)$/m);
    assert.ok(first, feature.stdout);
    const [, name, lat, lng] = first;

    const got = await cli([...gateway, "get-feature", lat as string, lng as string]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout.trim(), `Feature at ${lat}, ${lng}: ${name}`);

    const route = await cli([...gateway, "record-route", "--points", "50"]);
    assert.equal(route.code, 0, route.stderr);
    assert.match(route.stdout, /sent 50\/50 points/);
    assert.match(route.stdout, /^Route: 50 points, \d+ features passed, \d+ m, \d+ s$/m);

    const chat = await cli([...gateway, "route-chat", "40.5", "-74.5", "hello", "again"]);
    assert.equal(chat.code, 0, chat.stderr);
    assert.match(chat.stdout, /earlier note at 40\.5000, -74\.5000: hello/);
    assert.match(chat.stdout, /Chat: sent 2 notes, received 1 earlier notes/);

    const stats = await cli([...gateway, "get-stats", "--top", "1"]);
    assert.equal(stats.code, 0, stats.stderr);
    assert.match(stats.stdout, /^Feature look-ups: [1-9]\d*$/m);
    assert.match(stats.stdout, /^Routes recorded: [1-9]/m);
    // Counted per end client: the CLI's own identity, not the gateway's.
    const callers = stats.stdout.split("\n").filter((line) => line.startsWith("  caller "));
    assert.deepEqual(
      callers.map((line) => line.split(":")[0]),
      [`  caller ${stack.auth?.emails.client}`],
      stats.stdout,
    );
    assert.match(callers[0] ?? "", /: [1-9]\d* routes, [1-9]\d* look-ups$/);

    const watch = await cli([...gateway, "watch-stats", "--updates", "1"]);
    assert.equal(watch.code, 0, watch.stderr);
    assert.match(watch.stdout, /^-- update 1 \(version \d+\)$/m);

    const area = await cli([...gateway, "describe-area", "40", "-75", "41", "-74", "--top", "1"]);
    assert.equal(area.code, 0, area.stderr);
    assert.match(area.stdout, /^Area: 150 named features, [1-9]\d* look-ups inside$/m);
  });

  test("--idempotency-key: a get-feature or record-route repeated with one key counts once", async () => {
    const totals = async () => {
      const stats = await cli([...gateway, "get-stats", "--top", "1"]);
      assert.equal(stats.code, 0, stats.stderr);
      const routes = Number(/Routes recorded: (\d+)/.exec(stats.stdout)?.[1]);
      const lookups = Number(/Feature look-ups: (\d+)/.exec(stats.stdout)?.[1]);
      return { routes, lookups };
    };
    const settled = async (expected: { routes: number; lookups: number }) => {
      let now = await totals();
      for (let tries = 0; tries < 50 && now.lookups < expected.lookups; tries += 1) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        now = await totals();
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
      return totals();
    };
    const before = await totals();
    const key = `cli-${Date.now()}`;
    for (let i = 0; i < 3; i += 1) {
      const looked = await cli([
        ...gateway,
        "--idempotency-key",
        key,
        "get-feature",
        "40.5",
        "-74.5",
      ]);
      assert.equal(looked.code, 0, looked.stderr);
      const route = await cli([
        ...gateway,
        "--idempotency-key",
        key,
        "record-route",
        "--points",
        "5",
      ]);
      assert.equal(route.code, 0, route.stderr);
    }
    // Without a key each call is its own: one more look-up.
    assert.equal((await cli([...gateway, "get-feature", "40.5", "-74.5"])).code, 0);
    const after = await settled({ routes: before.routes + 1, lookups: before.lookups + 2 });
    assert.deepEqual(after, { routes: before.routes + 1, lookups: before.lookups + 2 });

    const demo = await cli([...gateway, "--idempotency-key", key, "demo"]);
    assert.equal(demo.code, 2);
    assert.match(demo.stderr, /--idempotency-key goes with get-feature or record-route/);
    const bad = await cli([
      ...gateway,
      "--idempotency-key",
      "two words",
      "get-feature",
      "40",
      "-74",
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--idempotency-key must be 1 to 128 visible ASCII characters/);
  });

  test("bad arguments exit 2 with the usage; a failed call exits 1 with its status", async () => {
    const unknown = await cli([...gateway, "fly"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "fly"/);
    assert.match(unknown.stderr, /usage: routeguide/);

    const notANumber = await cli([...gateway, "get-feature", "north", "-74"]);
    assert.equal(notANumber.code, 2);
    assert.match(notANumber.stderr, /LAT must be a number of degrees, got "north"/);

    const badUrl = await cli(["--gateway", "ftp://x", "get-stats"]);
    assert.equal(badUrl.code, 2);
    assert.match(badUrl.stderr, /--gateway must use http: \(h2c\) or https: \(TLS\)/);

    const tooLong = await cli([...gateway, "record-route", "--points", String(maxRoutePoints + 1)]);
    assert.equal(tooLong.code, 1);
    assert.match(
      tooLong.stderr,
      /record-route failed: RESOURCE_EXHAUSTED: route: a route may have at most 1000 points/,
    );
  });

  test("coordinates off the map exit 2 before any call (protobuf would wrap them)", async () => {
    // 429.4967296° is 2^32 in E7: encoded, it would wrap to latitude 0.
    const wrapping = await cli([...gateway, "get-feature", "429.4967296", "0"]);
    assert.equal(wrapping.code, 2);
    assert.match(wrapping.stderr, /LAT must be from -90 to 90 degrees, got "429\.4967296"/);
    assert.equal(wrapping.stdout, "");

    const cases: [string[], RegExp][] = [
      [["get-feature", "91", "0"], /LAT must be from -90 to 90 degrees, got "91"/],
      [["get-feature", "-90.0001", "0"], /LAT must be from -90 to 90 degrees, got "-90\.0001"/],
      [["get-feature", "0", "180.5"], /LNG must be from -180 to 180 degrees, got "180\.5"/],
      [["get-feature", "0", "-429.4967296"], /LNG must be from -180 to 180 degrees/],
      [["get-feature", "Infinity", "0"], /LAT must be a number of degrees, got "Infinity"/],
      [
        ["list-features", "40", "-75", "41", "-181"],
        /LNG2 must be from -180 to 180 degrees, got "-181"/,
      ],
      [["describe-area", "-95", "0", "1", "1"], /LAT1 must be from -90 to 90 degrees, got "-95"/],
      [["route-chat", "0", "200", "hi"], /LNG must be from -180 to 180 degrees, got "200"/],
    ];
    for (const [args, says] of cases) {
      const result = await cli([...gateway, ...args]);
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, says);
      assert.match(result.stderr, /usage: routeguide/);
    }

    // The edges themselves are valid points.
    const corner = await cli([...gateway, "get-feature", "-90", "180"]);
    assert.equal(corner.code, 0, corner.stderr);
    assert.equal(corner.stdout.trim(), "No named feature at -90.0000, 180.0000");
  });

  test("--timeout must be a whole number of seconds from 1", async () => {
    for (const timeout of ["0", "-1", "1.5", "86401"]) {
      const result = await cli(["--gateway", stack.gateway.url, "--timeout", timeout, "get-stats"]);
      assert.equal(result.code, 2, `--timeout ${timeout}: ${result.stderr}`);
      assert.match(
        result.stderr,
        new RegExp(`--timeout must be a whole number from 1 to 86400, got "${timeout}"`),
      );
    }
    const one = await cli(["--gateway", stack.gateway.url, "--timeout", "1", "get-stats"]);
    assert.equal(one.code, 0, one.stderr);
  });

  test("a stream that fails while the writer waits for 'drain' rejects with the call's error", {
    timeout: 60_000,
  }, async () => {
    // Megabytes of messages: past grpc-js's per-call buffer, writes wait for 'drain', which
    // never comes once the call has failed.
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    const client = await stackGatewayClient(stack);
    try {
      const lines: string[] = [];
      const ctx = { client, out: (line: string) => lines.push(line), timeoutMs: 20_000 };
      const at = point(40.5, -74.5);
      const notes = Array.from({ length: 3000 }, (_, index) => ({
        location: at,
        message: `${index} `.padEnd(1000, "x"),
      }));
      await assert.rejects(routeChat(ctx, notes), (error: grpc.ServiceError) => {
        assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED, error.message);
        assert.match(error.details, /a chat may have at most 10 notes/);
        return true;
      });
      const sent = lines.filter((line) => line.startsWith("  > ")).length;
      assert.ok(sent < notes.length, `the writer stopped when the call failed (sent ${sent})`);

      lines.length = 0;
      const points = Array.from({ length: 300_000 }, () => at);
      await assert.rejects(recordRoute(ctx, points), (error: grpc.ServiceError) => {
        assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED, error.message);
        assert.match(error.details, /a route may have at most 1000 points/);
        return true;
      });
      assert.ok(!lines.includes("  sent 300000/300000 points"), "the writer stopped");

      // Rejections nobody handles are reported after the current turn: give them one.
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(unhandled, []);
    } finally {
      client.close();
      process.off("unhandledRejection", onUnhandled);
    }
  });
});
