// What a container will run: each service's production bundle, made by the same script the
// images use, in a folder outside the workspace, started with only PORT and its env. It must
// serve health and answer a real call, so no file it needs is left behind in the workspace.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { createRouteGuideClient, createStatsClient, serviceNames } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { deadline, healthStatus, unary } from "./support/grpc.js";

const script = fileURLToPath(new URL("../scripts/bundle-service.sh", import.meta.url));
const folders: string[] = [];

function bundle(service: string): string {
  const folder = mkdtempSync(join(tmpdir(), `bundle-${service}-`));
  folders.push(folder);
  try {
    execFileSync("bash", [script, service, join(folder, "app")], {
      stdio: ["ignore", "ignore", "pipe"],
      timeout: 120_000,
    });
  } catch (error) {
    throw new Error(
      `bundling ${service} failed (needs pnpm on PATH): ${String((error as { stderr?: Buffer }).stderr ?? error)}`,
    );
  }
  return join(folder, "app");
}

/** Starts `node dist/main.js` in the bundle with only PATH, PORT and `env`; resolves its port. */
function start(app: string, env: Record<string, string>) {
  const child = spawn(process.execPath, ["dist/main.js"], {
    cwd: app,
    env: { PATH: process.env.PATH ?? "", PORT: "0", HOST: "127.0.0.1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const port = new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line.includes('"listening"')) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once("exit", (code) => reject(new Error(`exited ${code} before listening: ${stderr}`)));
  });
  return { child, port };
}

describe("production bundles, as the containers run them", () => {
  const children: ReturnType<typeof start>["child"][] = [];
  after(() => {
    for (const child of children) child.kill("SIGKILL");
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
  });

  test("stats and route bundles start outside the workspace, serve health and answer calls", {
    timeout: 300_000,
  }, async () => {
    const stats = start(bundle("stats"), { AUTH_MODE: "off" });
    children.push(stats.child);
    const statsPort = await stats.port;
    assert.equal(await healthStatus(`127.0.0.1:${statsPort}`, serviceNames.stats), "SERVING");

    const route = start(bundle("route"), {
      AUTH_MODE: "off",
      STATS_URL: `http://127.0.0.1:${statsPort}`,
    });
    children.push(route.child);
    const routePort = await route.port;
    assert.equal(await healthStatus(`127.0.0.1:${routePort}`, serviceNames.routeGuide), "SERVING");

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
        const { snapshot } = await unary<{ snapshot: { featureLookups: number } | null }>((done) =>
          statsClient.GetStats({ topN: 1 }, deadline(), done),
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

  test("the gateway bundle starts outside the workspace and serves health", {
    timeout: 300_000,
  }, async () => {
    const gateway = start(bundle("gateway"), {
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
});
