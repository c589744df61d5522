// Each Cloud Run service of infra/, read as Terraform would deploy it: the root's `module`
// blocks whose source declares a google_cloud_run_v2_service, their inputs, and that resource's
// own settings (ingress, invoker_iam_disabled, timeout, concurrency, scaling, port, probes),
// through the module's variables. Parsed with @cdktf/hcl2json, as test/infra.test.ts does:
// there is no terraform or provider here to plan with.
//
// Only the expressions this infra uses are evaluated: literals, var.X (a root variable's value
// or default; a module's input or default), !X, tostring(X), "…${X}…" interpolation,
// local.topology.<service>.<field> and module.<service>.<output>. Anything else (a Cloud SQL
// connection name, merge(...)) is "unresolved": an env entry that is unresolved is left out
// (the caller gives a local value), a setting that is unresolved is an error naming it.
// Who may invoke a service comes from infra/topology.json, which Terraform reads for its
// run.invoker bindings (test/infra.test.ts holds the two equal).
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse } from "@cdktf/hcl2json";
import { loadTopology, type Topology } from "@cloudrun-grpc/auth-client/topology";

export type Ingress =
  | "INGRESS_TRAFFIC_ALL"
  | "INGRESS_TRAFFIC_INTERNAL_ONLY"
  | "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER";

export interface Probe {
  /** grpc: grpc.health.v1 Check of `service`; tcp: the port accepts a connection. */
  kind: "grpc" | "tcp";
  service: string;
  initialDelaySeconds: number;
  periodSeconds: number;
  timeoutSeconds: number;
  failureThreshold: number;
}

export interface ServiceDefinition {
  name: string;
  serviceAccountId: string;
  ingress: Ingress;
  invokerIamDisabled: boolean;
  /** Callers from the topology: service name → the methods of this service it may call. */
  invokedBy: Record<string, string[]>;
  /** Invokers from outside the topology (emails; their IAM member prefix dropped). */
  externalInvokers: string[];
  /** Services whose x-end-user this one believes (module input end_user_from). */
  endUserFrom: string[];
  /** The module's `env` entries that have a value here. */
  env: Record<string, string>;
  /** The module's `env` entries that do not (e.g. a Cloud SQL connection name). */
  unresolvedEnv: string[];
  /** Peer URL variables → the service they name (module input peers: module.<service>.url). */
  peers: Record<string, string>;
  /** The module's vpc_egress is set: its calls leave through the VPC, so count as internal. */
  vpcEgress: boolean;
  portName: string;
  containerPort: number;
  maxConcurrency: number;
  minInstances: number;
  maxInstances: number;
  requestTimeoutSeconds: number;
  startupProbe: Probe;
  livenessProbe: Probe | undefined;
  customAudiences: string[];
}

type Body = Record<string, unknown>;
type Value = unknown;

class Unresolved {
  constructor(readonly expression: string) {}
}

class ModuleOutput {
  constructor(
    readonly module: string,
    readonly output: string,
  ) {}
}

interface Scope {
  vars: Record<string, Value>;
  topology?: Topology;
}

