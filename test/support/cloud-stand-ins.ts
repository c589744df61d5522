// Stand-ins for the tools scripts/deploy.sh drives (gcloud, terraform, pnpm, node) and for the
// Google APIs scripts/id-token.mjs calls, for test/deploy-script.test.ts: none of them can reach
// a cloud here. Each command is recorded, then checked: whoever the real command acts as must
// hold the roles Google's documentation says it needs (the tables below, each with its page),
// in an IAM policy kept in the "world": the test grants the deployer's roles, and the terraform
// stand-in adds the bindings infra/ declares as it applies them. A new binding is not seen by
// the first `propagationChecks` checks that would use it, as IAM takes a while to propagate
// (https://cloud.google.com/iam/docs/access-change-propagation). A missing role fails the
// command the way the real one fails: PERMISSION_DENIED naming the role, on stderr, exit 1.
//
// The stand-ins run in the test's process, behind a loopback port: bin/<tool> is a few lines of
// bash (`standInScript`) that send the command there and replay the answer, so a command costs
// no process start beyond bash's.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { type AddressInfo, createServer as createTcpServer } from "node:net";
import { join } from "node:path";

/** A role binding: who, which role, on what ("project" covers every resource of it). */
export interface Grant {
  member: string;
  role: string;
  on: string;
  /** Checks still to come that do not see it yet (IAM propagation). */
  pendingChecks?: number;
}

/** Who must hold a role, and on what, symbolically: memberOf and resourceOf resolve them. */
type Who = "deployer" | "builder" | "token";
type On =
  | "project"
  | "builder-account"
  | "client-account"
  | "repository"
  | "source-bucket"
  | "gateway-service"
  | "service-account";

export interface Need {
  who: Who;
  /** Any one of these does: the narrowest documented role first, then roles that include it. */
  anyOf: string[];
  on: On;
  /** The permission or step that needs it. */
  why: string;
  /** Where Google documents it. */
  doc: string;
}

// Artifact Registry's roles nest: reader < writer < repoAdmin < admin
// (https://cloud.google.com/artifact-registry/docs/access-control#roles).
const registryReaders = [
  "roles/artifactregistry.reader",
  "roles/artifactregistry.writer",
  "roles/artifactregistry.repoAdmin",
  "roles/artifactregistry.admin",
];

