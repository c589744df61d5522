// infra/ is checked by parsing it: there is no provider registry or cloud here, so `terraform
// plan` cannot run. The checks are the ones that decide whether a deployment works and is safe:
// HTTP/2 end to end, probes the services answer, one identity per service, invoker bindings
// equal to infra/topology.json, no public invoker on internal services, peer URLs from module
// outputs, and no variable declared but unused or used but undeclared.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "@cdktf/hcl2json";
import { loadTopology } from "@cloudrun-grpc/auth-client/topology";
import { gatewayConfigSchema } from "@cloudrun-grpc/gateway/config";
import { type Stack, startService, startStack } from "@cloudrun-grpc/local-stack";
import { createRouteGuideClient, serviceNames } from "@cloudrun-grpc/proto";
import { parseConfig } from "@cloudrun-grpc/runtime";
import { freePort } from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import {
  collect,
  deadline,
  eventually,
  failure,
  healthStatus,
  targetOf,
  unary,
} from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";
import {
  type Body,
  block,
  expr,
  loadDir,
  locals,
  nested,
  resource,
  source,
  type TerraformDir,
  withoutComments,
} from "./support/terraform.js";

const infra = fileURLToPath(new URL("../infra", import.meta.url));
const moduleDir = join(infra, "modules", "grpc-service");
const topology = loadTopology().services;

/** The services each service calls, from the topology. */
function callees(service: string): string[] {
  return Object.entries(topology)
    .filter(([, callee]) => service in callee.invoked_by)
    .map(([name]) => name)
    .sort();
}

const terraformFound = !spawnSync("terraform", ["version"], { stdio: "ignore" }).error;

/** A module input image as the root passes it: by digest. */
const sampleImage = `europe-west1-docker.pkg.dev/my-project/routeguide/svc@sha256:${"0".repeat(64)}`;

// How long a stop may take past SHUTDOWN_GRACE_MS, from the code: when the grace is over,
// startGrpcServer ends the calls still open and force-closes the server 100 ms later
// (packages/runtime/src/server.ts); startService then gives afterShutdown what is left of the
// grace but at least 1000 ms, and runService waits up to 1000 ms for the logger to flush before
// it exits (packages/runtime/src/lifecycle.ts). Cloud Run sends SIGKILL 10 s after SIGTERM
// (https://cloud.google.com/run/docs/container-contract#instance-shutdown); a stop must end
// this long before that, for the scheduling of a busy instance.
const forceCloseMs = 100;
const afterShutdownMinMs = 1000;
const logFlushMaxMs = 1000;
const cloudRunKillMs = 10_000;
const marginMs = 1500;
const worstStop = (graceMs: number) => graceMs + forceCloseMs + afterShutdownMinMs + logFlushMaxMs;

/**
 * The root's variables.tf evaluated by terraform with the given values (validations included),
 * without providers. Returns terraform's error, if any.
 */