function evaluateExpression(expression: string, scope: Scope): Value {
  const text = expression.trim();
  let match = /^var\.([A-Za-z_][A-Za-z0-9_-]*)$/.exec(text);
  if (match) {
    const name = match[1] as string;
    return name in scope.vars ? scope.vars[name] : new Unresolved(text);
  }
  match = /^!(.+)$/s.exec(text);
  if (match) {
    const inner = evaluateExpression(match[1] as string, scope);
    return typeof inner === "boolean" ? !inner : new Unresolved(text);
  }
  match = /^tostring\((.+)\)$/s.exec(text);
  if (match) {
    const inner = evaluateExpression(match[1] as string, scope);
    return typeof inner === "string" || typeof inner === "number" || typeof inner === "boolean"
      ? String(inner)
      : new Unresolved(text);
  }
  match = /^local\.topology\.([a-z][a-z0-9-]*)\.([a-z_]+)$/.exec(text);
  if (match && scope.topology) {
    const service = scope.topology.services[match[1] as string] as
      | Record<string, Value>
      | undefined;
    const field = service?.[match[2] as string];
    return field === undefined ? new Unresolved(text) : field;
  }
  match = /^module\.([A-Za-z_][A-Za-z0-9_-]*)\.([a-z_]+)$/.exec(text);
  if (match) return new ModuleOutput(match[1] as string, match[2] as string);
  if (/^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  if (text === "true" || text === "false") return text === "true";
  if (text === "null") return null;
  return new Unresolved(text);
}

/** hcl2json writes every expression as "${…}"; a whole-string one keeps its type. */
function evaluate(value: Value, scope: Scope): Value {
  if (typeof value === "string") {
    const whole = /^\$\{([\s\S]*)\}$/.exec(value);
    if (whole && !(whole[1] as string).includes("${")) {
      return evaluateExpression(whole[1] as string, scope);
    }
    if (!value.includes("${")) return value;
    let unresolved = false;
    const text = value.replace(/\$\{([^}]*)\}/g, (_, expression: string) => {
      const part = evaluateExpression(expression, scope);
      if (typeof part === "string" || typeof part === "number" || typeof part === "boolean") {
        return String(part);
      }
      unresolved = true;
      return "";
    });
    return unresolved ? new Unresolved(value) : text;
  }
  if (Array.isArray(value)) return value.map((item) => evaluate(item, scope));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Body).map(([key, item]) => [key, evaluate(item, scope)]),
    );
  }
  return value;
}

async function parseDir(dir: string): Promise<Record<string, Body>> {
  const merged: Record<string, Body> = {};
  for (const file of readdirSync(dir).filter((name) => name.endsWith(".tf"))) {
    const parsed = (await parse(file, readFileSync(join(dir, file), "utf8"))) as Record<
      string,
      Body
    >;
    for (const [kind, blocks] of Object.entries(parsed)) {
      merged[kind] = { ...merged[kind], ...blocks };
    }
  }
  return merged;
}

/** Variable name → its default (variables without one are left out: unresolved). */
function variableDefaults(config: Record<string, Body>): Record<string, Value> {
  const defaults: Record<string, Value> = {};
  for (const [name, bodies] of Object.entries(config.variable ?? {})) {
    const body = (bodies as Body[])[0];
    if (body && "default" in body) defaults[name] = body.default;
  }
  return defaults;
}

function single(body: Body | undefined, key: string): Body | undefined {
  const value = body?.[key];
  return Array.isArray(value) ? (value[0] as Body | undefined) : undefined;
}

class InfraError extends Error {
  constructor(service: string, message: string) {
    super(`infra: service ${service}: ${message}`);
    this.name = "InfraError";
  }
}

function required<T>(service: string, what: string, value: Value, check: (v: Value) => boolean): T {
  if (value instanceof Unresolved) {
    throw new InfraError(service, `${what} is ${value.expression}, which has no value here`);
  }
  if (!check(value)) throw new InfraError(service, `${what} is ${JSON.stringify(value)}`);
  return value as T;
}

const isNumber = (value: Value) => typeof value === "number" && Number.isFinite(value);

/**
 * A probe as the Cloud Run v2 API reads it. Unset fields take the API's defaults
 * (https://cloud.google.com/run/docs/configuring/healthchecks: period 10 s, timeout 1 s,
 * failure threshold 3, initial delay 0). Only gRPC and TCP probes are emulated (the services
 * speak h2c only; an HTTP probe would need HTTP/1).
 */
