// The front end's configuration is read from infra/ itself: what it serves is what Terraform
// deploys (ingress, invokers, concurrency, scaling, timeout, probes, env, peers).
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadInfra, type ServiceDefinition } from "../src/index.js";

const infra = fileURLToPath(new URL("../../../infra", import.meta.url));

describe("loadInfra: the services of infra/ as Terraform deploys them", () => {
  test("reads each service's Cloud Run settings through the grpc-service module", async () => {
    const services = await loadInfra(infra);
    assert.deepEqual(Object.keys(services).sort(), ["gateway", "route", "stats"]);
    const { gateway, route, stats } = services as Record<string, ServiceDefinition>;
    assert.ok(gateway && route && stats);

    assert.equal(gateway.ingress, "INGRESS_TRAFFIC_ALL");
    assert.equal(route.ingress, "INGRESS_TRAFFIC_INTERNAL_ONLY");
    assert.equal(stats.ingress, "INGRESS_TRAFFIC_INTERNAL_ONLY");
    for (const service of [gateway, route, stats]) {
      assert.equal(service.portName, "h2c");
      assert.equal(service.containerPort, 8080);
      assert.equal(service.maxConcurrency, 100);
      assert.equal(service.requestTimeoutSeconds, 3600);
      assert.equal(service.minInstances, 0);
      assert.equal(service.maxInstances, 10);
      assert.equal(service.invokerIamDisabled, false);
      assert.deepEqual(service.livenessProbe, {
        kind: "grpc",
        service: "",
        initialDelaySeconds: 0,
        periodSeconds: 10,
        timeoutSeconds: 2,
        failureThreshold: 3,
      });
      assert.equal(service.startupProbe.periodSeconds, 4);
      assert.equal(service.startupProbe.failureThreshold, 60);
      assert.equal(service.env.LOG_LEVEL, "info");
    }
    assert.equal(gateway.startupProbe.service, "gateway.v1.GatewayService");
    assert.equal(route.startupProbe.service, "routeguide.v1.RouteGuideService");
    assert.equal(stats.startupProbe.service, "stats.v1.StatsService");

    // Who may call whom: the topology, as Terraform's run.invoker bindings.
    assert.deepEqual(route.invokedBy, {
      gateway: ["GetFeature", "ListFeatures", "RecordRoute", "RouteChat"],
    });
    assert.deepEqual(Object.keys(stats.invokedBy).sort(), ["gateway", "route"]);
    assert.deepEqual(route.endUserFrom, ["gateway"]);
    assert.deepEqual(gateway.peers, { ROUTE_URL: "route", STATS_URL: "stats" });
    assert.deepEqual(route.peers, { STATS_URL: "stats" });
    // Callers of internal services send through the VPC; stats calls nobody.
    assert.equal(gateway.vpcEgress, true);
    assert.equal(route.vpcEgress, true);
    assert.equal(stats.vpcEgress, false);
    // Cloud SQL's connection has no value here: left for the caller to give.
    assert.deepEqual(stats.unresolvedEnv.sort(), ["STATS_DATABASE_IAM_USER", "STATS_DATABASE_URL"]);
    assert.equal(stats.env.STATS_DATABASE_POOL_MAX, "5");
  });

  test("takes the root's variables as a tfvars file gives them", async () => {
    const services = await loadInfra(infra, {
      variables: {
        gateway_public: true,
        max_instances: 3,
        gateway_min_instances: 1,
        log_level: "warn",
      },
    });
    assert.equal(services.gateway?.invokerIamDisabled, true);
    assert.equal(services.route?.invokerIamDisabled, false);
    assert.equal(services.gateway?.maxInstances, 3);
    assert.equal(services.gateway?.minInstances, 1);
    assert.equal(services.route?.env.LOG_LEVEL, "warn");
  });

  test("refuses a service whose port is not h2c, naming it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cloud-run-local-bad-infra-"));
    try {
      mkdirSync(join(dir, "modules", "grpc-service"), { recursive: true });
      const moduleDir = join(infra, "modules", "grpc-service");
      for (const file of ["variables.tf", "outputs.tf", "versions.tf"]) {
        symlinkSync(join(moduleDir, file), join(dir, "modules", "grpc-service", file));
      }
      writeFileSync(
        join(dir, "modules", "grpc-service", "main.tf"),
        readFileSync(join(moduleDir, "main.tf"), "utf8").replace(
          'name           = "h2c"',
          'name           = "http1"',
        ),
      );
      symlinkSync(join(infra, "topology.json"), join(dir, "topology.json"));
      writeFileSync(
        join(dir, "main.tf"),
        'module "route" {\n  source = "./modules/grpc-service"\n  name = "route"\n  ingress = "INGRESS_TRAFFIC_ALL"\n}\n',
      );
      await assert.rejects(loadInfra(dir), /service route: its port is named "http1", not h2c/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