/** What each command deploy.sh runs needs, and of whom. */
export const commandRoles: Record<string, Need[]> = {
  "gcloud builds submit": [
    {
      who: "deployer",
      anyOf: ["roles/cloudbuild.builds.editor"],
      on: "project",
      why: "cloudbuild.builds.create",
      doc: "https://cloud.google.com/build/docs/iam-roles-permissions",
    },
    {
      who: "deployer",
      anyOf: ["roles/iam.serviceAccountUser"],
      on: "builder-account",
      why: "iam.serviceAccounts.actAs: the build runs as --service-account",
      doc: "https://cloud.google.com/iam/docs/service-account-permissions",
    },
    {
      who: "deployer",
      anyOf: ["roles/storage.admin"],
      on: "source-bucket",
      why: "gcloud uploads the source to --gcs-source-staging-dir (storage.buckets.get, storage.objects.create)",
      doc: "https://cloud.google.com/storage/docs/access-control/iam-roles",
    },
    {
      who: "builder",
      anyOf: ["roles/logging.logWriter"],
      on: "project",
      why: "options.logging CLOUD_LOGGING_ONLY: a user-specified account writes the build's logs",
      doc: "https://cloud.google.com/build/docs/securing-builds/configure-user-specified-service-accounts",
    },
    {
      who: "builder",
      anyOf: ["roles/storage.objectViewer", "roles/storage.objectAdmin", "roles/storage.admin"],
      on: "source-bucket",
      why: "the build fetches the staged source (storage.objects.get)",
      doc: "https://cloud.google.com/storage/docs/access-control/iam-roles",
    },
    {
      who: "builder",
      anyOf: registryReaders.slice(1),
      on: "repository",
      why: "the build pushes the images (artifactregistry.repositories.uploadArtifacts)",
      doc: "https://cloud.google.com/artifact-registry/docs/access-control#roles",
    },
  ],
  "gcloud artifacts docker images describe": [
    {
      who: "deployer",
      anyOf: registryReaders,
      on: "repository",
      why: "reads the tag and its version",
      doc: "https://cloud.google.com/sdk/gcloud/reference/artifacts/docker/images/describe",
    },
    {
      // gcloud asks Service Usage whether containeranalysis.googleapis.com is on before it
      // looks for build metadata (googlecloudsdk command_lib/artifacts: GetImageSummaryMetadata).
      who: "deployer",
      anyOf: ["roles/serviceusage.serviceUsageViewer", "roles/serviceusage.serviceUsageAdmin"],
      on: "project",
      why: "serviceusage.services.get",
      doc: "https://cloud.google.com/sdk/gcloud/reference/artifacts/docker/images/describe",
    },
  ],
  "node services/stats/scripts/grant-database.mjs": [
    {
      who: "deployer",
      anyOf: ["roles/cloudsql.admin"],
      on: "project",
      why: "sets the postgres user's password through the Admin API (cloudsql.users.update), then connects",
      doc: "https://cloud.google.com/sql/docs/postgres/iam-roles",
    },
  ],
  // scripts/id-token.mjs: google-auth-library's Impersonated.fetchIdToken.
  "iamcredentials generateIdToken": [
    {
      who: "deployer",
      anyOf: ["roles/iam.serviceAccountOpenIdTokenCreator", "roles/iam.serviceAccountTokenCreator"],
      on: "client-account",
      why: "iam.serviceAccounts.getOpenIdToken",
      doc: "https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateIdToken",
    },
  ],
  // The smoke call: Cloud Run's edge checks the token's account.
  "pnpm cli demo": [
    {
      who: "token",
      anyOf: ["roles/run.invoker"],
      on: "gateway-service",
      why: "run.routes.invoke",
      doc: "https://cloud.google.com/run/docs/securing/managing-access",
    },
  ],
};

