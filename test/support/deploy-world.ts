// The world the cloud stand-ins (cloud-stand-ins.ts) act on, built from the real infra/: every
// resource and data source with what it depends on (so -target applies what Terraform would)
// and the role bindings it creates, members and roles resolved from the configuration, the
// tfvars and infra/topology.json. An expression form the resolver does not know fails loudly
// rather than being guessed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Grant, TfResource, World } from "./cloud-stand-ins.js";
import {
  type Body,
  block,
  expr,
  loadDir,
  locals,
  resources,
  type TerraformDir,
} from "./terraform.js";

export interface WorldOptions {
  infraDir: string;
  project: string;
  region: string;
  /** The deployer's IAM member, e.g. user:dev@example.com, and the roles it holds on the project. */
  deployer: string;
  deployerRoles: string[];
  /** The tfvars the deploy runs with (lists only: client_token_creators, gateway_invokers). */
  tfvars: Record<string, string[] | string>;
  propagationChecks: number;
}

type Scope = { module?: string };

// Parsed once per run: hcl2json is slow, and infra/ does not change during it.
const parsed = new Map<string, Promise<TerraformDir>>();
const load = (dir: string) => {
  if (!parsed.has(dir)) parsed.set(dir, loadDir(dir));
  return parsed.get(dir) as Promise<TerraformDir>;
};

