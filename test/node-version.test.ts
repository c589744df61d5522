// The project brings its own Node: package.json pins the `node` package at an exact version,
// `pnpm install` puts that binary in node_modules/.bin, and every pnpm script (pnpm test,
// pnpm start, turbo's tasks) finds it there before the machine's node. The suite must run
// on it, not on whatever node the machine has (Node 20 here), or what is tested is not what
// the images (services/*/Dockerfile, same version: test/images.test.ts) run.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { repoRoot } from "./support/dockerfile.js";

const manifest = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
  engines?: { node?: string };
  devDependencies: Record<string, string>;
};
const pinned = manifest.devDependencies.node ?? "";
const major = (version: string) => Number(/^v?(\d+)\./.exec(version)?.[1]);
const workspace = readFileSync(join(repoRoot, "pnpm-workspace.yaml"), "utf8");

describe("the project's Node", () => {
  test("package.json pins the node package at an exact version", () => {
    assert.match(
      pinned,
      /^\d+\.\d+\.\d+$/,
      `package.json devDependencies.node must be an exact version (e.g. "26.10.0"), got ${JSON.stringify(pinned)}`,
    );
  });

  test("the tests run on the pinned Node's major", () => {
    assert.equal(
      major(process.version),
      major(pinned),
      `the tests run on Node ${process.version} (${process.execPath}), but the project pins Node ${pinned}: ` +
        "run them through pnpm (pnpm test), or with node_modules/.bin/node, which `pnpm install` puts there",
    );
  });

  test("pnpm may run the node package's install script, and checks engines against that Node", () => {
    assert.match(
      workspace,
      /^onlyBuiltDependencies:\n(?: {2}- .*\n)*? {2}- "?node"?\n/m,
      "pnpm-workspace.yaml must list node under onlyBuiltDependencies: pnpm 10 runs no install script otherwise, and node_modules/.bin/node is never made",
    );
    assert.equal(
      /^nodeVersion: *(\S+)$/m.exec(workspace)?.[1],
      pinned,
      `pnpm-workspace.yaml's nodeVersion (the Node that dependencies' engines are checked against) must be package.json's node, ${pinned}`,
    );
  });

  test("the Node types are those of the pinned major", () => {
    const types = manifest.devDependencies["@types/node"] ?? "";
    assert.equal(
      major(types.replace(/^[\^~]/, "")),
      major(pinned),
      `package.json's @types/node (${types}) must be of Node ${major(pinned)}, the pinned major`,
    );
  });

  test("the services declare the Node they run on", () => {
    for (const service of ["gateway", "route", "stats"]) {
      const engines = (
        JSON.parse(readFileSync(join(repoRoot, "services", service, "package.json"), "utf8")) as {
          engines?: { node?: string };
        }
      ).engines?.node;
      assert.equal(
        engines,
        `^${pinned}`,
        `services/${service}/package.json engines.node must be "^${pinned}" (the pinned Node; its bundle carries this file)`,
      );
    }
  });
});