function probe(service: string, what: string, body: Body | undefined): Probe | undefined {
  if (!body) return undefined;
  const grpc = single(body, "grpc");
  const tcp = single(body, "tcp_socket");
  if (!grpc && !tcp) {
    throw new InfraError(
      service,
      `${what} is neither a gRPC nor a TCP probe (the only kinds emulated)`,
    );
  }
  const number = (key: string, fallback: number) =>
    body[key] === undefined
      ? fallback
      : required<number>(service, `${what}.${key}`, body[key], isNumber);
  return {
    kind: grpc ? "grpc" : "tcp",
    service:
      grpc?.service === undefined
        ? ""
        : required<string>(
            service,
            `${what}.grpc.service`,
            grpc.service,
            (v) => typeof v === "string",
          ),
    initialDelaySeconds: number("initial_delay_seconds", 0),
    periodSeconds: number("period_seconds", 10),
    timeoutSeconds: number("timeout_seconds", 1),
    failureThreshold: number("failure_threshold", 3),
  };
}

/** "300s" → 300 (the v2 API's duration format). */
function seconds(service: string, value: Value): number {
  const text = required<string>(service, "template.timeout", value, (v) => typeof v === "string");
  const match = /^(\d+(?:\.\d+)?)s$/.exec(text);
  if (!match)
    throw new InfraError(service, `template.timeout is ${JSON.stringify(text)}, not "<n>s"`);
  return Number(match[1]);
}

export interface LoadInfraOptions {
  /** Values of the root's variables, as a tfvars file gives them (defaults fill the rest). */
  variables?: Record<string, unknown>;
}

