// The container images of the three services, read from their Dockerfiles (dockerfile-ast):
// pinned bases, the repo's own pnpm and lockfile, the bundle made by the one bundle command,
// and a runtime stage that holds only the bundle and runs it as node, not root, with signals
// reaching node. That the build stage really builds a working bundle is test/bundle.test.ts.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { Cmd, Copy, Instruction } from "dockerfile-ast";
import { bundleCommand, imageAppDir } from "./support/bundle.js";
import {
  buildStage,
  finalStage,
  readDockerfile,
  repoRoot,
  type Service,
  services,
  words,
} from "./support/dockerfile.js";
import { contextMatcher } from "./support/image-build.js";

const packageManager = (
  JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { packageManager: string }
).packageManager;
const pnpmVersion = /^pnpm@(\d+\.\d+\.\d+)$/.exec(packageManager)?.[1];
const pinnedNode = (
  JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
    devDependencies: Record<string, string>;
  }
).devDependencies.node as string;

const runs = (instructions: Instruction[]) =>
  instructions
    .filter((instruction) => instruction.getKeyword() === "RUN")
    .map((instruction) => (instruction.getArgumentsContent() ?? "").trim());

const packageManagers = /^(npm|npx|pnpm|pnpx|yarn|corepack)$/;

for (const service of services) {
  describe(`services/${service}/Dockerfile`, () => {
    const dockerfile = readDockerfile(service);
    const where = dockerfile.path;

    test("has a build stage and a runtime stage", () => {
      assert.ok(
        dockerfile.stages.length >= 2,
        `${where} has ${dockerfile.stages.length} stage(s); build in one stage (FROM ... AS build) and copy only the bundle into a second, so no toolchain or source ships in the image`,
      );
    });

    test("every base image is pinned by digest to the project's Node", () => {
      for (const { from } of dockerfile.stages) {
        const image = from.getImage();
        assert.match(
          from.getImageDigest() ?? "",
          /^sha256:[0-9a-f]{64}$/,
          `${where}: FROM ${image} is not pinned; write FROM <image>:<tag>@sha256:<64 hex> with the index digest from \`docker buildx imagetools inspect <image>:<tag>\``,
        );
        assert.equal(
          from.getImageName(),
          "node",
          `${where}: FROM ${image} should be the official node image`,
        );
        // What ships runs the Node the tests ran on: the `node` package pinned in package.json.
        const tagVersion = /^\d+(?:\.\d+){0,2}(?=-|$)/.exec(from.getImageTag() ?? "")?.[0] ?? "";
        const major = pinnedNode.split(".")[0];
        assert.equal(
          tagVersion.split(".")[0],
          major,
          `${where}: FROM ${image} must name Node ${major} in its tag, the major of the node package that dev and tests run (package.json: node ${pinnedNode}), e.g. node:${pinnedNode}-bookworm-slim@sha256:...`,
        );
        // A tag that names a minor or a patch must name the pinned one.
        assert.deepEqual(
          tagVersion.split("."),
          pinnedNode.split(".").slice(0, tagVersion.split(".").length),
          `${where}: FROM ${image} names Node ${tagVersion}, but dev and tests run ${pinnedNode} (package.json's node); use node:${pinnedNode}-bookworm-slim, or change both`,
        );
      }
    });

    test("the build stage installs the repo's pnpm and the locked dependencies", () => {
      const steps = runs(buildStage(dockerfile).instructions);
      assert.ok(
        pnpmVersion,
        `package.json's packageManager is not pnpm@<x.y.z>: ${packageManager}`,
      );
      const installed = steps.flatMap((step) =>
        [...step.matchAll(/\bpnpm@(\S+)/g)].map((m) => m[1]),
      );
      assert.deepEqual(
        installed,
        [pnpmVersion],
        `${where} must install pnpm once at package.json's packageManager version (RUN npm install --global pnpm@${pnpmVersion}); it installs ${JSON.stringify(installed)}`,
      );
      const installs = steps.filter((step) => /^pnpm install\b/.test(step));
      assert.equal(installs.length, 1, `${where} must RUN pnpm install exactly once`);
      assert.match(
        installs[0] ?? "",
        /(^|\s)--frozen-lockfile(\s|$)/,
        `${where}: pnpm install must use --frozen-lockfile, so the image gets exactly the locked dependencies or fails`,
      );
      assert.ok(
        steps.includes(`pnpm turbo build --filter=@cloudrun-grpc/${service}...`),
        `${where} must build the service and what it depends on: RUN pnpm turbo build --filter=@cloudrun-grpc/${service}...`,
      );
    });

    test("the build stage makes the bundle with the same command as the bundle test", () => {
      const expected = bundleCommand(service, imageAppDir).join(" ");
      const bundling = runs(buildStage(dockerfile).instructions).filter((step) =>
        step.includes("bundle-service.sh"),
      );
      assert.deepEqual(
        bundling,
        [expected],
        `${where} must RUN exactly \`${expected}\` (the command test/support/bundle.ts gives the bundle test), once`,
      );
    });

    test("the runtime stage holds only the bundle and runs it as node, not root", () => {
      const stage = finalStage(dockerfile);
      const from = buildStage(dockerfile).name;
      const keywords = stage.instructions.map((instruction) => instruction.getKeyword());
      assert.ok(!keywords.includes("ADD"), `${where}: the runtime stage must not ADD files`);
      const copies = stage.instructions.filter((i) => i.getKeyword() === "COPY") as Copy[];
      assert.ok(copies.length > 0, `${where}: the runtime stage copies nothing`);
      for (const copy of copies) {
        const [source, ...rest] = words(copy);
        assert.ok(
          copy.getFromFlag()?.getValue() === from &&
            source?.replace(/\/$/, "") === imageAppDir &&
            rest.length === 1,
          `${where}: the runtime stage may copy only the build stage's bundle (COPY --from=${from} ${imageAppDir} ${imageAppDir}), not \`${copy.toString().trim()}\``,
        );
        assert.ok(
          !copy.getFlags().some((flag) => ["chown", "chmod"].includes(flag.getName())),
          `${where}: leave the bundle owned by root (no --chown/--chmod), so the service's user cannot change its own code`,
        );
      }

      const users = stage.instructions.filter((i) => i.getKeyword() === "USER");
      const user = users.at(-1)?.getArgumentsContent()?.trim() ?? "root";
      assert.ok(
        !/^(root|0)(:.*)?$/.test(user),
        `${where}: the service must not run as root; add USER node to the runtime stage (it runs as ${user})`,
      );

      const env = stage.instructions
        .filter((i) => i.getKeyword() === "ENV")
        .map((i) => i.getArgumentsContent()?.trim());
      assert.ok(env.includes("NODE_ENV=production"), `${where}: set ENV NODE_ENV=production`);
      const exposed = stage.instructions
        .filter((i) => i.getKeyword() === "EXPOSE")
        .flatMap((i) => words(i));
      assert.deepEqual(exposed, ["8080"], `${where}: EXPOSE 8080, Cloud Run's default PORT`);
      const workdir = stage.instructions.filter((i) => i.getKeyword() === "WORKDIR").at(-1);
      assert.equal(
        workdir?.getArgumentsContent()?.trim(),
        imageAppDir,
        `${where}: the runtime stage must run in ${imageAppDir} (WORKDIR ${imageAppDir}), where the bundle is`,
      );
    });

    test("the container starts node itself, in exec form", () => {
      const stage = finalStage(dockerfile);
      const cmds = stage.instructions.filter((i) => i.getKeyword() === "CMD") as Cmd[];
      assert.equal(cmds.length, 1, `${where}: the runtime stage needs exactly one CMD`);
      const cmd = cmds[0] as Cmd;
      assert.ok(
        cmd.getOpeningBracket() !== null,
        `${where}: CMD must be in exec (JSON) form, CMD ["node", "dist/main.js"]: the shell form puts /bin/sh in front of node and SIGTERM never reaches it`,
      );
      assert.deepEqual(
        cmd.getJSONStrings().map((word) => word.getJSONValue()),
        ["node", "dist/main.js"],
        `${where}: CMD must be ["node", "dist/main.js"]`,
      );
      for (const instruction of dockerfile.stages.flatMap((s) => s.instructions)) {
        if (!["CMD", "ENTRYPOINT"].includes(instruction.getKeyword())) continue;
        const program = (instruction as Cmd)
          .getJSONStrings()
          .map((word) => word.getJSONValue())
          .concat(words(instruction))[0]
          ?.replace(/^.*\//, "");
        assert.ok(
          !packageManagers.test(program ?? ""),
          `${where}: \`${instruction.toString().trim()}\` starts ${program}, which does not pass SIGTERM on to node; start node directly`,
        );
      }
    });
  });
}

describe("the three Dockerfiles", () => {
  test("are identical except for the service name", () => {
    const normalise = (service: Service) =>
      readDockerfile(service).text.replaceAll(service, "<service>");
    const [first, ...others] = services;
    for (const other of others) {
      assert.equal(
        normalise(other),
        normalise(first),
        `services/${other}/Dockerfile differs from services/${first}/Dockerfile in more than the service name; make the same change in all three`,
      );
    }
  });
});

describe(".dockerignore", () => {
  const matcher = contextMatcher(repoRoot);
  // A quick check of both sides with clear messages; that the context holds everything the
  // build needs is proven by the bundle test, which builds from a copy made through this file.
  test("leaves out what must never reach an image or its build", () => {
    for (const path of [
      ".git/HEAD",
      "node_modules/.modules.yaml",
      "services/route/node_modules/zod/package.json",
      "packages/proto/node_modules/.bin/buf",
      "services/route/dist/main.js",
      "packages/proto/src/generated/routeguide/v1/Feature.ts",
      "packages/proto/protos/routeguide/v1/route_guide.proto",
      ".turbo/cache/x.tar.zst",
      "packages/runtime/.turbo/turbo-build.log",
      "infra/.terraform/providers/x",
      "infra/terraform.tfstate",
      "infra/terraform.tfstate.backup",
      "coverage/lcov.info",
      ".env",
    ]) {
      assert.ok(matcher.ignores(path), `.dockerignore lets ${path} into the build context`);
    }
  });
  test("keeps the sources the build reads", () => {
    for (const path of [
      "package.json",
      "pnpm-lock.yaml",
      "pnpm-workspace.yaml",
      "patches/@grpc__grpc-js@1.14.7.patch",
      "turbo.json",
      "tsconfig.base.json",
      "scripts/bundle-service.sh",
      "protos/routeguide/v1/route_guide.proto",
      "packages/proto/scripts/generate.mjs",
      "services/route/src/main.ts",
      "services/route/data/features.json",
      "test/package.json",
    ]) {
      assert.ok(!matcher.ignores(path), `.dockerignore leaves out ${path}, which the build needs`);
    }
  });
});
