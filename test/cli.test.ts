// The CLI against a running stack: every command, readable output, clear errors.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { type Stack, startStack } from "@cloudrun-grpc/local-stack";

const cliEntry = new URL("../packages/cli/dist/main.js", import.meta.url).pathname;

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliEntry, ...args], {
      env: { PATH: process.env.PATH ?? "" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("the routeguide CLI", () => {
  let stack: Stack;
  let gateway: string[];

  before(async () => {
    stack = await startStack();
    gateway = ["--gateway", stack.gateway.url, "--timeout", "20"];
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

    const watch = await cli([...gateway, "watch-stats", "--updates", "1"]);
    assert.equal(watch.code, 0, watch.stderr);
    assert.match(watch.stdout, /^-- update 1 \(version \d+\)$/m);

    const area = await cli([...gateway, "describe-area", "40", "-75", "41", "-74", "--top", "1"]);
    assert.equal(area.code, 0, area.stderr);
    assert.match(area.stdout, /^Area: 150 named features, [1-9]\d* look-ups inside$/m);
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

    const offTheMap = await cli([...gateway, "get-feature", "91", "0"]);
    assert.equal(offTheMap.code, 1);
    assert.match(
      offTheMap.stderr,
      /get-feature failed: INVALID_ARGUMENT: route: point\.latitude must be/,
    );
  });
});
