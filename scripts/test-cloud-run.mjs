#!/usr/bin/env node
// `pnpm test:cloud-run`: the integration suite in test/ with TEST_TARGET=cloud-run. Each test
// file that calls the gateway (test/support/target.ts) starts gateway, route and stats under
// the local Cloud Run front ends configured from infra/ (packages/cloud-run-local) and calls
// the gateway's at https://localhost:<port> as the local client identity, as a client calls a
// deployed gateway. Tests that start or kill processes of their own, or call route or stats
// directly (internal ingress), are reported skipped with the reason.
// Arguments: test files (test/*.test.ts) to run only those; anything else goes to node --test
// (e.g. --test-name-pattern=GetFeature).
import { bin, integrationTestFiles, printHeader, run, runTests } from "./test-runner.mjs";

printHeader("test:cloud-run");

const args = process.argv.slice(2);
const files = args.filter((arg) => arg.endsWith(".test.ts"));
const extra = args.filter((arg) => !arg.endsWith(".test.ts"));

run(bin("turbo"), ["run", "build", "--output-logs=errors-only"]);
runTests(files.length > 0 ? files : integrationTestFiles(), extra, {
  ...process.env,
  TEST_TARGET: "cloud-run",
});