export async function buildWorld(options: WorldOptions): Promise<World> {
  const root = await load(options.infraDir);
  const mod = await load(join(options.infraDir, "modules", "grpc-service"));
  const topology = JSON.parse(readFileSync(join(options.infraDir, "topology.json"), "utf8"))
    .services as Record<string, { service_account_id: string; external_invokers: string[] }>;
  const { project, region } = options;
  const email = (accountId: string) => `${accountId}@${project}.iam.gserviceaccount.com`;
  const rootVar = (name: string): unknown =>
    options.tfvars[name] ?? block(root, "variable", name).default;
  const modules = root.config.module as Record<string, Body[]>;
  const moduleCall = (name: string) => block(root, "module", name);

  // Addresses of everything declared, with their bodies and scopes.
  const declared = new Map<string, { type: string; body: Body; scope: Scope }>();
  for (const kind of ["resource", "data"]) {
    const prefix = kind === "data" ? "data." : "";
    for (const [type, name, body] of resources(root, kind)) {
      declared.set(`${prefix}${type}.${name}`, { type: `${prefix}${type}`, body, scope: {} });
    }
    for (const moduleName of Object.keys(modules)) {
      for (const [type, name, body] of resources(mod, kind)) {
        declared.set(`module.${moduleName}.${prefix}${type}.${name}`, {
          type: `${prefix}${type}`,
          body,
          scope: { module: moduleName },
        });
      }
    }
  }
  const inModule = (moduleName: string) =>
    [...declared.keys()].filter((address) => address.startsWith(`module.${moduleName}.`));

  // What an expression depends on, as Terraform's graph has it: resources it names, module
  // outputs through their own expressions, locals and module variables through theirs.
  const rootLocals = locals(root);
  const moduleLocals = locals(mod);
  const refs = (value: unknown, scope: Scope, seen = new Set<string>()): Set<string> => {
    const found = new Set<string>();
    const text = JSON.stringify(value ?? null);
    const at = (address: string) => (scope.module ? `module.${scope.module}.${address}` : address);
    for (const [, data, type, name] of text.matchAll(/(?<![\w.])(data\.)?(google_\w+)\.(\w+)/g)) {
      const address = at(`${data ?? ""}${type}.${name}`);
      if (declared.has(address)) found.add(address);
    }
    const follow = (key: string, next: unknown, nextScope: Scope) => {
      if (seen.has(key)) return;
      seen.add(key);
      for (const address of refs(next, nextScope, seen)) found.add(address);
    };
    for (const [, name] of text.matchAll(/(?<![\w.])local\.(\w+)/g)) {
      const table = scope.module ? moduleLocals : rootLocals;
      follow(`${scope.module ?? ""}local.${name}`, table[name as string], scope);
    }
    if (scope.module) {
      for (const [, name] of text.matchAll(/(?<![\w.])var\.(\w+)/g)) {
        follow(`${scope.module}var.${name}`, moduleCall(scope.module)[name as string], {});
      }
    } else {
      for (const [, moduleName, output] of text.matchAll(/(?<![\w.])module\.(\w+)\.(\w+)/g)) {
        const body = block(mod, "output", output as string);
        follow(`module.${moduleName}.${output}`, body, { module: moduleName as string });
      }
      for (const [, moduleName] of text.matchAll(/(?<![\w.])module\.(\w+)(?![\w.])/g)) {
        for (const address of inModule(moduleName as string)) found.add(address);
      }
    }
    return found;
  };

  // Members and roles. A template names accounts by resource attributes or module outputs.
  const rootAccounts = Object.fromEntries(
    resources(root)
      .filter(([type]) => type === "google_service_account")
      .map(([, name, body]) => [name, email(String(body.account_id))]),
  ) as Record<string, string>;
  const moduleAccount = (moduleName: string) =>
    email((topology[moduleName] as { service_account_id: string }).service_account_id);
  const resolve = (template: string, scope: Scope): string => {
    const value = template
      .replace(/\$\{google_service_account\.(\w+)\.(email|name)\}/g, (_, name: string, attr) => {
        if (scope.module && name === "this") {
          return attr === "email"
            ? moduleAccount(scope.module)
            : `projects/${project}/serviceAccounts/${moduleAccount(scope.module)}`;
        }
        const account = rootAccounts[name];
        assert.ok(account, `no google_service_account.${name}`);
        return attr === "email" ? account : `projects/${project}/serviceAccounts/${account}`;
      })
      .replace(/\$\{module\.(\w+)\.service_account_(member|email)\}/g, (_, name: string, kind) =>
        kind === "member" ? `serviceAccount:${moduleAccount(name)}` : moduleAccount(name),
      );
    assert.ok(!value.includes("${"), `the deploy test's resolver cannot read ${template}`);
    return value;
  };
  // The members an expression lists (the gateway's merged invokers, an invokers map).
  const membersIn = (expression: unknown, scope: Scope): string[] => {
    if (expression && typeof expression === "object") {
      return Object.values(expression as Record<string, string>).map((member) =>
        resolve(member, scope),
      );
    }
    const text = String(expression);
    const members = new Set<string>();
    for (const [match] of text.matchAll(
      /serviceAccount:\$\{google_service_account\.\w+\.email\}/g,
    )) {
      members.add(resolve(match, scope));
    }
    for (const [match] of text.matchAll(/\$\{module\.\w+\.service_account_member\}/g)) {
      members.add(resolve(match, scope));
    }
    for (const [, name] of text.matchAll(/(?<![\w.])module\.(\w+)\.service_account_member/g)) {
      members.add(`serviceAccount:${moduleAccount(name as string)}`);
    }
    for (const [, name] of text.matchAll(/(?<![\w.])var\.(\w+)/g)) {
      for (const member of (rootVar(name as string) as string[] | undefined) ?? []) {
        members.add(member);
      }
    }
    for (const [, name] of text.matchAll(/local\.topology\.(\w+)\.external_invokers/g)) {
      for (const member of topology[name as string]?.external_invokers ?? []) members.add(member);
    }
    return [...members];
  };
  // for_each's [each.key, each.value] pairs.
  const forEach = (value: unknown, scope: Scope): [string, string][] => {
    const text = String(value);
    const literal = /^\$\{toset\(\[([^\]]*)\]\)\}$/.exec(text);
    if (literal) {
      return [...(literal[1] as string).matchAll(/"([^"]+)"/g)].map(([, item]) => [
        item as string,
        item as string,
      ]);
    }
    const rootList = /^\$\{toset\(var\.(\w+)\)\}$/.exec(text);
    if (rootList && !scope.module) {
      return ((rootVar(rootList[1] as string) as string[]) ?? []).map((item) => [item, item]);
    }
    const moduleVar = /^\$\{var\.(\w+)\}$/.exec(text);
    if (moduleVar && scope.module) {
      const argument = moduleCall(scope.module)[moduleVar[1] as string];
      if (argument === undefined) return [];
      if (moduleVar[1] === "project_roles") {
        // { for role in ["roles/…", …] : role => { … } }: the roles are the keys.
        const roles = [...JSON.stringify(argument).matchAll(/"(roles\/[\w.]+)"/g)].map(
          ([, role]) => role as string,
        );
        return [...new Set(roles)].map((role) => [role, role]);
      }
      return membersIn(argument, {}).map((member) => [member, member]);
    }
    // var.<flag> ? toset(local.<list>) : toset([]): the module's list unless the call turns
    // the flag off (its default, the module's variable, is on).
    const switched = /^\$\{var\.(\w+) \? toset\(local\.(\w+)\) : toset\(\[\]\)\}$/.exec(text);
    if (switched && scope.module) {
      const flag =
        moduleCall(scope.module)[switched[1] as string] ??
        block(mod, "variable", switched[1] as string).default;
      if (flag === false) return [];
      const list = moduleLocals[switched[2] as string];
      assert.ok(Array.isArray(list), `local.${switched[2]} is not a list of literals`);
      return (list as string[]).map((item) => [item, item]);
    }
    assert.fail(`the deploy test's resolver cannot read for_each = ${text}`);
  };
  const grantsOf = (type: string, body: Body, scope: Scope): Grant[] => {
    const on = {
      google_project_iam_member: "project",
      google_artifact_registry_repository_iam_member: "repository",
      google_storage_bucket_iam_member: "source-bucket",
      google_cloud_run_v2_service_iam_member: `service:${scope.module}`,
      google_service_account_iam_member: `account:${resolve(String(body.service_account_id), scope).replace(/^projects\/[^/]+\/serviceAccounts\//, "")}`,
    }[type];
    if (!on) return [];
    const pairs = body.for_each === undefined ? [["", ""]] : forEach(body.for_each, scope);
    return pairs.map(([key, value]) => {
      const pick = (template: string) =>
        template === expr("each.key")
          ? (key as string)
          : template === expr("each.value")
            ? (value as string)
            : resolve(template, scope);
      return { member: pick(String(body.member)), role: pick(String(body.role)), on };
    });
  };

  const tfResources: Record<string, TfResource> = {};
  for (const [address, { type, body, scope }] of declared) {
    const deps = refs(body, scope);
    if (scope.module) {
      for (const address of refs(moduleCall(scope.module).depends_on, {})) deps.add(address);
    }
    deps.delete(address);
    tfResources[address] = {
      type,
      deps: [...deps].sort(),
      grants: grantsOf(type, body, scope),
      ...(type === "google_cloud_run_v2_service" && scope.module
        ? { service: { name: scope.module, account: moduleAccount(scope.module) } }
        : {}),
    };
  }

  const builder = rootAccounts.builder as string;
  const client = rootAccounts.client as string;
  const imageBase = `${region}-docker.pkg.dev/${project}/${rootVar("repository_id")}`;
  const bucket = resources(root).find(
    ([type, name]) => type === "google_storage_bucket" && name === "build_source",
  );
  assert.ok(bucket, "no google_storage_bucket.build_source");
  const bucketName = resolve(String(bucket[2].name).replace(expr("var.project_id"), project), {});
  const statsUser = moduleAccount("stats").replace(/\.gserviceaccount\.com$/, "");
  return {
    project,
    deployer: options.deployer,
    grants: options.deployerRoles.map((role) => ({
      member: options.deployer,
      role,
      on: "project",
    })),
    propagationChecks: options.propagationChecks,
    accounts: { builder, client },
    imageBase,
    gatewayUrl: `https://gateway-123456789012.${region}.run.app`,
    terraform: {
      resources: tfResources,
      applied: [],
      console: {
        "local.image_base": {
          value: imageBase,
          after: "google_artifact_registry_repository.images",
        },
        "var.project_id": { value: project, after: "" },
        "google_service_account.builder.id": {
          value: `projects/${project}/serviceAccounts/${builder}`,
          after: "google_service_account.builder",
        },
        "google_storage_bucket.build_source.name": {
          value: bucketName,
          after: "google_storage_bucket.build_source",
        },
        "google_sql_database_instance.stats.connection_name": {
          value: `${project}:${region}:${rootVar("stats_database_instance")}`,
          after: "google_sql_database_instance.stats",
        },
        "google_sql_database.stats.name": { value: "stats", after: "google_sql_database.stats" },
        "google_sql_user.stats.name": { value: statsUser, after: "google_sql_user.stats" },
      },
      outputs: {
        gateway_url: {
          value: `https://gateway-123456789012.${region}.run.app`,
          after: "module.gateway.google_cloud_run_v2_service.this",
        },
        client_service_account_email: { value: client, after: "google_service_account.client" },
      },
      applies: [],
    },
    registry: {},
    tokens: {},
    calls: [],
    checks: [],
    idTokenRequests: [],
  };
}
