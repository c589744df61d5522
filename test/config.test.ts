// A service started with bad configuration exits non-zero at once, with one line per bad
// variable that names it, and without starting to listen.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { type StackServiceName as ServiceName, serviceEntry } from "@cloudrun-grpc/local-stack";
import { describeLocalOnly } from "./support/target.js";

function startWith(service: ServiceName, env: Record<string, string>) {
  const result = spawnSync(process.execPath, [serviceEntry(service)], {
    env: { PATH: process.env.PATH ?? "", HOST: "127.0.0.1", PORT: "0", ...env },
    encoding: "utf8",
    timeout: 15_000,
  });
  return { status: result.status, stderr: result.stderr, stdout: result.stdout };
}

const peers = { ROUTE_URL: "http://127.0.0.1:1", STATS_URL: "http://127.0.0.1:1" };

describeLocalOnly("bad configuration stops a service with a clear message", () => {
  const cases: {
    service: ServiceName;
    env: Record<string, string>;
    variable: string;
    says: RegExp;
  }[] = [
    {
      service: "stats",
      env: { PORT: "http" },
      variable: "PORT",
      says: /must be a whole number from 0 to 65535, got "http"/,
    },
    { service: "stats", env: { PORT: "70000" }, variable: "PORT", says: /from 0 to 65535/ },
    {
      service: "stats",
      env: { LOG_LEVEL: "loud" },
      variable: "LOG_LEVEL",
      says: /must be one of fatal, error/,
    },
    {
      service: "stats",
      env: { STATS_WATCH_COALESCE_MS: "soon" },
      variable: "STATS_WATCH_COALESCE_MS",
      says: /whole number/,
    },
    {
      service: "stats",
      env: { STATS_DATABASE_URL: "mysql://root@127.0.0.1/stats" },
      variable: "STATS_DATABASE_URL",
      says: /must be postgres:\/\/…, cloudsql:\/\/<project>:<region>:<instance>\/<database> or pglite:\/\/<dir>, got "mysql:…"/,
    },
    {
      service: "stats",
      env: { STATS_DATABASE_URL: "postgres://stats:s3cret@db.internal" },
      variable: "STATS_DATABASE_URL",
      says: /needs a database name/,
    },
    {
      service: "stats",
      env: { STATS_DATABASE_URL: "cloudsql://my-project:europe-west1:stats/stats" },
      variable: "STATS_DATABASE_IAM_USER",
      says: /is required with cloudsql:\/\//,
    },
    {
      service: "stats",
      env: { STATS_DATABASE_URL: "cloudsql://my-project/stats" },
      variable: "STATS_DATABASE_URL",
      says: /must be cloudsql:\/\/<project>:<region>:<instance>\/<database>/,
    },
    {
      service: "route",
      env: {},
      variable: "STATS_URL",
      says: /is required: the URL of the stats service/,
    },
    {
      service: "route",
      env: { STATS_URL: "127.0.0.1:50052" },
      variable: "STATS_URL",
      says: /must use http: \(h2c\) or https: \(TLS\)|must be a URL/,
    },
    {
      service: "route",
      env: { STATS_URL: "https://stats.example/v1" },
      variable: "STATS_URL",
      says: /without path/,
    },
    {
      service: "route",
      env: { STATS_URL: peers.STATS_URL, AUTH_END_USER_FROM: "gateway-svc" },
      variable: "AUTH_END_USER_FROM",
      says: /must be service account emails \(the gateway's\), comma-separated, got "gateway-svc"/,
    },
    {
      service: "gateway",
      env: { STATS_URL: peers.STATS_URL },
      variable: "ROUTE_URL",
      says: /is required: the URL of the route service/,
    },
    {
      service: "gateway",
      env: { ...peers, SHUTDOWN_GRACE_MS: "-5" },
      variable: "SHUTDOWN_GRACE_MS",
      says: /from 0 to 600000/,
    },
  ];
  for (const { service, env, variable, says } of cases) {
    test(`${service} with ${JSON.stringify(env)} exits non-zero naming ${variable}`, () => {
      const { status, stderr, stdout } = startWith(service, env);
      assert.notEqual(status, 0, "the process must exit non-zero");
      assert.equal(status, 2);
      const line = stderr.split("\n").find((candidate) => candidate.includes(`${variable}:`));
      assert.ok(line, `stderr names ${variable}: ${stderr}`);
      assert.match(line, says);
      assert.ok(line.startsWith(`${service}: config error: ${variable}: `), line);
      assert.doesNotMatch(stdout, /listening/);
    });
  }

  test("a bad database URL's error does not repeat its password", () => {
    const { status, stderr } = startWith("stats", {
      STATS_DATABASE_URL: "postgres://stats:s3cret-pass@db.internal",
    });
    assert.equal(status, 2);
    assert.match(stderr, /STATS_DATABASE_URL: /);
    assert.doesNotMatch(stderr, /s3cret-pass/);
  });

  test("several bad end-user sources are one line", () => {
    const { status, stderr } = startWith("stats", { AUTH_END_USER_FROM: "a b@x,c, d@y" });
    assert.equal(status, 2);
    const lines = stderr.split("\n").filter((line) => line.includes("AUTH_END_USER_FROM"));
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0] ?? "", /got "a b@x"$/);
  });

  test("every bad variable is reported, one line each", () => {
    const { status, stderr } = startWith("gateway", {
      PORT: "x",
      ROUTE_URL: "ftp://route",
      LOG_LEVEL: "?",
    });
    assert.equal(status, 2);
    const lines = stderr.trim().split("\n");
    assert.deepEqual(
      lines.map((line) => line.split(": ")[2]),
      ["PORT", "LOG_LEVEL", "ROUTE_URL", "STATS_URL"],
    );
  });
});