/** What the deployer needs to create each kind of resource infra/ declares (terraform apply). */
export const terraformRoles: Record<string, Need[]> = {
  google_project_service: [
    {
      who: "deployer",
      anyOf: ["roles/serviceusage.serviceUsageAdmin"],
      on: "project",
      why: "serviceusage.services.enable",
      doc: "https://cloud.google.com/build/docs/securing-builds/configure-user-specified-service-accounts",
    },
  ],
  google_artifact_registry_repository: [
    {
      who: "deployer",
      anyOf: ["roles/artifactregistry.admin"],
      on: "project",
      why: "creates the repository and sets immutable tags",
      doc: "https://cloud.google.com/artifact-registry/docs/repositories/update-repo-settings",
    },
  ],
  google_artifact_registry_repository_iam_member: [
    {
      who: "deployer",
      anyOf: ["roles/artifactregistry.admin"],
      on: "project",
      why: "artifactregistry.repositories.setIamPolicy",
      doc: "https://cloud.google.com/artifact-registry/docs/access-control#roles",
    },
  ],
  google_service_account: [
    {
      who: "deployer",
      anyOf: ["roles/iam.serviceAccountCreator", "roles/iam.serviceAccountAdmin"],
      on: "project",
      why: "iam.serviceAccounts.create",
      doc: "https://cloud.google.com/iam/docs/service-accounts-create",
    },
  ],
  google_service_account_iam_member: [
    {
      who: "deployer",
      anyOf: ["roles/iam.serviceAccountAdmin"],
      on: "project",
      why: "iam.serviceAccounts.setIamPolicy",
      doc: "https://cloud.google.com/iam/docs/manage-access-service-accounts",
    },
  ],
  google_project_iam_member: [
    {
      who: "deployer",
      anyOf: ["roles/resourcemanager.projectIamAdmin"],
      on: "project",
      why: "resourcemanager.projects.setIamPolicy",
      doc: "https://cloud.google.com/iam/docs/granting-changing-revoking-access",
    },
  ],
  google_storage_bucket: [
    {
      who: "deployer",
      anyOf: ["roles/storage.admin"],
      on: "project",
      why: "storage.buckets.create",
      doc: "https://cloud.google.com/storage/docs/access-control/iam-roles",
    },
  ],
  google_storage_bucket_iam_member: [
    {
      who: "deployer",
      anyOf: ["roles/storage.admin"],
      on: "project",
      why: "storage.buckets.setIamPolicy",
      doc: "https://cloud.google.com/storage/docs/access-control/iam-roles",
    },
  ],
  google_compute_network: [
    {
      who: "deployer",
      anyOf: ["roles/compute.networkAdmin"],
      on: "project",
      why: "compute.networks.create",
      doc: "https://cloud.google.com/compute/docs/access/iam#compute.networkAdmin",
    },
  ],
  google_compute_subnetwork: [
    {
      who: "deployer",
      anyOf: ["roles/compute.networkAdmin"],
      on: "project",
      why: "compute.subnetworks.create",
      doc: "https://cloud.google.com/compute/docs/access/iam#compute.networkAdmin",
    },
  ],
  google_sql_database_instance: [
    {
      who: "deployer",
      anyOf: ["roles/cloudsql.admin"],
      on: "project",
      why: "cloudsql.instances.create",
      doc: "https://cloud.google.com/sql/docs/postgres/iam-roles",
    },
  ],
  google_sql_database: [
    {
      who: "deployer",
      anyOf: ["roles/cloudsql.admin"],
      on: "project",
      why: "cloudsql.databases.create",
      doc: "https://cloud.google.com/sql/docs/postgres/iam-roles",
    },
  ],
  google_sql_user: [
    {
      who: "deployer",
      anyOf: ["roles/cloudsql.admin"],
      on: "project",
      why: "cloudsql.users.create",
      doc: "https://cloud.google.com/sql/docs/postgres/iam-roles",
    },
  ],
  google_cloud_run_v2_service: [
    {
      who: "deployer",
      anyOf: ["roles/run.admin"],
      on: "project",
      why: "run.services.create, and setIamPolicy for invoker_iam_disabled",
      doc: "https://cloud.google.com/run/docs/reference/iam/roles",
    },
    {
      who: "deployer",
      anyOf: ["roles/iam.serviceAccountUser"],
      on: "service-account",
      why: "iam.serviceAccounts.actAs on the service identity",
      doc: "https://cloud.google.com/run/docs/configuring/services/service-identity",
    },
    {
      who: "deployer",
      anyOf: registryReaders,
      on: "repository",
      why: "deploys an image of the repository",
      doc: "https://cloud.google.com/artifact-registry/docs/integrate-cloud-run",
    },
  ],
  google_cloud_run_v2_service_iam_member: [
    {
      who: "deployer",
      anyOf: ["roles/run.admin"],
      on: "project",
      why: "run.services.setIamPolicy",
      doc: "https://cloud.google.com/run/docs/securing/managing-access",
    },
  ],
  // data "google_project" (the project number in a service's URL): resourcemanager.projects.get,
  // which Cloud Run Admin includes (https://cloud.google.com/run/docs/reference/iam/roles).
  "data.google_project": [
    {
      who: "deployer",
      anyOf: ["roles/run.admin", "roles/browser", "roles/viewer"],
      on: "project",
      why: "resourcemanager.projects.get",
      doc: "https://cloud.google.com/run/docs/reference/iam/roles",
    },
  ],
};

