// scripts/deploy.sh drives gcloud, terraform, pnpm and node, none of which can reach a cloud
// here: stand-ins on PATH record every call, and the test checks what the script refuses and
// the order it does things in (the repository before the images, the images and the database
// grant before the services, the smoke call last, the commit as the image tag).
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { describeLocalOnly } from "./support/target.js";

const script = fileURLToPath(new URL("../scripts/deploy.sh", import.meta.url));
const folders: string[] = [];

/** A git repository holding only deploy.sh, and a bin/ of recording stand-ins. */
function sandbox(options: { tfvars: boolean }) {
  const root = mkdtempSync(join(tmpdir(), "deploy-script-"));
  folders.push(root);
  const repo = join(root, "repo");
  const bin = join(root, "bin");
  const log = join(root, "calls.log");
  mkdirSync(join(repo, "scripts"), { recursive: true });
  mkdirSync(join(repo, "infra"), { recursive: true });
  mkdirSync(bin);
  copyFileSync(script, join(repo, "scripts", "deploy.sh"));
  if (options.tfvars) writeFileSync(join(repo, "infra", "terraform.tfvars"), 'project_id = "p"\n');
  writeFileSync(join(repo, ".gitignore"), "infra/terraform.tfvars\n");
  const git = (...args: string[]) =>
    execFileSync("git", ["-c", "user.email=t@t", "-c", "user.name=t", ...args], { cwd: repo });
  git("init", "-q");
  git("add", ".");
  git("commit", "-qm", "deploy script");
  // Each stand-in logs "<tool> <args…>" and answers what the script reads from it.
  const standIn = (name: string, body: string) => {
    writeFileSync(join(bin, name), `#!/usr/bin/env bash\necho "${name} $*" >> "${log}"\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  standIn(
    "terraform",
    `case "$*" in
  *" console "*) read -r expression; echo "\\"value-of:$expression\\"" ;;
  *"output -raw gateway_url"*) echo "https://gateway-123.europe-west1.run.app" ;;
  *"output -raw client_service_account_email"*) echo "routeguide-client@p.iam.gserviceaccount.com" ;;
esac`,
  );
  standIn("gcloud", `case "$*" in *print-identity-token*) echo "id-token" ;; esac`);
  standIn("pnpm", `echo "ROUTEGUIDE_TOKEN=$ROUTEGUIDE_TOKEN" >> "${log}"`);
  standIn("node", "");
  const commit = execFileSync("git", ["rev-parse", "--short=12", "HEAD"], {
    cwd: repo,
    encoding: "utf8",
  }).trim();
  const run = (env: Record<string, string> = {}) =>
    spawnSync("bash", [join(repo, "scripts", "deploy.sh")], {
      env: { PATH: `${bin}:${process.env.PATH}`, HOME: root, DEPLOY_AUTO_APPROVE: "1", ...env },
      encoding: "utf8",
      timeout: 30_000,
    });
  const calls = () => {
    try {
      return readFileSync(log, "utf8").trim().split("\n");
    } catch {
      return [];
    }
  };
  return { repo, run, calls, commit };
}

describeLocalOnly("scripts/deploy.sh", () => {
  after(() => {
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
  });

  test("refuses to start without infra/terraform.tfvars, and says how to make it", () => {
    const box = sandbox({ tfvars: false });
    const result = box.run();
    assert.equal(result.status, 1);
    assert.match(
      result.stderr,
      /infra\/terraform.tfvars is missing: cp infra\/terraform.tfvars.example/,
    );
    assert.deepEqual(box.calls(), [], "nothing was called");
  });

  test("refuses uncommitted changes: the image tag must name what is deployed", () => {
    const box = sandbox({ tfvars: true });
    writeFileSync(join(box.repo, "scripts", "extra.sh"), "echo\n");
    const result = box.run();
    assert.equal(result.status, 1);
    assert.match(result.stderr, /uncommitted changes/);
    assert.deepEqual(box.calls(), []);
  });

  test("bootstraps, builds, grants, applies, then smoke-calls the gateway, in that order", () => {
    const box = sandbox({ tfvars: true });
    const result = box.run();
    assert.equal(result.status, 0, result.stderr);
    const calls = box.calls();
    const index = (pattern: RegExp) => {
      const found = calls.findIndex((line) => pattern.test(line));
      assert.ok(found >= 0, `no call matching ${pattern}:\n${calls.join("\n")}`);
      return found;
    };
    const tag = `image_tag=${box.commit}`;
    const order = [
      index(/^terraform -chdir=infra init/),
      index(
        /^terraform -chdir=infra apply .*-target=google_artifact_registry_repository_iam_member\.builder_writes_images/,
      ),
      index(/^gcloud builds submit .*--config infra\/cloudbuild\.yaml/),
      index(/^terraform -chdir=infra apply .*-target=google_sql_user\.stats/),
      index(
        /^node services\/stats\/scripts\/grant-database\.mjs value-of:google_sql_database_instance\.stats\.connection_name value-of:google_sql_database\.stats\.name value-of:google_sql_user\.stats\.name$/,
      ),
      calls.findIndex(
        (line) => /^terraform -chdir=infra apply /.test(line) && !line.includes("-target="),
      ),
      index(
        /^gcloud auth print-identity-token --impersonate-service-account routeguide-client@p\.iam\.gserviceaccount\.com --audiences https:\/\/gateway-123\.europe-west1\.run\.app --include-email/,
      ),
      index(
        /^pnpm --silent cli --gateway https:\/\/gateway-123\.europe-west1\.run\.app --timeout 60 demo/,
      ),
    ];
    assert.ok(
      order.every((at) => at >= 0),
      "the full apply ran",
    );
    assert.deepEqual(
      [...order].sort((a, b) => a - b),
      order,
      `out of order:\n${calls.join("\n")}`,
    );
    // The commit is the tag of the images built and of every apply.
    assert.match(calls[index(/^gcloud builds submit/)] as string, new RegExp(`_TAG=${box.commit}`));
    assert.match(
      calls[index(/^gcloud builds submit/)] as string,
      /--gcs-source-staging-dir gs:\/\/value-of:google_storage_bucket\.build_source\.name\/source/,
    );
    for (const line of calls.filter((call) => call.startsWith("terraform -chdir=infra apply"))) {
      assert.ok(line.includes(tag) && line.includes("-auto-approve"), line);
    }
    // The token reaches the CLI through its environment, never its arguments.
    assert.ok(calls.includes("ROUTEGUIDE_TOKEN=id-token"));
    assert.ok(!calls.some((line) => line.startsWith("pnpm") && line.includes("id-token")));
  });

  test("DEPLOY_SKIP_BUILD=1 reuses the pushed images", () => {
    const box = sandbox({ tfvars: true });
    const result = box.run({ DEPLOY_SKIP_BUILD: "1" });
    assert.equal(result.status, 0, result.stderr);
    assert.ok(!box.calls().some((line) => line.startsWith("gcloud builds")));
  });
});
