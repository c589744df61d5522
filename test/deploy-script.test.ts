// scripts/deploy.sh drives gcloud, terraform, pnpm and node, none of which can reach a cloud
// here: stand-ins on PATH (test/support/cloud-stand-ins.ts) record every call and check that
// whoever each command acts as holds the roles Google documents for it, against an IAM policy
// built from the real infra/ (test/support/deploy-world.ts). scripts/id-token.mjs runs for real,
// with google-auth-library, against stand-ins of the metadata server and the IAM Credentials
// API. So a role missing from the README's list, a binding missing from infra/, a target
// missing from the bootstrap, or IAM propagation not waited for fails a test here.
// Every bin/ tool is a few lines of bash that hand the command to the stand-ins in this process.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  commandRoles,
  type StandIns,
  standInScript,
  startStandIns,
  terraformRoles,
  type World,
} from "./support/cloud-stand-ins.js";
import { buildWorld } from "./support/deploy-world.js";
import { describeLocalOnly } from "./support/target.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const folders: string[] = [];
const servers: StandIns[] = [];
const project = "routeguide-test";
const region = "europe-west1";
const deployer = "user:dev@example.com";

/** The roles README's "IAM the deployer needs" tells the deployer to hold on the project. */
function readmeDeployerRoles(): string[] {
  const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
  const section = /\*\*IAM the deployer needs\*\*([\s\S]*?)\n\n/.exec(readme)?.[1];
  assert.ok(section, "README has no **IAM the deployer needs** paragraph");
  return [...section.matchAll(/`(roles\/[\w.]+)`/g)].map(([, role]) => role as string);
}

interface SandboxOptions {
  tfvars?: boolean;
  deployerRoles?: string[];
  clientTokenCreators?: string[];
  propagationChecks?: number;
}

