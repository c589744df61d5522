#!/usr/bin/env node
// `pnpm test:deployed`: the integration suite in test/ against a deployed stack instead of
// processes it starts. The gateway's URL is GATEWAY_URL when set (any gateway), otherwise
// `terraform -chdir=infra output -json`'s gateway_url. Calls carry ID tokens for that URL from
// this machine's Application Default Credentials. Tests that start or kill processes, or call
// route or stats directly, are reported skipped with the reason (test/support/target.ts).
// Steps: find the URL, build (turbo: cached when nothing changed), check the target as the
// suite will read it, then the same node --test run as `pnpm test` over test/*.test.ts.
// Extra arguments are passed to node --test (e.g. --test-name-pattern=GetFeature).
import { spawnSync } from "node:child_process";
import { tsImport } from "tsx/esm/api";
import { bin, integrationTestFiles, printHeader, root, run, runTests } from "./test-runner.mjs";

printHeader("test:deployed");

function fail(message) {
  console.error(`test:deployed: ${message}`);
  process.exit(2);
}

function gatewayUrlFromTerraform() {
  const command = "terraform -chdir=infra output -json";
  const result = spawnSync("terraform", ["-chdir=infra", "output", "-json"], {
    cwd: root,
    encoding: "utf8",
  });
  if (result.error?.code === "ENOENT") {
    fail(
      "terraform is not on PATH. Install it (the deploy needs it too), or set GATEWAY_URL to the gateway's URL.",
    );
  }
  if (result.error) fail(`${command} could not run: ${result.error.message}`);
  if (result.status !== 0) {
    fail(
      `${command} failed (${result.status ?? result.signal}):\n${result.stderr.trim()}\n` +
        "Is infra/ initialised (terraform -chdir=infra init) and deployed? Or set GATEWAY_URL.",
    );
  }
  let outputs;
  try {
    outputs = JSON.parse(result.stdout);
  } catch {
    fail(`${command} did not print JSON:\n${result.stdout.trim()}`);
  }
  const url = outputs?.gateway_url?.value;
  if (typeof url !== "string" || url === "") {
    const names = Object.keys(outputs ?? {});
    fail(
      `${command} has no gateway_url (outputs: ${names.length ? names.join(", ") : "none"}). ` +
        "Deploy the stack first (scripts/deploy.sh), or set GATEWAY_URL.",
    );
  }
  return url;
}

// biome-ignore lint/suspicious/noUndeclaredEnvVars: read by this script, not by a turbo task
const fromEnv = process.env.GATEWAY_URL;
const gatewayUrl = fromEnv || gatewayUrlFromTerraform();
console.log(
  `test:deployed: the gateway at ${gatewayUrl} (${fromEnv ? "GATEWAY_URL" : "terraform output gateway_url"})`,
);

run(bin("turbo"), ["run", "build", "--output-logs=errors-only"]);

// The suite decides its target in test/support/target.ts, when it is loaded: load it here
// first, so a bad URL is one clear error rather than one per test file.
Object.assign(process.env, { TEST_TARGET: "deployed", GATEWAY_URL: gatewayUrl });
try {
  await tsImport("../test/support/target.ts", import.meta.url);
} catch (error) {
  fail(error.message);
}

runTests(integrationTestFiles(), process.argv.slice(2));