/** Every Cloud Run service that infraDir's root deploys through a module, by module name. */
export async function loadInfra(
  infraDir: string,
  options: LoadInfraOptions = {},
): Promise<Record<string, ServiceDefinition>> {
  const root = await parseDir(infraDir);
  const topology = loadTopology(join(infraDir, "topology.json"));
  const rootScope: Scope = {
    vars: { ...variableDefaults(root), ...options.variables },
    topology,
  };
  const modules = new Map<string, Record<string, Body>>();
  const services: Record<string, ServiceDefinition> = {};

  for (const [name, bodies] of Object.entries(root.module ?? {})) {
    const inputs = (bodies as Body[])[0] as Body;
    const source = inputs.source;
    if (typeof source !== "string" || !source.startsWith(".")) continue;
    const moduleDir = resolve(infraDir, source);
    if (!existsSync(moduleDir)) throw new InfraError(name, `module source ${source} not found`);
    let module = modules.get(moduleDir);
    if (!module) {
      module = await parseDir(moduleDir);
      modules.set(moduleDir, module);
    }
    const resource = module.resource?.google_cloud_run_v2_service as
      | Record<string, Body[]>
      | undefined;
    const serviceBody = resource ? Object.values(resource)[0]?.[0] : undefined;
    if (!serviceBody) continue;

    // The module's variables: its inputs (evaluated in the root) over its defaults.
    const given: Record<string, Value> = {};
    for (const [key, value] of Object.entries(inputs)) {
      if (key !== "source" && key !== "depends_on") given[key] = evaluate(value, rootScope);
    }
    const scope: Scope = { vars: { ...variableDefaults(module), ...given } };
    const service = evaluate(serviceBody, scope) as Body;
    const serviceName = required<string>(
      name,
      "name",
      service.name ?? given.name,
      (v) => typeof v === "string",
    );
    if (!(serviceName in topology.services)) {
      throw new InfraError(
        serviceName,
        "is not in topology.json (who may invoke it comes from there)",
      );
    }
    const template = single(service, "template");
    const container = single(template, "containers");
    const port = single(container, "ports");
    const scaling = single(template, "scaling");
    const portName = required<string>(
      serviceName,
      "template.containers.ports.name",
      port?.name ?? "http1",
      (v) => typeof v === "string",
    );
    if (portName !== "h2c") {
      throw new InfraError(
        serviceName,
        `its port is named ${JSON.stringify(portName)}, not h2c: only HTTP/2 end to end is emulated`,
      );
    }

    const env: Record<string, string> = {};
    const unresolvedEnv: string[] = [];
    for (const [key, value] of Object.entries((given.env as Body | undefined) ?? {})) {
      if (typeof value === "string") env[key] = value;
      else unresolvedEnv.push(key);
    }
    const peers: Record<string, string> = {};
    for (const [key, value] of Object.entries((given.peers as Body | undefined) ?? {})) {
      if (!(value instanceof ModuleOutput) || value.output !== "url") {
        throw new InfraError(serviceName, `peers.${key} is not module.<service>.url`);
      }
      peers[key] = value.module;
    }
    const endUserFrom = ((given.end_user_from as Value[] | undefined) ?? []).map((value) => {
      if (!(value instanceof ModuleOutput)) {
        throw new InfraError(
          serviceName,
          "end_user_from holds something other than module.<service>.service_account_email",
        );
      }
      return value.module;
    });
    const audiences = service.custom_audiences ?? [];
    const entry = topology.services[serviceName];

    services[name] = {
      name: serviceName,
      serviceAccountId: entry?.service_account_id as string,
      ingress: required<Ingress>(
        serviceName,
        "ingress",
        service.ingress ?? "INGRESS_TRAFFIC_ALL",
        (v) =>
          [
            "INGRESS_TRAFFIC_ALL",
            "INGRESS_TRAFFIC_INTERNAL_ONLY",
            "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
          ].includes(v as string),
      ),
      invokerIamDisabled: required<boolean>(
        serviceName,
        "invoker_iam_disabled",
        service.invoker_iam_disabled ?? false,
        (v) => typeof v === "boolean",
      ),
      invokedBy: entry?.invoked_by ?? {},
      externalInvokers: (entry?.external_invokers ?? []).map((member) =>
        member.slice(member.indexOf(":") + 1),
      ),
      endUserFrom,
      env,
      unresolvedEnv,
      peers,
      vpcEgress: given.vpc_egress !== undefined && given.vpc_egress !== null,
      portName,
      containerPort: required<number>(
        serviceName,
        "template.containers.ports.container_port",
        port?.container_port ?? 8080,
        isNumber,
      ),
      // The v2 API's defaults when unset: concurrency 80 per vCPU for new services, 80 here
      // (https://cloud.google.com/run/docs/about-concurrency); timeout 300 s
      // (https://cloud.google.com/run/docs/configuring/request-timeout); max instances 100
      // (https://cloud.google.com/run/docs/configuring/max-instances-limits).
      maxConcurrency: required<number>(
        serviceName,
        "template.max_instance_request_concurrency",
        template?.max_instance_request_concurrency ?? 80,
        isNumber,
      ),
      minInstances: required<number>(
        serviceName,
        "template.scaling.min_instance_count",
        scaling?.min_instance_count ?? 0,
        isNumber,
      ),
      maxInstances: required<number>(
        serviceName,
        "template.scaling.max_instance_count",
        scaling?.max_instance_count ?? 100,
        isNumber,
      ),
      requestTimeoutSeconds:
        template?.timeout === undefined ? 300 : seconds(serviceName, template.timeout),
      // Without a startup probe Cloud Run configures a TCP one on the container port
      // (https://cloud.google.com/run/docs/configuring/healthchecks, "The default TCP startup
      // probe").
      // That one keeps trying for up to 240 s; here, as attempts one second apart.
      startupProbe: probe(serviceName, "startup_probe", single(container, "startup_probe")) ?? {
        kind: "tcp",
        service: "",
        initialDelaySeconds: 0,
        periodSeconds: 1,
        timeoutSeconds: 1,
        failureThreshold: 240,
      },
      livenessProbe: probe(serviceName, "liveness_probe", single(container, "liveness_probe")),
      customAudiences: required<string[]>(
        serviceName,
        "custom_audiences",
        audiences,
        (v) => Array.isArray(v) && v.every((item) => typeof item === "string"),
      ),
    };
  }
  return services;
}
