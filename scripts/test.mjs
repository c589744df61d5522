#!/usr/bin/env node
// `pnpm test`: builds, checks and runs every test of the repo in one node:test run, so the
// run ends with one summary. Steps:
//   1. turbo: build, typecheck and lint (buf lint + buf format for the protos) every package;
//   2. biome: formatting and lint of the whole repo;
//   3. node --test over every *.test.ts in packages/*/test, services/*/test and test/.
// Extra arguments are passed to node --test (e.g. --test-name-pattern=health).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

function run(command, args) {
  console.log(`\n$ ${command} ${args.join(" ")}`);
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit" });
  if (result.status !== 0) {
    console.error(`\n${command} ${args.join(" ")} failed (${result.status ?? result.signal})`);
    process.exit(result.status || 1);
  }
}

function testFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith(".test.ts"))
    .map((name) => relative(root, join(dir, name)));
}

const bin = (name) => join(root, "node_modules", ".bin", name);

run(bin("turbo"), ["run", "build", "typecheck", "lint", "--output-logs=errors-only"]);
run(bin("biome"), ["check", "."]);

const files = [
  ...["packages", "services"].flatMap((group) =>
    readdirSync(join(root, group)).flatMap((name) => testFiles(join(root, group, name, "test"))),
  ),
  ...testFiles(join(root, "test")),
];
if (files.length === 0) {
  console.error("no test files found");
  process.exit(1);
}
// Files run one at a time: the integration tests start real processes and measure nothing,
// but two stacks at once on 2 cores only make each slower.
run(process.execPath, [
  "--import",
  "tsx",
  "--test",
  "--test-concurrency=1",
  ...process.argv.slice(2),
  ...files,
]);
