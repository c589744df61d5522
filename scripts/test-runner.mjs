// What `pnpm test` (scripts/test.mjs) and `pnpm test:deployed` (scripts/test-deployed.mjs)
// share: the repo's root, running a step, the test files, and the one node --test command.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");

export const bin = (name) => join(root, "node_modules", ".bin", name);

/** The project's Node: the exact version of the `node` package in package.json, which
 * `pnpm install` puts in node_modules/.bin, first on PATH for every pnpm script. */
export const pinnedNode = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))
  .devDependencies.node;

/** The suite's header: which Node runs it (the tests run on this script's own Node). */
export function printHeader(name) {
  console.log(
    `${name}: Node ${process.version} (${process.execPath}); the project pins ${pinnedNode}`,
  );
  if (process.versions.node.split(".")[0] !== pinnedNode.split(".")[0]) {
    console.log(
      `${name}: this is not the pinned Node's major; run it through pnpm (pnpm test), which puts node_modules/.bin/node first on PATH`,
    );
  }
}

/** Runs a step in the repo's root with the output shown; exits as it does when it fails. */
export function run(command, args, env = process.env) {
  console.log(`\n$ ${command} ${args.join(" ")}`);
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit", env });
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

/** The unit tests beside each package: the test/ folder of each of packages/ and services/. */
export const unitTestFiles = () =>
  ["packages", "services"].flatMap((group) =>
    readdirSync(join(root, group)).flatMap((name) => testFiles(join(root, group, name, "test"))),
  );

/** The integration suite: test/*.test.ts. */
export const integrationTestFiles = () => testFiles(join(root, "test"));

/** node --test over `files` in one run (one summary); `extra` are more node --test arguments. */
export function runTests(files, extra = [], env = process.env) {
  if (files.length === 0) {
    console.error("no test files found");
    process.exit(1);
  }
  // Files run one at a time: the integration tests start real processes and measure nothing,
  // but two stacks at once on 2 cores only make each slower.
  // Without the NODE_PATH that pnpm's node_modules/.bin/node shim sets (its store's hoisted
  // folder): the tests and the services they start resolve modules as the images do.
  const { NODE_PATH: _shims, ...testEnv } = env;
  run(
    process.execPath,
    [
      "--import",
      "tsx",
      "--test",
      "--test-concurrency=1",
      // TAP on every Node (Node 23+ defaults to the spec reporter off a TTY): one summary
      // format for people and for CI, whose closing lines it reads. A reporter asked for wins.
      ...(extra.some((arg) => arg.startsWith("--test-reporter")) ? [] : ["--test-reporter=tap"]),
      ...extra,
      ...files,
    ],
    testEnv,
  );
}