function evaluateRootVariables(values: Record<string, unknown>): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), "infra-variables-"));
  try {
    writeFileSync(join(dir, "variables.tf"), root.files["variables.tf"] as string);
    writeFileSync(
      join(dir, "terraform.tfvars.json"),
      JSON.stringify({ project_id: "my-project", ...values }),
    );
    const run = (args: string[]) =>
      spawnSync("terraform", args, {
        cwd: dir,
        encoding: "utf8",
        env: { ...process.env, TF_IN_AUTOMATION: "1", CHECKPOINT_DISABLE: "1" },
      });
    const init = run(["init", "-input=false", "-no-color"]);
    assert.equal(init.status, 0, init.stderr);
    const plan = run(["plan", "-input=false", "-no-color"]);
    return plan.status === 0 ? undefined : plan.stderr.replace(/\s+/g, " ");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The module's own expressions, evaluated by terraform itself with the given inputs: its
 * variables.tf (validations included), its locals and the service's preconditions copied into
 * a configuration without resources, so no provider is needed (there is no registry here).
 * Returns the outputs, or terraform's error.
 */
function evaluateModule(inputs: Record<string, unknown>): {
  error?: string;
  env?: Record<string, string>;
  invokerIamDisabled?: boolean;
} {
  const moduleLocals = locals(module_);
  const service = resource(module_, "google_cloud_run_v2_service", "this");
  const preconditions = (nested(service, "lifecycle").precondition ?? []) as Body[];
  const dir = mkdtempSync(join(tmpdir(), "grpc-service-eval-"));
  try {
    writeFileSync(join(dir, "variables.tf"), module_.files["variables.tf"] as string);
    writeFileSync(
      join(dir, "eval.tf"),
      [
        "locals {",
        // The real one reads the project number from a data source (a provider).
        '  url = "https://svc-123.europe-west1.run.app"',
        ...["invoker_emails", "allowed_invokers", "container_env"].map(
          (name) => `  ${name} = ${source(moduleLocals[name])}`,
        ),
        "}",
        'output "env" {',
        "  value = local.container_env",
        ...preconditions.map(
          (check) =>
            `  precondition {\n    condition = ${source(check.condition)}\n    error_message = ${JSON.stringify(check.error_message)}\n  }`,
        ),
        "}",
        `output "invoker_iam_disabled" { value = ${source(service.invoker_iam_disabled)} }`,
        "",
      ].join("\n"),
    );
    const vars = {
      project_id: "my-project",
      region: "europe-west1",
      service_account_id: "svc-account",
      image: sampleImage,
      health_service: "x.v1.X",
      ingress: "INGRESS_TRAFFIC_ALL",
      ...inputs,
    };
    writeFileSync(join(dir, "terraform.tfvars.json"), JSON.stringify(vars));
    const run = (args: string[]) =>
      spawnSync("terraform", args, {
        cwd: dir,
        encoding: "utf8",
        env: { ...process.env, TF_IN_AUTOMATION: "1", CHECKPOINT_DISABLE: "1" },
      });
    const init = run(["init", "-input=false", "-no-color"]);
    assert.equal(init.status, 0, init.stderr);
    const applied = run(["apply", "-auto-approve", "-input=false", "-no-color"]);
    if (applied.status !== 0) return { error: applied.stderr.replace(/\s+/g, " ") };
    const outputs = JSON.parse(run(["output", "-json", "-no-color"]).stdout) as Record<
      string,
      { value: unknown }
    >;
    return {
      env: outputs.env?.value as Record<string, string>,
      invokerIamDisabled: outputs.invoker_iam_disabled?.value as boolean,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

let root: TerraformDir;
let module_: TerraformDir;
before(async () => {
  root = await loadDir(infra);
  module_ = await loadDir(moduleDir);
});

describe("infra: the grpc-service module", () => {
  test("runs the container with HTTP/2 end to end: one port, named h2c", () => {
    const container = nested(
      resource(module_, "google_cloud_run_v2_service", "this"),
      "template",
      "containers",
    );
    assert.deepEqual(container.ports, [
      { name: "h2c", container_port: expr("var.container_port") },
    ]);
  });

  test("probes over grpc.health.v1 on the container port: startup for var.health_service, liveness for the whole server", () => {
    const container = nested(
      resource(module_, "google_cloud_run_v2_service", "this"),
      "template",
      "containers",
    );
    assert.deepEqual(nested(container, "startup_probe", "grpc"), {
      port: expr("var.container_port"),
      service: expr("var.health_service"),
    });
    // "" stays SERVING while the process answers; a dependency outage must not restart it.
    assert.deepEqual(nested(container, "liveness_probe", "grpc"), {
      port: expr("var.container_port"),
      service: "",
    });
  });

  test("runs as its own service account, never the default compute account", () => {
    const template = nested(resource(module_, "google_cloud_run_v2_service", "this"), "template");
    assert.equal(template.service_account, expr("google_service_account.this.email"));
    resource(module_, "google_service_account", "this");
    for (const [file, text] of Object.entries(module_.files)) {
      assert.doesNotMatch(text, /compute@developer/, `${file} names the default compute account`);
    }
  });

  test("grants run.invoker to exactly var.invokers, and allows the same emails in the container", () => {
    const binding = resource(module_, "google_cloud_run_v2_service_iam_member", "invoker");
    assert.equal(binding.for_each, expr("var.invokers"));
    assert.equal(binding.role, "roles/run.invoker");
    assert.equal(binding.member, expr("each.value"));
    const moduleLocals = locals(module_);
    assert.match(String(moduleLocals.invoker_emails), /values\(var\.invokers\)/);
    assert.match(String(moduleLocals.allowed_invokers), /for label, member in var\.invokers/);
    assert.match(
      String(moduleLocals.container_env),
      /AUTH_ALLOWED_INVOKERS\s*=\s*join\(",", local\.allowed_invokers\)/,
    );
    assert.match(
      String(moduleLocals.container_env),
      /AUTH_AUDIENCES\s*=\s*join\(",", concat\(\[local\.url\], var\.custom_audiences\)\)/,
    );
    assert.match(
      String(moduleLocals.container_env),
      /AUTH_MODE\s*=\s*var\.public \? "optional" : "verify"/,
    );
  });

  test("gives every service its project id, so log lines link their trace to Cloud Trace", () => {
    assert.match(
      String(locals(module_).container_env),
      /GOOGLE_CLOUD_PROJECT\s*=\s*var\.project_id/,
    );
  });

  test("exports spans and metrics through the Telemetry API with exactly the roles that takes, before the service starts", () => {
    // The container is told where (its config reads TELEMETRY_EXPORT), unless var.telemetry is off.
    assert.match(
      String(locals(module_).container_env),
      /TELEMETRY_EXPORT\s*=\s*var\.telemetry \? "google-cloud" : "off"/,
    );
    // And its region, for the resource: Cloud Monitoring's prometheus_target needs a location.
    assert.match(
      String(locals(module_).container_env),
      /OTEL_RESOURCE_ATTRIBUTES\s*=\s*"cloud\.region=\$\{var\.region\}"/,
    );
    assert.equal(block(module_, "variable", "telemetry").default, true);
    // The roles: trace and metric writes and the quota project's use, nothing broader, each
    // granted to the service's own account on its project.
    assert.deepEqual(locals(module_).telemetry_roles, [
      "roles/serviceusage.serviceUsageConsumer",
      "roles/telemetry.metricsWriter",
      "roles/telemetry.tracesWriter",
    ]);
    const grant = resource(module_, "google_project_iam_member", "telemetry_roles");
    assert.equal(grant.for_each, expr("var.telemetry ? toset(local.telemetry_roles) : toset([])"));
    assert.equal(grant.role, expr("each.key"));
    assert.equal(grant.project, expr("var.project_id"));
    assert.equal(grant.member, `serviceAccount:${expr("google_service_account.this.email")}`);
    const service = resource(module_, "google_cloud_run_v2_service", "this");
    assert.ok(
      (service.depends_on as string[]).includes(expr("google_project_iam_member.telemetry_roles")),
      "the first revision starts with its roles in place",
    );
    // The APIs the exporter writes through, and Cloud Trace, without which spans are dropped.
    const apis = source(resource(root, "google_project_service", "apis").for_each);
    for (const api of ["telemetry", "cloudtrace", "monitoring"]) {
      assert.ok(apis.includes(`"${api}.googleapis.com"`), `${api}.googleapis.com enabled`);
    }
  });

  test("sets the request timeout from a variable that defaults to Cloud Run's maximum, 3600 s", () => {
    const template = nested(resource(module_, "google_cloud_run_v2_service", "this"), "template");
    assert.equal(template.timeout, `${expr("var.request_timeout_seconds")}s`);
    assert.equal(block(module_, "variable", "request_timeout_seconds").default, 3600);
  });

  test("sends all egress through the VPC when given one (callers of internal services)", () => {
    const template = nested(resource(module_, "google_cloud_run_v2_service", "this"), "template");
    const vpc = (template.dynamic as Record<string, Body[]>).vpc_access?.[0] as Body;
    assert.ok(vpc, "no dynamic vpc_access block");
    assert.equal(nested(vpc, "content").egress, "ALL_TRAFFIC");
  });
});

describe("infra: the root, against infra/topology.json", () => {
  test("instantiates the module once per topology service, with the topology's service account", () => {
    const modules = root.config.module as Record<string, Body[]>;
    assert.deepEqual(Object.keys(modules).sort(), Object.keys(topology).sort());
    for (const name of Object.keys(topology)) {
      const call = block(root, "module", name);
      assert.equal(call.source, "./modules/grpc-service", `module ${name}`);
      assert.equal(call.name, name, `module ${name}: Cloud Run service name`);
      assert.equal(
        call.service_account_id,
        expr(`local.topology.${name}.service_account_id`),
        `module ${name} must take its service account id from the topology`,
      );
    }
  });

  test("grants run.invoker on each internal service to exactly its topology callers' service accounts", () => {
    for (const [name, service] of Object.entries(topology)) {
      if (Object.keys(service.invoked_by).length === 0) continue;
      assert.deepEqual(
        service.external_invokers,
        [],
        `${name}: external invokers of an internal service are not wired in main.tf`,
      );
      const callers = Object.keys(service.invoked_by);
      const expected = Object.fromEntries(
        callers.map((caller) => [caller, expr(`module.${caller}.service_account_member`)]),
      );
      assert.deepEqual(
        block(root, "module", name).invokers,
        expected,
        `module ${name}: invokers must be exactly ${callers.join(", ")} (infra/topology.json)`,
      );
    }
  });

  test("gives each internal service its callers' methods from the topology (checked in the container)", () => {
    for (const [name, service] of Object.entries(topology)) {
      const call = block(root, "module", name);
      if (Object.keys(service.invoked_by).length === 0) {
        assert.ok(!("invoker_methods" in call), `module ${name}: no topology caller`);
        continue;
      }
      assert.equal(
        call.invoker_methods,
        expr(`local.topology.${name}.invoked_by`),
        `module ${name}: invoker_methods must come from infra/topology.json`,
      );
    }
  });

  test("only the gateway may be public, and only through var.gateway_public (default off)", () => {
    const variable = block(root, "variable", "gateway_public");
    assert.equal(variable.type, expr("bool"));
    assert.equal(variable.default, false);
    for (const name of Object.keys(topology)) {
      const call = block(root, "module", name);
      if (name === "gateway") assert.equal(call.public, expr("var.gateway_public"));
      else assert.ok(!("public" in call), `module ${name} must never be public`);
    }
    const service = resource(module_, "google_cloud_run_v2_service", "this");
    assert.equal(service.invoker_iam_disabled, expr("var.public"));
    assert.equal(block(module_, "variable", "public").default, false);
  });

  test("internal services take internal ingress only; the entry point has no topology caller", () => {
    for (const [name, service] of Object.entries(topology)) {
      const internal =
        Object.keys(service.invoked_by).length > 0 && service.external_invokers.length === 0;
      assert.equal(
        block(root, "module", name).ingress,
        internal ? "INGRESS_TRAFFIC_INTERNAL_ONLY" : "INGRESS_TRAFFIC_ALL",
        `module ${name}: ingress`,
      );
    }
    const gatewayInvokers = String(block(root, "module", "gateway").invokers);
    assert.doesNotMatch(gatewayInvokers, /module\./, "no topology service calls the gateway");
    assert.match(gatewayInvokers, /local\.topology\.gateway\.external_invokers/);
    assert.match(gatewayInvokers, /var\.gateway_invokers/);
  });

  test("no public invoker anywhere: no allUsers or allAuthenticatedUsers member", () => {
    for (const dir of [root, module_]) {
      for (const [file, text] of Object.entries(dir.files)) {
        const code = withoutComments(text)
          .split("\n")
          .filter((line) => !/error_message|description/.test(line))
          .join("\n");
        assert.doesNotMatch(code, /allUsers|allAuthenticatedUsers/, `${file}`);
      }
    }
  });

  test("wires each caller's peer URLs from the callee modules' url outputs, and nothing else", () => {
    for (const name of Object.keys(topology)) {
      const expected = Object.fromEntries(
        callees(name).map((callee) => [
          `${callee.toUpperCase()}_URL`,
          expr(`module.${callee}.url`),
        ]),
      );
      const peers = block(root, "module", name).peers ?? {};
      assert.deepEqual(peers, expected, `module ${name}: peers`);
    }
  });

  test("callers send all egress through the VPC subnet, which has Private Google Access", () => {
    for (const name of Object.keys(topology)) {
      const call = block(root, "module", name);
      if (callees(name).length > 0) {
        assert.equal(
          call.vpc_egress,
          expr("local.vpc_egress"),
          `module ${name} calls internal services`,
        );
      }
    }
    assert.equal(
      resource(root, "google_compute_subnetwork", "services").private_ip_google_access,
      true,
    );
  });

  test("the gateway's callees believe a call's end user from the gateway's service account only", () => {
    const output = block(module_, "output", "service_account_email");
    assert.equal(output.value, expr("google_service_account.this.email"));
    for (const [name, service] of Object.entries(topology)) {
      const module = block(root, "module", name);
      assert.ok(
        !("AUTH_END_USER_FROM" in ((module.env ?? {}) as Body)),
        `module ${name}: AUTH_* belongs to the module, not env`,
      );
      if ("gateway" in service.invoked_by) {
        assert.deepEqual(
          module.end_user_from,
          [expr("module.gateway.service_account_email")],
          `module ${name}: end_user_from`,
        );
      } else assert.ok(!("end_user_from" in module), `module ${name} trusts no end user`);
    }
  });

  test("stats reaches Cloud SQL as its own service account by IAM: no password anywhere", () => {
    const env = block(root, "module", "stats").env as Body;
    assert.equal(
      env.STATS_DATABASE_URL,
      `cloudsql://${expr("google_sql_database_instance.stats.connection_name")}/${expr("google_sql_database.stats.name")}`,
    );
    assert.equal(env.STATS_DATABASE_IAM_USER, expr("google_sql_user.stats.name"));
    const user = resource(root, "google_sql_user", "stats");
    assert.equal(user.type, "CLOUD_IAM_SERVICE_ACCOUNT");
    assert.ok(!("password" in user), "an IAM database user has no password");
    assert.match(String(user.name), /module\.stats\.service_account_email/);
    const settings = nested(resource(root, "google_sql_database_instance", "stats"), "settings");
    assert.deepEqual(settings.database_flags, [
      { name: "cloudsql.iam_authentication", value: "on" },
    ]);
    assert.equal(nested(settings, "ip_configuration").ssl_mode, "ENCRYPTED_ONLY");
    for (const [file, text] of Object.entries(root.files)) {
      assert.doesNotMatch(withoutComments(text), /password\s*=/, `${file} sets a password`);
    }
  });

  test("stats' Cloud SQL roles hold on its own instance only, and are in place before its service", () => {
    // Granted by the module to stats' own account, each with the condition the root gives.
    const grant = resource(module_, "google_project_iam_member", "project_roles");
    assert.equal(grant.for_each, expr("var.project_roles"));
    assert.equal(grant.role, expr("each.key"));
    assert.equal(grant.member, `serviceAccount:${expr("google_service_account.this.email")}`);
    assert.deepEqual(
      {
        title: nested(grant, "condition").title,
        expression: nested(grant, "condition").expression,
      },
      { title: expr("each.value.title"), expression: expr("each.value.expression") },
    );
    const service = resource(module_, "google_cloud_run_v2_service", "this");
    assert.ok(
      (service.depends_on as string[]).includes(expr("google_project_iam_member.project_roles")),
    );
    // Both roles, on stats' instance (resource.type and resource.name: Cloud SQL's IAM
    // Conditions, https://cloud.google.com/sql/docs/postgres/iam-conditions).
    const roles = source(block(root, "module", "stats").project_roles);
    assert.match(
      roles,
      /for role in \["roles\/cloudsql\.client", "roles\/cloudsql\.instanceUser"\] : role =>/,
    );
    assert.ok(
      roles.includes(
        `expression = "resource.type == \\"sqladmin.googleapis.com/Instance\\" && resource.name == \\"projects/${expr("var.project_id")}/instances/${expr("google_sql_database_instance.stats.name")}\\""`,
      ),
      roles,
    );
    for (const name of ["gateway", "route"]) {
      assert.ok(
        !("project_roles" in block(root, "module", name)),
        `module ${name}: no project roles`,
      );
    }
    // No project-wide grant to a service's account anywhere else.
    const projectGrants = Object.keys(
      (root.config.resource?.google_project_iam_member ?? {}) as Record<string, Body[]>,
    );
    assert.deepEqual(projectGrants, ["builder_writes_logs"]);
  });

  test("each service runs its image by digest from the repository, whose tags are immutable", () => {
    for (const name of Object.keys(topology)) {
      assert.equal(
        block(root, "module", name).image,
        expr(`local.images.${name}`),
        `module ${name}`,
      );
    }
    assert.match(
      String(locals(root).images),
      /"\$\{local\.image_base\}\/\$\{name\}@\$\{lookup\(var\.image_digests, name, ""\)\}"/,
    );
    const repository = resource(root, "google_artifact_registry_repository", "images");
    assert.equal(nested(repository, "docker_config").immutable_tags, true);
    const service = resource(module_, "google_cloud_run_v2_service", "this");
    const preconditions = nested(service, "lifecycle").precondition as Body[];
    assert.ok(
      preconditions.some((check) => String(check.condition).includes("@sha256:[0-9a-f]{64}$")),
      "the module refuses an image without a digest",
    );
  });

  test("Cloud Build's builder image is pinned by digest, the same in every step, and pushes each service's image", () => {
    const config = readFileSync(join(infra, "cloudbuild.yaml"), "utf8");
    const builders = [...config.matchAll(/^ {4}name: (\S+)$/gm)].map(([, name]) => name);
    assert.equal(builders.length, Object.keys(topology).length);
    for (const builder of builders) {
      assert.match(builder as string, /^gcr\.io\/cloud-builders\/docker@sha256:[0-9a-f]{64}$/);
    }
    assert.equal(new Set(builders).size, 1, "one builder for every step");
    const images = [...config.matchAll(/^ {2}- "(\S+)"$/gm)].map(([, image]) => image);
    assert.deepEqual(
      images,
      Object.keys(topology).map((name) => `\${_IMAGE_BASE}/${name}:\${_TAG}`),
    );
    for (const image of images) assert.ok(config.includes(`"-t", "${image}"`), image);
  });

  test("custom audiences reach Cloud Run's custom_audiences and the container's AUTH_AUDIENCES alike (the gateway's, from a variable)", () => {
    const service = resource(module_, "google_cloud_run_v2_service", "this");
    assert.equal(service.custom_audiences, expr("var.custom_audiences"));
    assert.deepEqual(block(module_, "variable", "custom_audiences").default, []);
    assert.equal(
      block(root, "module", "gateway").custom_audiences,
      expr("var.gateway_custom_audiences"),
    );
    for (const name of ["route", "stats"]) {
      assert.ok(!("custom_audiences" in block(root, "module", name)), `module ${name}`);
    }
  });

  test("a stop fits in Cloud Run's 10 s with a margin: the grace Terraform sets plus what the code adds", () => {
    const variable = block(module_, "variable", "shutdown_grace_ms");
    const grace = variable.default as number;
    assert.match(
      String(locals(module_).container_env),
      /SHUTDOWN_GRACE_MS\s*=\s*tostring\(var\.shutdown_grace_ms\)/,
    );
    for (const name of Object.keys(topology)) {
      assert.ok(
        !("shutdown_grace_ms" in block(root, "module", name)),
        `module ${name} keeps the default`,
      );
    }
    assert.ok(
      worstStop(grace) <= cloudRunKillMs - marginMs,
      `a stop may take ${worstStop(grace)} ms, over ${cloudRunKillMs - marginMs} ms`,
    );
    // The largest grace the variable accepts fits too.
    const [, largest] =
      /var\.shutdown_grace_ms <= (\d+)/.exec(
        String((variable.validation as Body[])[0]?.condition),
      ) ?? [];
    assert.ok(largest, "shutdown_grace_ms has an upper bound");
    assert.ok(worstStop(Number(largest)) <= cloudRunKillMs - marginMs);
    assert.ok(
      worstStop(Number(largest) + 1) > cloudRunKillMs - marginMs,
      "and no lower bound than needed",
    );
  });

  test("outputs name only outputs the module declares", () => {
    const declared = Object.keys(module_.config.output ?? {});
    for (const [file, text] of Object.entries(root.files)) {
      for (const [, , output] of withoutComments(text).matchAll(/module\.(\w+)\.(\w+)/g)) {
        assert.ok(
          declared.includes(output as string),
          `${file}: module output ${output} is not declared`,
        );
      }
    }
  });
});

describe("infra: variables", () => {
  for (const [label, dir] of [
    ["root", () => root],
    ["module", () => module_],
  ] as const) {
    test(`${label}: every variable used is declared, and every declared one is used`, () => {
      const terraform = dir();
      const declared = Object.keys(terraform.config.variable ?? {}).sort();
      const used = new Set<string>();
      for (const text of Object.values(terraform.files)) {
        for (const [, name] of withoutComments(text).matchAll(/\bvar\.(\w+)/g))
          used.add(name as string);
      }
      assert.deepEqual([...used].sort(), declared);
    });
  }

  test("each module call passes only variables the module declares, and all it requires", () => {
    const variables = module_.config.variable as Record<string, Body[]>;
    const required = Object.entries(variables)
      .filter(([, [body]]) => !("default" in (body as Body)))
      .map(([name]) => name);
    const meta = new Set(["source", "depends_on", "providers", "count", "for_each"]);
    for (const name of Object.keys(topology)) {
      const inputs = Object.keys(block(root, "module", name)).filter((key) => !meta.has(key));
      for (const input of inputs)
        assert.ok(input in variables, `module ${name}: unknown input ${input}`);
      for (const input of required)
        assert.ok(inputs.includes(input), `module ${name}: missing ${input}`);
    }
  });

  test("terraform.tfvars.example sets only declared variables, and every required one", async () => {
    const example = (await parse(
      "terraform.tfvars.example",
      readFileSync(join(infra, "terraform.tfvars.example"), "utf8"),
    )) as Body;
    const variables = root.config.variable as Record<string, Body[]>;
    for (const key of Object.keys(example)) assert.ok(key in variables, `unknown variable ${key}`);
    const required = Object.entries(variables)
      .filter(([, [body]]) => !("default" in (body as Body)))
      .map(([name]) => name);
    assert.deepEqual(
      required.filter((name) => !(name in example)),
      [],
      "the example must set every required variable (scripts/deploy.sh passes image_digests)",
    );
  });

  test("the google provider is pinned to a major version in the root and the module", () => {
    for (const dir of [root, module_]) {
      const [terraform] = Object.values(dir.config.terraform ?? {}) as unknown as Body[];
      const providers = nested(terraform as Body, "required_providers");
      const google = providers.google as Body;
      assert.equal(google.source, "hashicorp/google");
      assert.match(String(google.version), /^~> \d+\.\d+$/);
    }
  });
});

describe("infra: the module's expressions, evaluated by terraform", () => {
  const skip = terraformFound ? false : "terraform is not on PATH here";
  const gatewaySa = "serviceAccount:gateway-svc@my-project.iam.gserviceaccount.com";
  const routeSa = "serviceAccount:route-svc@my-project.iam.gserviceaccount.com";

  test("not public (the default): AUTH_MODE=verify, the invoker IAM check on", { skip }, () => {
    for (const name of ["gateway", "route", "stats"]) {
      const result = evaluateModule({ name, invokers: { client: routeSa } });
      assert.equal(result.error, undefined, result.error);
      assert.equal(result.env?.AUTH_MODE, "verify", name);
      assert.equal(result.invokerIamDisabled, false, name);
    }
  });

  test("public: the gateway gets AUTH_MODE=optional and invoker_iam_disabled; route and stats are refused", {
    skip,
  }, () => {
    const gateway = evaluateModule({ name: "gateway", public: true, invokers: {} });
    assert.equal(gateway.error, undefined, gateway.error);
    assert.equal(gateway.env?.AUTH_MODE, "optional");
    assert.equal(gateway.invokerIamDisabled, true);
    for (const name of ["route", "stats"]) {
      const refused = evaluateModule({ name, public: true, invokers: { gateway: gatewaySa } });
      assert.match(refused.error ?? "", /Only the gateway may be public/, name);
    }
  });

  test("AUTH_ALLOWED_INVOKERS carries each invoker's methods from the topology", { skip }, () => {
    const result = evaluateModule({
      name: "stats",
      invokers: { gateway: gatewaySa, route: routeSa },
      invoker_methods: topology.stats?.invoked_by,
    });
    assert.equal(result.error, undefined, result.error);
    assert.equal(
      result.env?.AUTH_ALLOWED_INVOKERS,
      "gateway-svc@my-project.iam.gserviceaccount.com=GetStats|WatchStats,route-svc@my-project.iam.gserviceaccount.com=RecordEvents",
    );
    // An invoker without methods listed may call every method (the gateway's clients).
    const open = evaluateModule({ name: "gateway", invokers: { client: routeSa } });
    assert.equal(open.env?.AUTH_ALLOWED_INVOKERS, "route-svc@my-project.iam.gserviceaccount.com");
    const unknown = evaluateModule({
      name: "stats",
      invokers: { route: routeSa },
      invoker_methods: { gateway: ["GetStats"] },
    });
    assert.match(unknown.error ?? "", /invoker_methods names an invoker label/);
    const badName = evaluateModule({
      name: "stats",
      invokers: { route: routeSa },
      invoker_methods: { route: ["recordEvents"] },
    });
    assert.match(badName.error ?? "", /method names such as GetStats/);
  });

  test("every module block of the root passes the module's checks with its own env keys and end users", {
    skip,
  }, () => {
    for (const name of ["gateway", "route", "stats"]) {
      const module = block(root, "module", name);
      const env = Object.fromEntries(
        Object.keys((module.env ?? {}) as Body).map((key) => [key, "value"]),
      );
      const endUserFrom =
        "end_user_from" in module ? ["gateway-svc@my-project.iam.gserviceaccount.com"] : [];
      const result = evaluateModule({
        name,
        invokers: { gateway: gatewaySa },
        env,
        end_user_from: endUserFrom,
      });
      assert.equal(result.error, undefined, `module ${name}: ${result.error}`);
      assert.equal(result.env?.AUTH_END_USER_FROM, endUserFrom.join(","), name);
    }
    const refused = evaluateModule({
      name: "route",
      invokers: { gateway: gatewaySa },
      env: { AUTH_END_USER_FROM: "someone@example.com" },
    });
    assert.match(refused.error ?? "", /env must not set PORT/);
    const notEmail = evaluateModule({
      name: "route",
      invokers: { gateway: gatewaySa },
      end_user_from: ["not an email"],
    });
    assert.match(notEmail.error ?? "", /end_user_from must list email addresses/);
  });

  test("peers takes <SERVICE>_URL names only: no AUTH_JWKS_URL or other settings slipped in", {
    skip,
  }, () => {
    const base = { name: "route", invokers: { gateway: gatewaySa } };
    const ok = evaluateModule({
      ...base,
      peers: { STATS_URL: "https://stats-1.europe-west1.run.app" },
    });
    assert.equal(ok.error, undefined, ok.error);
    assert.equal(ok.env?.STATS_URL, "https://stats-1.europe-west1.run.app");
    for (const peers of [
      { AUTH_JWKS_URL: "https://attacker.example/jwks" },
      { AUTH_URL: "https://attacker.example" },
      { STATS_DATABASE_URL: "https://stats-1.europe-west1.run.app" },
      { STATS_URL: "http://stats-1.europe-west1.run.app" },
      { STATS_URL: "https://stats-1.europe-west1.run.app/path" },
    ]) {
      const refused = evaluateModule({ ...base, peers });
      assert.match(
        refused.error ?? "",
        /peers must map <SERVICE>_URL variables/,
        JSON.stringify(peers),
      );
    }
  });
});

describe("infra: the module's deploy inputs, evaluated by terraform", () => {
  const skip = terraformFound ? false : "terraform is not on PATH here";
  const gatewaySa = "serviceAccount:gateway-svc@my-project.iam.gserviceaccount.com";

  test("an image by tag is refused: only a digest names one image for good", { skip }, () => {
    const refused = evaluateModule({
      name: "route",
      invokers: { gateway: gatewaySa },
      image: "europe-west1-docker.pkg.dev/my-project/routeguide/route:abc123",
    });
    assert.match(refused.error ?? "", /image must name its digest/);
  });

  test("custom audiences join the service URL in AUTH_AUDIENCES, which the gateway's own config accepts", {
    skip,
  }, () => {
    const peers = {
      ROUTE_URL: "https://route-1.europe-west1.run.app",
      STATS_URL: "https://stats-1.europe-west1.run.app",
    };
    const result = evaluateModule({
      name: "gateway",
      invokers: { client: gatewaySa },
      peers,
      custom_audiences: ["https://api.example.com"],
    });
    assert.equal(result.error, undefined, result.error);
    assert.equal(
      result.env?.AUTH_AUDIENCES,
      "https://svc-123.europe-west1.run.app,https://api.example.com",
    );
    // The environment Terraform writes is one the gateway starts with.
    const config = parseConfig(gatewayConfigSchema, { ...result.env });
    assert.deepEqual(config.AUTH_AUDIENCES, [
      "https://svc-123.europe-west1.run.app",
      "https://api.example.com",
    ]);
    assert.equal(config.SHUTDOWN_GRACE_MS, block(module_, "variable", "shutdown_grace_ms").default);
    const bad = evaluateModule({
      name: "gateway",
      invokers: { client: gatewaySa },
      custom_audiences: ["https://api.example.com/"],
    });
    assert.match(bad.error ?? "", /custom_audiences must be https:\/\/ URLs/);
  });

  test("SHUTDOWN_GRACE_MS is the module's to set, within Cloud Run's 10 s", { skip }, () => {
    const base = { name: "route", invokers: { gateway: gatewaySa } };
    assert.equal(evaluateModule(base).env?.SHUTDOWN_GRACE_MS, "6000");
    assert.equal(evaluateModule({ ...base, shutdown_grace_ms: 6400 }).error, undefined);
    assert.match(
      evaluateModule({ ...base, shutdown_grace_ms: 6401 }).error ?? "",
      /shutdown_grace_ms must be 0 to 6400/,
    );
    assert.match(
      evaluateModule({ ...base, env: { SHUTDOWN_GRACE_MS: "9000" } }).error ?? "",
      /env must not set PORT \(Cloud Run sets it\), SHUTDOWN_GRACE_MS/,
    );
  });
});

describe("infra: the root's variables, evaluated by terraform", () => {
  const skip = terraformFound ? false : "terraform is not on PATH here";

  test("image_digests takes sha256 digests of gateway, route and stats, nothing else", {
    skip,
  }, () => {
    const digest = `sha256:${"a".repeat(64)}`;
    assert.equal(
      evaluateRootVariables({ image_digests: { gateway: digest, route: digest, stats: digest } }),
      undefined,
    );
    assert.match(
      evaluateRootVariables({ image_digests: { gateway: "latest" } }) ?? "",
      /image_digests must map gateway, route and stats to sha256/,
    );
    assert.match(
      evaluateRootVariables({ image_digests: { worker: digest } }) ?? "",
      /image_digests must map gateway, route and stats/,
    );
  });

  test("gateway_custom_audiences takes https:// URLs as callers name them", { skip }, () => {
    assert.equal(
      evaluateRootVariables({ gateway_custom_audiences: ["https://api.example.com"] }),
      undefined,
    );
    for (const audience of [
      "https://api.example.com/",
      "http://api.example.com",
      "api.example.com",
    ]) {
      assert.match(
        evaluateRootVariables({ gateway_custom_audiences: [audience] }) ?? "",
        /gateway_custom_audiences must be https:\/\/ URLs/,
        audience,
      );
    }
  });
});

describe("infra: formatting", () => {
  test("is formatted as terraform fmt leaves it", (t) => {
    const found = spawnSync("terraform", ["version"], { stdio: "ignore" });
    if (found.error) {
      t.skip("terraform is not on PATH here: install it to check formatting");
      return;
    }
    try {
      execFileSync("terraform", ["fmt", "-check", "-recursive", "-diff", infra], {
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch (error) {
      assert.fail(
        `terraform fmt -check failed; run terraform fmt -recursive infra:\n${String((error as { stdout?: Buffer }).stdout)}`,
      );
    }
  });
});

describeLocalOnly("infra: the probes against the running services", () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({ auth: false });
  });
  after(() => stack?.stop());

  test("each module's health_service is a name its service answers SERVING for", async () => {
    const expected = {
      gateway: serviceNames.gateway,
      route: serviceNames.routeGuide,
      stats: serviceNames.stats,
    };
    for (const name of ["gateway", "route", "stats"] as const) {
      const probed = String(block(root, "module", name).health_service);
      assert.equal(probed, expected[name], `module ${name}: health_service`);
      assert.equal(await healthStatus(`127.0.0.1:${stack[name].port}`, probed), "SERVING", name);
    }
  });

  test("a name the service did not register is NOT_FOUND, so a wrong probe name would fail", async () => {
    const error = await failure(
      healthStatus(`127.0.0.1:${stack.route.port}`, "routeguide.RouteGuide"),
    );
    assert.equal((error as grpc.ServiceError).code, 5);
  });
});

describeLocalOnly("infra: the shutdown budget, measured", () => {
  test("route's slowest stop with the grace Terraform sets (a call held open, stats unreachable) ends inside the budget", async () => {
    const grace = block(module_, "variable", "shutdown_grace_ms").default as number;
    // Nothing listens there: route's reports to stats stay queued, so at shutdown it waits
    // for them as long as it may.
    const deadStats = `http://127.0.0.1:${await freePort()}`;
    const route = await startService({
      name: "route",
      env: { STATS_URL: deadStats, SHUTDOWN_GRACE_MS: String(grace) },
    });
    const client = createRouteGuideClient(targetOf(route.url), grpc.credentials.createInsecure());
    try {
      const chat = client.RouteChat(deadline(60_000));
      const chatEnd = failure(collect(chat));
      chat.write({ note: { location: { latitude: 1, longitude: 1 }, message: "held open" } });
      await unary((done) =>
        client.GetFeature({ point: { latitude: 1, longitude: 1 } }, deadline(), done),
      );

      const stopping = performance.now();
      route.child.kill("SIGTERM");
      assert.equal(await route.exited, 0);
      const took = performance.now() - stopping;
      assert.equal((await chatEnd).code, grpc.status.UNAVAILABLE);
      const logged = await eventually(
        async () => route.lines.join("\n"),
        (lines) => lines.includes("grace period over") && lines.includes("reports lost"),
        5_000,
      );
      assert.ok(logged.includes("reports lost"), "the flush waited for stats as long as it may");
      // The slow path really ran (the grace, then the flush's whole second), and ended within
      // the computed worst case, which leaves the margin before Cloud Run's SIGKILL.
      assert.ok(took >= grace + afterShutdownMinMs, `stopped in ${Math.round(took)} ms`);
      assert.ok(
        took < worstStop(grace),
        `stopped in ${Math.round(took)} ms, over ${worstStop(grace)} ms`,
      );
      assert.ok(worstStop(grace) <= cloudRunKillMs - marginMs);
    } finally {
      client.close();
      await route.stop();
    }
  });
});