/** A git repository holding what deploy.sh uses, a bin/ of stand-ins, and their world. */
async function sandbox(options: SandboxOptions = {}) {
  const root = mkdtempSync(join(tmpdir(), "deploy-script-"));
  folders.push(root);
  const repo = join(root, "repo");
  const bin = join(root, "bin");
  for (const dir of ["scripts", "infra", "services/stats/scripts"]) {
    mkdirSync(join(repo, dir), { recursive: true });
  }
  mkdirSync(bin);
  for (const file of ["scripts/deploy.sh", "scripts/id-token.mjs", "infra/cloudbuild.yaml"]) {
    copyFileSync(join(repoRoot, file), join(repo, file));
  }
  // google-auth-library for scripts/id-token.mjs, from the workspace's root dependencies.
  symlinkSync(join(repoRoot, "node_modules"), join(repo, "node_modules"));
  const clientTokenCreators = options.clientTokenCreators ?? [deployer];
  if (options.tfvars !== false) {
    writeFileSync(
      join(repo, "infra", "terraform.tfvars"),
      `project_id = "${project}"\nclient_token_creators = ${JSON.stringify(clientTokenCreators)}\n`,
    );
  }
  writeFileSync(join(repo, ".gitignore"), "infra/terraform.tfvars\nnode_modules\n");
  const git = (...args: string[]) =>
    execFileSync("git", ["-c", "user.email=t@t", "-c", "user.name=t", ...args], {
      cwd: repo,
      encoding: "utf8",
    }).trim();
  git("init", "-q");
  git("add", ".");
  git("commit", "-qm", "deploy script");
  for (const tool of ["gcloud", "terraform", "pnpm", "node"]) {
    writeFileSync(join(bin, tool), standInScript(tool));
    chmodSync(join(bin, tool), 0o755);
  }
  const world = await buildWorld({
    infraDir: join(repoRoot, "infra"),
    project,
    region,
    deployer,
    deployerRoles: options.deployerRoles ?? readmeDeployerRoles(),
    tfvars: { project_id: project, client_token_creators: clientTokenCreators },
    propagationChecks: options.propagationChecks ?? 0,
  });
  const standIns = await startStandIns(world);
  servers.push(standIns);

  const run = (env: Record<string, string> = {}) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      // Asynchronous: the stand-ins answer from this process while the script runs.
      const child = spawn("bash", [join(repo, "scripts", "deploy.sh")], {
        env: {
          PATH: `${bin}:${process.env.PATH}`,
          HOME: root,
          DEPLOY_AUTO_APPROVE: "1",
          DEPLOY_RETRY_SECONDS: "0",
          STAND_IN_PORT: String(standIns.port),
          GCE_METADATA_HOST: standIns.metadataHost,
          IAM_CREDENTIALS_ENDPOINT: standIns.iamEndpoint,
          ...env,
        },
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (chunk) => {
        stdout += chunk;
      });
      child.stderr.on("data", (chunk) => {
        stderr += chunk;
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
      child.on("close", (status) => {
        clearTimeout(timer);
        resolve({ status, stdout, stderr });
      });
    });
  const commit = git("rev-parse", "--short=12", "HEAD");
  return { repo, run, calls: () => world.calls, commit, git, world };
}

/** The digests the last full apply deployed (its -var image_digests). */
function deployedDigests(world: World): Record<string, string> {
  const full = world.terraform.applies.filter((apply) => apply.targets.length === 0).at(-1);
  assert.ok(full, "no full terraform apply");
  return Object.fromEntries(
    [...(full.vars.image_digests ?? "").matchAll(/(\w+)="(sha256:[0-9a-f]{64})"/g)].map(
      ([, name, digest]) => [name, digest],
    ),
  );
}

describeLocalOnly("scripts/deploy.sh", () => {
  after(async () => {
    for (const server of servers) await server.close();
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
  });

  test("refuses to start without infra/terraform.tfvars, and says how to make it", async () => {
    const box = await sandbox({ tfvars: false });
    const result = await box.run();
    assert.equal(result.status, 1);
    assert.match(
      result.stderr,
      /infra\/terraform.tfvars is missing: cp infra\/terraform.tfvars.example/,
    );
    assert.deepEqual(box.calls(), [], "nothing was called");
  });

  test("refuses uncommitted changes: the image tag must name what is deployed", async () => {
    const box = await sandbox();
    writeFileSync(join(box.repo, "scripts", "extra.sh"), "echo\n");
    const result = await box.run();
    assert.equal(result.status, 1);
    assert.match(result.stderr, /uncommitted changes/);
    assert.deepEqual(box.calls(), []);
  });

  test("a first deploy by a deployer with exactly the README's roles: bootstrap, build, digests, grant, apply, smoke call, in that order", async () => {
    const box = await sandbox();
    const result = await box.run();
    assert.equal(result.status, 0, result.stderr);
    const calls = box.calls();
    const index = (pattern: RegExp) => {
      const found = calls.findIndex((line) => pattern.test(line));
      assert.ok(found >= 0, `no call matching ${pattern}:\n${calls.join("\n")}`);
      return found;
    };
    const world = box.world;
    const order = [
      index(/^terraform -chdir=infra init/),
      index(
        /^terraform -chdir=infra apply .*-target=google_artifact_registry_repository_iam_member\.builder_writes_images/,
      ),
      index(/^gcloud artifacts docker images describe .*\/gateway:/),
      index(/^gcloud builds submit .*--config infra\/cloudbuild\.yaml/),
      index(/^terraform -chdir=infra apply .*-target=google_sql_user\.stats/),
      index(/^node services\/stats\/scripts\/grant-database\.mjs /),
      calls.findIndex(
        (line) => /^terraform -chdir=infra apply /.test(line) && !line.includes("-target="),
      ),
      index(/^node scripts\/id-token\.mjs routeguide-client@/),
      index(/^pnpm --silent cli --gateway https:\/\/gateway-\S+ --timeout 60 demo$/),
    ];
    assert.deepEqual(
      [...order].sort((a, b) => a - b),
      order,
      `out of order:\n${calls.join("\n")}`,
    );
    // The grant gets the instance, database and user Terraform made.
    assert.equal(
      calls[index(/^node services\/stats\/scripts\/grant-database\.mjs /)],
      `node services/stats/scripts/grant-database.mjs ${project}:${region}:routeguide-stats stats stats-svc@${project}.iam`,
    );
    // Built once, tagged with the commit, staged in the builder's own bucket, run as the builder.
    const builds = calls.filter((line) => line.startsWith("gcloud builds submit"));
    assert.equal(builds.length, 1);
    assert.match(builds[0] as string, new RegExp(`_TAG=${box.commit} \\.$`));
    assert.match(
      builds[0] as string,
      new RegExp(
        `--service-account projects/${project}/serviceAccounts/routeguide-builder@${project}\\.iam\\.gserviceaccount\\.com`,
      ),
    );
    assert.match(
      builds[0] as string,
      /--gcs-source-staging-dir gs:\/\/routeguide-test-routeguide-build-source\/source/,
    );
    // The services run exactly the digests the build pushed for the commit.
    const pushed = (service: string) =>
      world.registry[`${world.imageBase}/${service}:${box.commit}`];
    assert.deepEqual(deployedDigests(world), {
      gateway: pushed("gateway"),
      route: pushed("route"),
      stats: pushed("stats"),
    });
    // The smoke token: generateIdToken for the gateway's URL with the email claim, minted with
    // the OpenID token creator role alone (nobody holds the broader Token Creator role).
    assert.deepEqual(world.idTokenRequests, [
      {
        account: `routeguide-client@${project}.iam.gserviceaccount.com`,
        body: { delegates: [], audience: world.gatewayUrl, includeEmail: true, useEmailAzp: true },
      },
    ]);
    assert.ok(!world.grants.some((grant) => grant.role === "roles/iam.serviceAccountTokenCreator"));
    assert.ok(!calls.some((line) => line.includes("print-identity-token")));
    // The token reaches the CLI through its environment, never its arguments.
    const token = Object.keys(world.tokens)[0] as string;
    assert.ok(calls.includes(`ROUTEGUIDE_TOKEN=${token}`));
    assert.ok(!calls.some((line) => line.startsWith("pnpm") && line.includes(token)));
    assert.match(result.stdout, /==> deployed: https:\/\/gateway-/);
  });

  test("the README's roles are exactly what the deploy needs: each one is the only one the deployer holds for some check", async () => {
    const roles = readmeDeployerRoles();
    const box = await sandbox({ deployerRoles: roles });
    const result = await box.run();
    assert.equal(result.status, 0, result.stderr);
    // Every check of the deployer passed, and each README role met one that no other held role
    // could: without it, that command would have been refused.
    const checks = box.world.checks.filter((check) => check.need.who === "deployer");
    assert.ok(
      checks.every((check) => check.metBy),
      "every check of the deployer passed",
    );
    for (const role of roles) {
      const needed = checks.find(
        (check) =>
          check.metBy === role &&
          check.need.anyOf.every((held) => held === role || !roles.includes(held)),
      );
      assert.ok(needed, `${role} is in the README but nothing the deploy ran needed it`);
    }
    // The tables know every command the script ran.
    const known = [
      ...Object.keys(commandRoles),
      ...Object.keys(terraformRoles).map((type) => `terraform apply ${type}`),
    ];
    for (const check of box.world.checks) assert.ok(known.includes(check.command), check.command);
  });

  test("a role missing from the deployer stops the deploy at the command that needs it, naming the role", async () => {
    const roles = readmeDeployerRoles();
    const box = await sandbox({
      deployerRoles: roles.filter((role) => role !== "roles/iam.serviceAccountUser"),
    });
    const result = await box.run();
    assert.equal(result.status, 1);
    // The bootstrap went through; the build (it runs as the builder: actAs) is refused, every
    // attempt while the builder is new, then the deploy stops.
    assert.match(
      result.stderr,
      /ERROR: \(gcloud\.builds\.submit\) PERMISSION_DENIED: user:dev@example\.com lacks roles\/iam\.serviceAccountUser on account:routeguide-builder@/,
    );
    assert.match(result.stderr, /deploy: the build failed/);
    assert.ok(!box.calls().some((line) => line.includes("grant-database")));
  });

  test("infra/ grants the builder one binding per role a build needs; without the log writer's, every build is refused and retried, then the deploy stops", async () => {
    const box = await sandbox();
    const world = box.world;
    const builder = `serviceAccount:${world.accounts.builder}`;
    const builderGrants = Object.entries(world.terraform.resources).flatMap(([address, resource]) =>
      resource.grants
        .filter((grant) => grant.member === builder)
        .map((grant) => ({ address, ...grant })),
    );
    const builderNeeds = (commandRoles["gcloud builds submit"] ?? []).filter(
      (need) => need.who === "builder",
    );
    assert.deepEqual(
      builderGrants.map((grant) => grant.role).sort(),
      builderNeeds.map((need) => need.anyOf[0]).sort(),
      "one binding per need, with the narrowest role",
    );
    // Without the log-writer binding every build is refused: retried while the builder is new,
    // then the deploy stops, with Cloud Build's reason shown each time.
    const logs = world.terraform.resources["google_project_iam_member.builder_writes_logs"];
    assert.ok(logs);
    logs.grants = [];
    const result = await box.run();
    assert.equal(result.status, 1);
    assert.equal(box.calls().filter((line) => line.startsWith("gcloud builds submit")).length, 6);
    assert.equal(result.stderr.match(/lacks roles\/logging\.logWriter/g)?.length, 6);
    assert.match(result.stderr, /deploy: the build failed/);
  });

  test("while a new builder's bindings propagate, the build is retried with backoff; so is the smoke call while the token creator and invoker bindings do", async () => {
    const box = await sandbox({ propagationChecks: 1 });
    const result = await box.run({ DEPLOY_RETRY_SECONDS: "1" });
    assert.equal(result.status, 0, result.stderr);
    const calls = box.calls();
    assert.equal(calls.filter((line) => line.startsWith("gcloud builds submit")).length, 2);
    assert.match(result.stderr, /ERROR: \(gcloud\.builds\.submit\) PERMISSION_DENIED/);
    assert.match(result.stderr, /the build failed \(attempt 1\/6\); retrying in 1 s/);
    // The token creator binding, then the invoker binding: waits of 1 s, then 2 s.
    assert.match(result.stderr, /Permission 'iam\.serviceAccounts\.getOpenIdToken' denied/);
    assert.match(result.stderr, /the smoke call failed \(attempt 1\/6\); retrying in 1 s/);
    assert.match(result.stderr, /lacks roles\/run\.invoker on service:gateway/);
    assert.match(result.stderr, /the smoke call failed \(attempt 2\/6\); retrying in 2 s/);
    assert.equal(box.world.idTokenRequests.length, 3);
  });

  test("the smoke token comes from google-auth-library's impersonation: a deployer outside client_token_creators sees Google's reason", async () => {
    const box = await sandbox({ clientTokenCreators: [] });
    const result = await box.run();
    assert.equal(result.status, 1);
    assert.equal(box.world.idTokenRequests.length, 6);
    assert.match(
      result.stderr,
      /id-token: no ID token for https:\/\/gateway-\S+ as routeguide-client@\S+ \(HTTP 403\): Permission 'iam\.serviceAccounts\.getOpenIdToken' denied/,
    );
    assert.match(result.stderr, /your account needs roles\/iam\.serviceAccountOpenIdTokenCreator/);
    assert.match(result.stderr, /the smoke call through https:\/\/gateway-\S+ kept failing/);
    assert.ok(!box.calls().some((line) => line.startsWith("pnpm --silent cli")));
  });

  test("deploys by digest: the same commit again reuses its images; each different set of uncommitted changes gets a tag and digests of its own", async () => {
    const box = await sandbox();
    const builds = () => box.calls().filter((line) => line.startsWith("gcloud builds submit"));
    assert.equal((await box.run()).status, 0);
    const first = deployedDigests(box.world);

    // Again, same commit: nothing is built (the tag exists and cannot move), same digests.
    const again = await box.run();
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`the images tagged ${box.commit} are already pushed`));
    assert.equal(builds().length, 1);
    assert.deepEqual(deployedDigests(box.world), first);

    // Uncommitted changes: a tag of their own, new digests (a new revision of every service).
    writeFileSync(join(box.repo, "scripts", "extra.sh"), "echo one\n");
    const dirty = await box.run({ ALLOW_DIRTY: "1" });
    assert.equal(dirty.status, 0, dirty.stderr);
    const dirtyTag = /_TAG=(\S+)/.exec(builds()[1] as string)?.[1] as string;
    assert.match(dirtyTag, new RegExp(`^${box.commit}-dirty-[0-9a-f]{12}$`));
    const second = deployedDigests(box.world);
    for (const service of ["gateway", "route", "stats"]) {
      assert.notEqual(second[service], first[service], service);
    }
    // Other changes: another tag. The same changes again: reused.
    writeFileSync(join(box.repo, "scripts", "extra.sh"), "echo two\n");
    assert.equal((await box.run({ ALLOW_DIRTY: "1" })).status, 0);
    const otherTag = /_TAG=(\S+)/.exec(builds()[2] as string)?.[1] as string;
    assert.notEqual(otherTag, dirtyTag);
    assert.notDeepEqual(deployedDigests(box.world), second);
    assert.equal((await box.run({ ALLOW_DIRTY: "1" })).status, 0);
    assert.equal(builds().length, 3);
    // The real index was not touched by the tree hash.
    assert.match(box.git("status", "--porcelain"), /^\?\? scripts\/extra\.sh$/);
    // Later deploys found the builder in place: one attempt per build, no propagation wait.
    assert.ok(!box.calls().some((line) => line.includes("retrying")));
  });

  test("a build that pushed only some images is redone under a fresh tag (pushed tags cannot be pushed again)", async () => {
    const box = await sandbox();
    box.world.registry[`${box.world.imageBase}/gateway:${box.commit}`] = `sha256:${"a".repeat(64)}`;
    const result = await box.run();
    assert.equal(result.status, 0, result.stderr);
    const build = box.calls().find((line) => line.startsWith("gcloud builds submit")) as string;
    const tag = /_TAG=(\S+)/.exec(build)?.[1] as string;
    assert.match(tag, new RegExp(`^${box.commit}-\\d{14}$`));
    const world = box.world;
    assert.deepEqual(deployedDigests(world), {
      gateway: world.registry[`${world.imageBase}/gateway:${tag}`],
      route: world.registry[`${world.imageBase}/route:${tag}`],
      stats: world.registry[`${world.imageBase}/stats:${tag}`],
    });
  });
});