/** A resource infra/ declares, as the terraform stand-in applies it. */
export interface TfResource {
  /** The resource type, or data.<type> for a data source. */
  type: string;
  /** The addresses it depends on (directly): -target applies their closure. */
  deps: string[];
  /** The bindings it creates. */
  grants: Grant[];
  /** A Cloud Run service: its name and the email of its own account. */
  service?: { name: string; account: string };
}

export interface World {
  project: string;
  deployer: string;
  grants: Grant[];
  propagationChecks: number;
  accounts: { builder: string; client: string };
  imageBase: string;
  gatewayUrl: string;
  terraform: {
    resources: Record<string, TfResource>;
    applied: string[];
    /** terraform console: expression → its value, known once `after` is applied ("": always). */
    console: Record<string, { value: string; after: string }>;
    outputs: Record<string, { value: string; after: string }>;
    /** Every apply: its -target list and -var values. */
    applies: { targets: string[]; vars: Record<string, string> }[];
  };
  /** Artifact Registry: "<image>:<tag>" → digest. */
  registry: Record<string, string>;
  /** The ID tokens generateIdToken handed out: token → its claims. */
  tokens: Record<string, { email: string; aud: string }>;
  /** Every command, as "<tool> <args…>", in order (and ROUTEGUIDE_TOKEN=… for the CLI). */
  calls: string[];
  /** Every role check: the command, the need, and the role that met it (none: refused). */
  checks: { command: string; need: Need; metBy?: string }[];
  /** The bodies of the generateIdToken calls, in order. */
  idTokenRequests: { account: string; body: Record<string, unknown> }[];
}

/** The member a need names; `token` is the account of the smoke call's ID token. */
function memberOf(world: World, who: Who, token?: string): string {
  if (who === "deployer") return world.deployer;
  if (who === "builder") return `serviceAccount:${world.accounts.builder}`;
  if (!token) throw new Error("a token need without a token");
  return `serviceAccount:${token}`;
}

function resourceOf(world: World, on: On, serviceAccount?: string): string {
  switch (on) {
    case "builder-account":
      return `account:${world.accounts.builder}`;
    case "client-account":
      return `account:${world.accounts.client}`;
    case "service-account":
      return `account:${serviceAccount}`;
    case "gateway-service":
      return "service:gateway";
    default:
      return on;
  }
}

/**
 * The first need nobody holds, as the error the real API gives (PERMISSION_DENIED naming the
 * roles), or undefined when all are met. A binding still propagating is not seen, and the
 * check counts towards its propagation.
 */
export function unmet(
  world: World,
  command: string,
  needs: Need[],
  context: { token?: string; serviceAccount?: string } = {},
): string | undefined {
  let first: string | undefined;
  for (const need of needs) {
    const member = memberOf(world, need.who, context.token);
    const on = resourceOf(world, need.on, context.serviceAccount);
    const matching = world.grants.filter(
      (grant) =>
        grant.member === member &&
        need.anyOf.includes(grant.role) &&
        (grant.on === "project" || grant.on === on),
    );
    const visible = matching.find((grant) => !grant.pendingChecks);
    for (const grant of matching) {
      if (grant.pendingChecks) grant.pendingChecks -= 1;
    }
    world.checks.push({ command, need, ...(visible ? { metBy: visible.role } : {}) });
    if (!visible && first === undefined) {
      first =
        `PERMISSION_DENIED: ${member} lacks ${need.anyOf.join(" or ")} on ${on}` +
        ` (${need.why}; ${need.doc})`;
    }
  }
  return first;
}

/** -target's closure: the addresses and everything they depend on. */
export function closure(world: World, targets: string[]): string[] {
  const seen = new Set<string>();
  const visit = (address: string) => {
    if (seen.has(address)) return;
    seen.add(address);
    for (const dep of world.terraform.resources[address]?.deps ?? []) visit(dep);
  };
  for (const target of targets) visit(target);
  return [...seen];
}

