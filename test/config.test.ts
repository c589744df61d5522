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
      says: /must be postgres:\/\/… or cloudsql:\/\/<project>:<region>:<instance>\/<database>, got "mysql:…"/,
    },
    {
      service: "stats",
      env: {},
      variable: "STATS_DATABASE_URL",
      says: /is required: postgres:\/\/… or cloudsql:\/\/.*the local stack, pnpm start, starts a PostgreSQL server of its own/,
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

  // zod 4 skips an object's refinements once a field has failed: the rules across variables
  // (envSchema) run anyway, so one start names every bad variable, field and rule alike.
  const allAtOnce: {
    service: ServiceName;
    env: Record<string, string>;
    lines: Record<string, RegExp>;
  }[] = [
    {
      service: "route",
      env: { STATS_URL: "ftp://stats" },
      lines: {
        STATS_URL: /must use http: \(h2c\) or https: \(TLS\)/,
        AUTH_AUDIENCES: /is required with AUTH_MODE=verify/,
      },
    },
    {
      service: "route",
      env: {
        STATS_URL: "https://stats.example/v1",
        ROUTE_MAX_POINTS: "0",
        AUTH_MODE: "optional",
        AUTH_AUDIENCES: "https://route.example/",
        AUTH_ISSUER: "https://issuer.example",
      },
      lines: {
        STATS_URL: /without path/,
        ROUTE_MAX_POINTS: /from 1 to 10000000, got "0"/,
        AUTH_MODE: /optional is for a public gateway only/,
        AUTH_AUDIENCES: /without a trailing \/, got "https:\/\/route\.example\/"/,
        AUTH_JWKS_URL: /AUTH_ISSUER and AUTH_JWKS_URL go together/,
      },
    },
    {
      service: "gateway",
      env: { PORT: "x", ROUTE_URL: "ftp://route", LOG_LEVEL: "?", AUTH_JWKS_URL: "https://k" },
      lines: {
        PORT: /from 0 to 65535/,
        LOG_LEVEL: /must be one of/,
        ROUTE_URL: /must use http:/,
        STATS_URL: /is required/,
        AUTH_AUDIENCES: /is required with AUTH_MODE=verify/,
        AUTH_ISSUER: /AUTH_ISSUER and AUTH_JWKS_URL go together/,
      },
    },
    {
      service: "gateway",
      env: { ...peers, SHUTDOWN_GRACE_MS: "soon", AUTH_MODE: "off", K_SERVICE: "gateway" },
      lines: {
        SHUTDOWN_GRACE_MS: /whole number/,
        AUTH_MODE: /off is refused on Cloud Run/,
      },
    },
    {
      service: "stats",
      env: {
        STATS_DATABASE_URL: "cloudsql://my-project:europe-west1:stats/stats",
        STATS_DATABASE_POOL_MAX: "0",
        AUTH_END_USER_FROM: "gateway",
        AUTH_MODE: "optional",
        AUTH_AUDIENCES: "https://stats.example",
      },
      lines: {
        AUTH_END_USER_FROM: /must be service account emails/,
        STATS_DATABASE_POOL_MAX: /from 1 to 100/,
        AUTH_MODE: /optional is for a public gateway only/,
        STATS_DATABASE_IAM_USER: /is required with cloudsql:\/\//,
      },
    },
    // A rule reads only variables that parsed: with AUTH_MODE or STATS_DATABASE_URL bad, the
    // rules that depend on them would guess, so only those variables' own lines show.
    {
      service: "stats",
      env: {
        AUTH_MODE: "verfy",
        STATS_DATABASE_URL: "mysql://root@127.0.0.1/stats",
        STATS_DATABASE_IAM_USER: "stats-svc@p.iam",
        STATS_WATCH_COALESCE_MS: "-1",
      },
      lines: {
        AUTH_MODE: /must be verify, optional or off, got "verfy"/,
        STATS_WATCH_COALESCE_MS: /from 0 to 60000/,
        STATS_DATABASE_URL: /must be postgres:\/\/…/,
      },
    },
  ];
  for (const { service, env, lines } of allAtOnce) {
    test(`${service} with ${JSON.stringify(env)} names ${Object.keys(lines).join(", ")} in one run`, () => {
      const { status, stderr, stdout } = startWith(service, env);
      assert.equal(status, 2, stderr);
      const written = stderr.trim().split("\n");
      for (const line of written) assert.ok(line.startsWith(`${service}: config error: `), line);
      const named = written.map((line) => line.split(": ")[2] as string);
      assert.deepEqual([...named].sort(), Object.keys(lines).sort(), stderr);
      for (const [variable, says] of Object.entries(lines)) {
        assert.match(written[named.indexOf(variable)] as string, says, variable);
      }
      assert.doesNotMatch(stdout, /listening/);
    });
  }
});
