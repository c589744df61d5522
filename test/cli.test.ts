// The CLI against a running stack: every command, readable output, clear errors.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { point, recordRoute, routeChat } from "@cloudrun-grpc/cli";
import { freePort, type Stack, startStack } from "@cloudrun-grpc/local-stack";
import { createGatewayClient, type gateway } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import {
  connectError,
  deadline,
  failure,
  reflectedServices,
  stackGatewayClient,
  targetOf,
  unary,
} from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const cliEntry = new URL("../packages/cli/dist/main.js", import.meta.url).pathname;
const cliVersion = (
  JSON.parse(readFileSync(new URL("../packages/cli/package.json", import.meta.url), "utf8")) as {
    version: string;
  }
).version;

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

/** Each line of `stdout` as JSON; fails the test on a line that is not one JSON object. */
function jsonLines<Message = Record<string, unknown>>(stdout: string): Message[] {
  const lines = stdout.split("\n").filter((line) => line !== "");
  return lines.map((line) => {
    const value = JSON.parse(line) as unknown;
    assert.ok(value !== null && typeof value === "object" && !Array.isArray(value), line);
    return value as Message;
  });
}

/** A JWT's claims, decoded (not verified: the gateway verifies). */
function claimsOf(token: string): Record<string, unknown> {
  const [, payload] = token.split(".");
  return JSON.parse(Buffer.from(payload ?? "", "base64url").toString("utf8"));
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

  test("--help lists every command and option and names GCE_METADATA_HOST; each command has its own", async () => {
    const help = await cli(["--help"]);
    assert.equal(help.code, 0, help.stderr);
    const [first = ""] = help.stdout.split("\n");
    for (const option of ["--gateway", "--timeout", "--token", "--no-token", "--json"])
      assert.ok(
        first.includes(`[${option}`) || first.includes(`| ${option}`),
        `${option}: ${first}`,
      );
    assert.match(help.stdout, /GCE_METADATA_HOST/);
    assert.match(help.stdout, /--version/);
    const commands = [
      "get-feature",
      "list-features",
      "record-route",
      "route-chat",
      "get-stats",
      "watch-stats",
      "describe-area",
      "demo",
      "token",
    ];
    for (const command of commands) {
      assert.match(help.stdout, new RegExp(`^  ${command}\\b`, "m"), command);
      // Both spellings of a command's help, from the same text.
      const own = await cli([command, "--help"]);
      assert.equal(own.code, 0, own.stderr);
      assert.ok(
        own.stdout.startsWith(`usage: routeguide [options] ${command}`),
        own.stdout.split("\n")[0],
      );
      assert.match(own.stdout, /GCE_METADATA_HOST/);
      assert.equal((await cli(["help", command])).stdout, own.stdout);
    }
    const feature = await cli(["get-feature", "--help"]);
    assert.match(feature.stdout, /--idempotency-key KEY/);
    assert.match((await cli(["watch-stats", "-h"])).stdout, /--for SECONDS/);

    const version = await cli(["--version"]);
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout, `routeguide ${cliVersion}\n`);

    const unknown = await cli(["fly", "--help"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "fly"/);
  });

  test("a command's own option elsewhere, or a stray argument, exits 2 naming it", async () => {
    const points = await cli([...gateway, "get-stats", "--points", "5"]);
    assert.equal(points.code, 2);
    assert.match(points.stderr, /--points goes with record-route, not get-stats/);
    assert.match(points.stderr, /usage: routeguide \[options\] get-stats \[--top N\]/);
    const stray = await cli([...gateway, "get-feature", "40", "-74", "extra"]);
    assert.equal(stray.code, 2);
    assert.match(stray.stderr, /unexpected argument "extra"/);
    assert.equal(stray.stdout, "");
  });

  test("--json: one JSON object per answer, one line per streamed message", async () => {
    const json = [...gateway, "--json"];
    const listed = await cli([...json, "list-features", "40", "-75", "41", "-74"]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(listed.stderr, "");
    const features = jsonLines<gateway.ListFeaturesResponse__Output>(listed.stdout);
    assert.equal(features.length, 150);
    const first = features[0]?.feature;
    assert.ok(first?.name && first.location, listed.stdout.slice(0, 200));

    // The contract's E7 coordinates, as the gateway sent them.
    const lat = String(first.location.latitude / 1e7);
    const lng = String(first.location.longitude / 1e7);
    const got = await cli([...json, "get-feature", lat, lng]);
    assert.equal(got.code, 0, got.stderr);
    assert.deepEqual(jsonLines(got.stdout), [{ feature: first }]);

    const route = await cli([...json, "record-route", "--points", "20"]);
    assert.equal(route.code, 0, route.stderr);
    const [summary, ...moreRoute] = jsonLines<gateway.RecordRouteResponse__Output>(route.stdout);
    assert.deepEqual(moreRoute, []);
    assert.equal(summary?.summary?.pointCount, 20);

    // A place of its own: the second note gets the first back, the first gets nothing.
    const chat = await cli([...json, "route-chat", "12.3456", "-65.4321", "one", "two"]);
    assert.equal(chat.code, 0, chat.stderr);
    const notes = jsonLines<gateway.RouteChatResponse__Output>(chat.stdout);
    assert.deepEqual(
      notes.map((note) => note.note?.message),
      ["one"],
    );

    const stats = await cli([...json, "get-stats", "--top", "2"]);
    assert.equal(stats.code, 0, stats.stderr);
    const [snapshot, ...moreStats] = jsonLines<gateway.GetStatsResponse__Output>(stats.stdout);
    assert.deepEqual(moreStats, []);
    assert.ok((snapshot?.snapshot?.routesRecorded ?? 0) >= 1, stats.stdout);
    assert.ok((snapshot?.snapshot?.topFeatures.length ?? 0) <= 2, stats.stdout);
    assert.ok(
      snapshot?.snapshot?.callers.some((caller) => caller.caller === stack.auth?.emails.client),
      stats.stdout,
    );

    const watch = await cli([...json, "watch-stats", "--updates", "1"]);
    assert.equal(watch.code, 0, watch.stderr);
    const updates = jsonLines<gateway.WatchStatsResponse__Output>(watch.stdout);
    assert.equal(updates.length, 1);
    assert.ok(Number(updates[0]?.snapshot?.version) >= 1, watch.stdout);

    const area = await cli([...json, "describe-area", "40", "-75", "41", "-74", "--top", "1"]);
    assert.equal(area.code, 0, area.stderr);
    const [described] = jsonLines<gateway.DescribeAreaResponse__Output>(area.stdout);
    assert.equal(described?.featureCount, 150);
    assert.equal(described?.mostLookedUp.length, 1);

    const demo = await cli([...json, "demo"]);
    assert.equal(demo.code, 0, demo.stderr);
    const answers = jsonLines(demo.stdout);
    for (const answer of answers) assert.deepEqual(Object.keys(answer), ["method", "response"]);
    assert.deepEqual([...new Set(answers.map((answer) => answer.method))].sort(), [
      "DescribeArea",
      "GetFeature",
      "GetStats",
      "ListFeatures",
      "RecordRoute",
      "RouteChat",
      "WatchStats",
    ]);

    const token = await cli([...json, "token"]);
    assert.equal(token.code, 0, token.stderr);
    const [printed, ...moreToken] = jsonLines(token.stdout);
    assert.deepEqual(moreToken, []);
    assert.deepEqual(Object.keys(printed ?? {}), ["audience", "token"]);
    assert.equal(printed?.audience, stack.gateway.url);
  });

  test("watch-stats: --updates counts the statistics now, --for ends a watch that waits", {
    timeout: 60_000,
  }, async () => {
    // Two updates: the statistics now, then the change a look-up makes.
    const child = spawn(
      process.execPath,
      [cliEntry, ...gateway, "--json", "watch-stats", "--updates", "2", "--for", "50"],
      { env: cliEnv },
    );
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const now = await lines.next();
    assert.ok(!now.done, stderr);
    const looked = await cli([...gateway, "get-feature", "40.5", "-74.5"]);
    assert.equal(looked.code, 0, looked.stderr);
    const changed = await lines.next();
    assert.ok(!changed.done, stderr);
    assert.equal(await exited, 0, stderr);
    const [before, after] = [now.value, changed.value].map(
      (line) => JSON.parse(line) as gateway.WatchStatsResponse__Output,
    );
    // A change (this look-up, or a report of an earlier test's call still on its way).
    assert.ok(Number(after?.snapshot?.version) > Number(before?.snapshot?.version));

    // Nobody changes anything: --for alone ends the watch, with the statistics as they were.
    const started = Date.now();
    const quiet = await cli([...gateway, "watch-stats", "--for", "1"]);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.match(quiet.stdout, /^-- update 1 \(version \d+\)$/m);
    assert.ok(Date.now() - started < 30_000, "the watch ended on time");
  });

  test("token prints the ID token the CLI sends, and it calls the gateway as grpcurl would", async () => {
    const printed = await cli([...gateway, "token"]);
    assert.equal(printed.code, 0, printed.stderr);
    const token = printed.stdout.trim();
    assert.equal(printed.stdout, `${token}\n`);
    const claims = claimsOf(token);
    assert.equal(claims.aud, stack.gateway.url);
    assert.equal(claims.email, stack.auth?.emails.client);

    // One `authorization` header, no interceptor: what grpcurl -H sends, reflection included.
    const bearer = (value: string) => {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${value}`);
      return metadata;
    };
    const target = targetOf(stack.gateway.url);
    assert.ok(
      (await reflectedServices(target, bearer(token))).includes("gateway.v1.GatewayService"),
    );
    const refused = await failure(reflectedServices(target));
    assert.equal(refused.code, grpc.status.UNAUTHENTICATED, refused.message);
    const client = createGatewayClient(target, grpc.credentials.createInsecure());
    try {
      const stats = await unary<gateway.GetStatsResponse__Output>((done) =>
        client.GetStats({ topN: 1 }, bearer(token), deadline(), done),
      );
      assert.ok(stats.snapshot, "GetStats answered");

      // Another URL, another audience: the gateway refuses that token.
      const other = await cli([...gateway, "token", "http://127.0.0.1:1"]);
      assert.equal(other.code, 0, other.stderr);
      assert.equal(claimsOf(other.stdout.trim()).aud, "http://127.0.0.1:1");
      const wrong = await failure(
        unary((done) =>
          client.GetStats({ topN: 1 }, bearer(other.stdout.trim()), deadline(), done),
        ),
      );
      assert.equal(wrong.code, grpc.status.UNAUTHENTICATED, wrong.message);
    } finally {
      client.close();
    }

    // The token the CLI was given is the one it prints; --no-token has none to print.
    assert.equal((await cli([...gateway, "--token", token, "token"])).stdout, `${token}\n`);
    const none = await cli([...gateway, "--no-token", "token"]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /token and --no-token ask for opposite things/);
    const badUrl = await cli([...gateway, "token", "ftp://x"]);
    assert.equal(badUrl.code, 2);
    assert.match(badUrl.stderr, /URL must use http: \(h2c\) or https: \(TLS\)/);
  });

  test("an unreachable gateway is one readable line and exit 1", async () => {
    const port = await freePort();
    assert.equal(await connectError(port), "ECONNREFUSED");
    const url = `http://127.0.0.1:${port}`;
    for (const args of [
      ["get-stats"],
      ["--json", "list-features", "40", "-75", "41", "-74"],
      ["watch-stats"],
      ["record-route", "--points", "5"],
    ]) {
      const result = await cli(["--gateway", url, ...args]);
      assert.equal(result.code, 1, `${args.join(" ")}: ${result.stderr}`);
      assert.equal(result.stderr, `routeguide: cannot reach ${url}: connection refused\n`);
      assert.equal(result.stdout, "");
    }
  });
});