interface Command {
  tool: string;
  args: string[];
  cwd: string;
  stdin: string;
  env: Record<string, string | undefined>;
}

interface Answer {
  status: number;
  stdout: string;
  stderr: string;
  /** Run this instead (the real node, for scripts/id-token.mjs). */
  exec?: string[];
}

/** One command, as the real tool would answer it. */
function run(world: World, { tool, args, cwd, stdin, env }: Command): Answer {
  world.calls.push(`${tool} ${args.join(" ")}`);
  const ok = (stdout = ""): Answer => ({ status: 0, stdout, stderr: "" });
  const fail = (stderr: string, status = 1): Answer => ({
    status,
    stdout: "",
    stderr: `${stderr}\n`,
  });
  const flag = (name: string): string | undefined => {
    const at = args.indexOf(name);
    if (at >= 0) return args[at + 1];
    return args.find((arg) => arg.startsWith(`${name}=`))?.slice(name.length + 1);
  };

  if (tool === "gcloud") {
    const command = args.slice(0, 4).join(" ");
    if (command.startsWith("builds submit")) {
      const denied = unmet(
        world,
        "gcloud builds submit",
        commandRoles["gcloud builds submit"] ?? [],
      );
      if (denied) return fail(`ERROR: (gcloud.builds.submit) ${denied}`);
      const builderId = `projects/${world.project}/serviceAccounts/${world.accounts.builder}`;
      if (flag("--service-account") !== builderId) {
        return fail(`ERROR: (gcloud.builds.submit) --service-account must be ${builderId}`);
      }
      if (flag("--project") !== world.project || args.at(-1) !== ".") {
        return fail(`stand-in gcloud: unexpected arguments: ${args.join(" ")}`, 2);
      }
      const substitutions = Object.fromEntries(
        (flag("--substitutions") ?? "").split(",").map((pair) => pair.split("=", 2)),
      ) as Record<string, string>;
      // The images the build config pushes (its `images:` list), substituted.
      const config = readFileSync(join(cwd, flag("--config") ?? "cloudbuild.yaml"), "utf8");
      const images = [...config.matchAll(/^\s+- "(\$\{_IMAGE_BASE\}\/[^"]+)"$/gm)].map((match) =>
        (match[1] as string).replace(/\$\{(_\w+)\}/g, (_, key: string) => substitutions[key] ?? ""),
      );
      if (images.length === 0) return fail("stand-in gcloud: the build config pushes no image", 2);
      for (const image of images) {
        if (image in world.registry) {
          // Immutable tags: a push to an existing tag is refused.
          return fail(
            `ERROR: (gcloud.builds.submit) build failed: pushing ${image}: the tag exists and the repository's tags are immutable`,
          );
        }
      }
      for (const image of images)
        world.registry[image] = `sha256:${randomBytes(32).toString("hex")}`;
      return ok(`DONE: pushed ${images.join(" ")}\n`);
    }
    if (command === "artifacts docker images describe") {
      const image = args[4] as string;
      if (
        flag("--format") !== "value(image_summary.digest)" ||
        flag("--project") !== world.project
      ) {
        return fail(`stand-in gcloud: unexpected flags: ${args.join(" ")}`, 2);
      }
      const name = "gcloud artifacts docker images describe";
      const denied = unmet(world, name, commandRoles[name] ?? []);
      if (denied) return fail(`ERROR: (gcloud.artifacts.docker.images.describe) ${denied}`);
      const digest = world.registry[image];
      if (!digest) {
        return fail(
          "ERROR: (gcloud.artifacts.docker.images.describe) NOT_FOUND: Requested entity was not found.",
        );
      }
      return ok(`${digest}\n`);
    }
    return fail(`stand-in gcloud: no stand-in for: gcloud ${args.join(" ")}`, 2);
  }

  if (tool === "terraform") {
    if (args[0] !== "-chdir=infra")
      return fail("stand-in terraform: expected -chdir=infra first", 2);
    const [command, ...rest] = args.slice(1);
    const tf = world.terraform;
    if (command === "init") return ok("Terraform has been successfully initialized!\n");
    if (command === "state" && rest[0] === "list") {
      if (tf.applied.length === 0) return fail("No state file was found!");
      return ok(`${tf.applied.join("\n")}\n`);
    }
    if (command === "console") {
      const expression = stdin.trim();
      const known = tf.console[expression];
      if (!known) return fail(`stand-in terraform console: no value for ${expression}`, 2);
      if (known.after && !tf.applied.includes(known.after)) {
        return fail(`Error: ${expression} is not known before ${known.after} is applied`);
      }
      return ok(`"${known.value}"\n`);
    }
    if (command === "output" && rest[0] === "-raw") {
      const output = tf.outputs[rest[1] as string];
      if (!output || !tf.applied.includes(output.after)) {
        return fail(`Error: Output "${rest[1]}" not found`);
      }
      return ok(output.value);
    }
    if (command === "apply") {
      if (!rest.includes("-auto-approve")) {
        return fail("stand-in terraform: apply without -auto-approve would prompt", 2);
      }
      const targets: string[] = [];
      const vars: Record<string, string> = {};
      for (let at = 0; at < rest.length; at++) {
        const arg = rest[at] as string;
        if (arg.startsWith("-target=")) {
          const target = arg.slice("-target=".length);
          if (!(target in tf.resources)) {
            return fail(
              `Error: Invalid target address: no resource ${target} in the configuration`,
            );
          }
          targets.push(target);
        } else if (arg === "-var") {
          const [key, value] = (rest[++at] as string).split(/=(.*)/s, 2) as [string, string];
          vars[key] = value;
        }
      }
      tf.applies.push({ targets, vars });
      const planned = (
        targets.length > 0 ? closure(world, targets) : Object.keys(tf.resources)
      ).filter((address) => !tf.applied.includes(address));
      const digests = Object.fromEntries(
        [...(vars.image_digests ?? "").matchAll(/(\w+)="(sha256:[0-9a-f]{64})"/g)].map((match) => [
          match[1],
          match[2],
        ]),
      ) as Record<string, string>;
      for (const address of planned) {
        const resource = tf.resources[address] as TfResource;
        const needs = terraformRoles[resource.type];
        if (!needs) {
          return fail(`stand-in terraform: no roles known for ${resource.type} (${address})`, 2);
        }
        const denied = unmet(world, `terraform apply ${resource.type}`, needs, {
          serviceAccount: resource.service?.account,
        });
        if (denied) return fail(`Error: creating ${address}: googleapi: Error 403: ${denied}`);
        if (resource.service) {
          // The module's precondition, then Cloud Run pulling the image by digest.
          const digest = digests[resource.service.name];
          if (!digest) {
            return fail(
              `Error: Resource precondition failed (${address}): image must name its digest`,
            );
          }
          const image = `${world.imageBase}/${resource.service.name}`;
          const pushed = Object.entries(world.registry).some(
            ([name, value]) => name.startsWith(`${image}:`) && value === digest,
          );
          if (!pushed)
            return fail(`Error: creating ${address}: Image '${image}@${digest}' not found.`);
        }
      }
      for (const address of planned) {
        tf.applied.push(address);
        for (const grant of tf.resources[address]?.grants ?? []) {
          world.grants.push({ ...grant, pendingChecks: world.propagationChecks });
        }
      }
      return ok(`Apply complete! Resources: ${planned.length} added.\n`);
    }
    return fail(`stand-in terraform: no stand-in for: terraform ${args.join(" ")}`, 2);
  }

  if (tool === "pnpm") {
    if (args.join(" ") === "--silent build") return ok();
    if (args[0] === "--silent" && args[1] === "cli" && args.at(-1) === "demo") {
      const token = env.ROUTEGUIDE_TOKEN ?? "";
      world.calls.push(`ROUTEGUIDE_TOKEN=${token}`);
      const claims = world.tokens[token];
      const gateway = flag("--gateway");
      // What the CLI prints when Cloud Run's edge refuses the token.
      if (!claims || claims.aud !== gateway || !claims.email) {
        return fail(`routeguide: UNAUTHENTICATED: no ID token for ${gateway} with an email claim`);
      }
      const denied = unmet(world, "pnpm cli demo", commandRoles["pnpm cli demo"] ?? [], {
        token: claims.email,
      });
      if (denied) return fail(`routeguide: PERMISSION_DENIED: ${denied}`);
      return ok("demo: every gateway method answered\n");
    }
    return fail(`stand-in pnpm: no stand-in for: pnpm ${args.join(" ")}`, 2);
  }

  if (tool === "node") {
    const grant = "node services/stats/scripts/grant-database.mjs";
    if (`node ${args[0]}` === grant) {
      const denied = unmet(world, grant, commandRoles[grant] ?? []);
      if (denied) return fail(`grant-database: ${denied}`);
      return args.length === 4 ? ok() : fail("usage: grant-database.mjs <instance> <db> <user>", 2);
    }
    if (args[0] === "scripts/id-token.mjs" && existsSync(join(cwd, args[0]))) {
      // The real script, with the real google-auth-library, against the API stand-ins below.
      return { status: 0, stdout: "", stderr: "", exec: [process.execPath, ...args] };
    }
    return fail(`stand-in node: no stand-in for: node ${args.join(" ")}`, 2);
  }
  return fail(`no stand-in for ${tool}`, 2);
}

