#!/usr/bin/env node
// `pnpm test`: builds, checks and runs every test of the repo in one node:test run, so the
// run ends with one summary. Steps:
//   1. turbo: build, typecheck and lint (buf lint + buf format for the protos) every package;
//   2. biome: formatting and lint of the whole repo;
//   3. node --test over every *.test.ts in packages/*/test, services/*/test and test/.
// Extra arguments are passed to node --test (e.g. --test-name-pattern=health).
// Every step runs on the project's Node (package.json's `node`, in node_modules/.bin), which
// the header prints; test/node-version.test.ts fails when it is another major.
import {
  bin,
  integrationTestFiles,
  printHeader,
  run,
  runTests,
  unitTestFiles,
} from "./test-runner.mjs";

printHeader("pnpm test");

run(bin("turbo"), ["run", "build", "typecheck", "lint", "--output-logs=errors-only"]);
run(bin("biome"), ["check", "."]);
runTests([...unitTestFiles(), ...integrationTestFiles()], process.argv.slice(2));