/** An unsigned JWT-shaped token: the stand-ins read its claims back from the world. */
function idToken(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "RS256", typ: "JWT" })}.${part(claims)}.stand-in-signature`;
}

const deployerAccessToken = "stand-in-access-token-of-the-deployer";

/**
 * bin/<tool>: sends "<argument count>\0<tool>\0<cwd>\0<ROUTEGUIDE_TOKEN>\0<stdin>\0<args…>\0" to
 * the stand-ins at STAND_IN_PORT (bash's /dev/tcp) and replays "<status>\0<stdout>\0<stderr>\0",
 * then runs the program the answer names after it, if any (the real node).
 */
export function standInScript(tool: string): string {
  return `#!/usr/bin/env bash
# ${tool}, stood in for by test/support/cloud-stand-ins.ts (written by test/deploy-script.test.ts).
set -u
input=""
if [[ " $* " == *" console "* ]]; then input="$(cat)"; fi
exec 3<>"/dev/tcp/127.0.0.1/\${STAND_IN_PORT}" || exit 97
printf '%s\\0' "$#" ${tool} "$PWD" "\${ROUTEGUIDE_TOKEN-}" "$input" "$@" >&3
IFS= read -r -d '' status <&3
IFS= read -r -d '' out <&3
IFS= read -r -d '' err <&3
run=()
while IFS= read -r -d '' word <&3; do run+=("$word"); done
exec 3<&-
printf '%s' "$out"
printf '%s' "$err" >&2
if ((\${#run[@]})); then exec "\${run[@]}"; fi
exit "$status"
`;
}

export interface StandIns {
  /** For STAND_IN_PORT: where bin/<tool> sends its command. */
  port: number;
  /** For GCE_METADATA_HOST: google-auth-library's ADC finds a metadata server there. */
  metadataHost: string;
  /** For IAM_CREDENTIALS_ENDPOINT (scripts/id-token.mjs). */
  iamEndpoint: string;
  close(): Promise<void>;
}

/**
 * The stand-in commands (a TCP port for bin/<tool>), and two Google APIs: the metadata server, which hands
 * out the deployer's access token (so Application Default Credentials are the deployer's), and
 * generateIdToken of the IAM Service Account Credentials API, which checks the caller's roles
 * and answers as the API does
 * (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateIdToken).
 */
export async function startStandIns(world: World): Promise<StandIns> {
  const reply = (response: ServerResponse, status: number, body: unknown) => {
    response.writeHead(status, { "content-type": "application/json", "metadata-flavor": "Google" });
    response.end(typeof body === "string" ? body : JSON.stringify(body));
  };
  const readBody = async (request: IncomingMessage) => {
    let text = "";
    for await (const chunk of request) text += chunk;
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  };
  const server = createServer(async (request, response) => {
    const url = new URL(request.url ?? "/", "http://stand-in");
    if (url.pathname.startsWith("/computeMetadata/v1/")) {
      if (request.headers["metadata-flavor"] !== "Google") return reply(response, 403, {});
      if (url.pathname === "/computeMetadata/v1/instance/service-accounts/default/token") {
        return reply(response, 200, {
          access_token: deployerAccessToken,
          expires_in: 3600,
          token_type: "Bearer",
        });
      }
      if (url.pathname === "/computeMetadata/v1/universe/universe-domain") {
        return reply(response, 200, "googleapis.com");
      }
      if (url.pathname.replace(/\/$/, "") === "/computeMetadata/v1/instance") {
        return reply(response, 200, {});
      }
      return reply(response, 404, "not found");
    }
    const generate = /^\/v1\/projects\/-\/serviceAccounts\/([^/:]+):generateIdToken$/.exec(
      url.pathname,
    );
    if (request.method === "POST" && generate) {
      const account = decodeURIComponent(generate[1] as string);
      const body = await readBody(request);
      world.idTokenRequests.push({ account, body });
      if (request.headers.authorization !== `Bearer ${deployerAccessToken}`) {
        return reply(response, 401, { error: { code: 401, status: "UNAUTHENTICATED" } });
      }
      if (account !== world.accounts.client) {
        return reply(response, 404, { error: { code: 404, message: `${account} not found` } });
      }
      const name = "iamcredentials generateIdToken";
      const denied = unmet(world, name, commandRoles[name] ?? []);
      if (denied) {
        return reply(response, 403, {
          error: {
            code: 403,
            status: "PERMISSION_DENIED",
            message: `Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist). [stand-in: ${denied}]`,
          },
        });
      }
      const claims = {
        iss: "https://accounts.google.com",
        aud: String(body.audience),
        ...(body.includeEmail ? { email: account, email_verified: true } : {}),
        exp: Math.floor(Date.now() / 1000) + 3600,
      };
      const token = idToken(claims);
      world.tokens[token] = { email: body.includeEmail ? account : "", aud: claims.aud };
      return reply(response, 200, { token });
    }
    return reply(response, 404, {
      error: { code: 404, message: `no stand-in for ${url.pathname}` },
    });
  });
  const commands = createTcpServer((socket) => {
    let received = "";
    let answered = false;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      if (answered) return;
      received += chunk;
      const fields = received.split("\0");
      const count = Number(fields[0]);
      // The count, tool, cwd, token, stdin, then the arguments, each ended by a NUL.
      if (fields.length < count + 6) return;
      answered = true;
      const [, tool, cwd, token, stdin, ...args] = fields.slice(0, count + 5) as string[];
      const answer = run(world, {
        tool,
        args,
        cwd,
        stdin,
        env: { ROUTEGUIDE_TOKEN: token },
      } as Command);
      socket.end(
        [answer.status, answer.stdout, answer.stderr, ...(answer.exec ?? [])]
          .map((field) => `${field}\0`)
          .join(""),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  await new Promise<void>((resolve) => commands.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port: (commands.address() as AddressInfo).port,
    metadataHost: `127.0.0.1:${port}`,
    iamEndpoint: `http://127.0.0.1:${port}`,
    close: async () => {
      await new Promise((resolve) => commands.close(resolve));
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
