// A service image's build stage, replayed without Docker (no Docker engine runs where the tests
// do), as close to `docker build` as a test on this machine can get:
//   - the build context is a copy of the repository made through .dockerignore, matched by
//     @balena/dockerignore (a port of Docker's own matcher), so a rule that leaves out
//     something the build needs fails the build here as it would in Docker;
//   - the stage's instructions run in order in a temporary folder standing for the stage's
//     filesystem root: ENV into the environment, WORKDIR and COPY as Docker does them, RUN
//     through /bin/sh -c as Docker's shell form does;
//   - the global pnpm install is skipped (pnpm is on PATH already, checked to be the same
//     version), and the bundle command writes to a folder in that root instead of /app.
// Anything else the replay does not know fails with a message saying so, rather than being
// skipped: the replay must never pass over a step the image runs.
import { execFileSync, spawn } from "node:child_process";
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
} from "node:fs";
import { basename, delimiter, dirname, join, posix } from "node:path";
import dockerignore from "@balena/dockerignore";
import type { Copy, Env, Instruction, Run } from "dockerfile-ast";
import { bundleCommand, imageAppDir } from "./bundle.js";
import { buildStage, type ParsedDockerfile, type Service, words } from "./dockerfile.js";

// The package is CommonJS (module.exports is the factory) but its types declare a default
// export, which NodeNext reads as the module object; at run time the default import is the factory.
const ignore = dockerignore as unknown as typeof dockerignore.default;

/** Matches paths (relative, with /) against the .dockerignore of the repository at `root`. */
export function contextMatcher(root: string): { ignores(path: string): boolean; rules: string } {
  const rules = readFileSync(join(root, ".dockerignore"), "utf8");
  const matcher = ignore().add(rules);
  return { ignores: (path) => matcher.ignores(path), rules };
}

/** Copies the repository at `from` into `to` as Docker sends it as the build context. */
export function copyContext(from: string, to: string): void {
  const { ignores, rules } = contextMatcher(from);
  // Docker can take a file back (`!path`) inside a left-out folder; only without such
  // exceptions may a left-out folder be skipped without looking inside.
  const hasExceptions = rules.split(/\r?\n/).some((line) => line.trim().startsWith("!"));
  const walk = (relative: string) => {
    for (const entry of readdirSync(join(from, relative), { withFileTypes: true })) {
      const path = relative ? `${relative}/${entry.name}` : entry.name;
      const left = ignores(path);
      const source = join(from, path);
      const target = join(to, path);
      if (entry.isDirectory()) {
        if (left && !hasExceptions) continue;
        if (!left) mkdirSync(target, { recursive: true });
        walk(path);
      } else if (!left && (entry.isFile() || entry.isSymbolicLink())) {
        mkdirSync(dirname(target), { recursive: true });
        if (entry.isSymbolicLink()) symlinkSync(readlinkSync(source), target);
        else copyFileSync(source, target); // keeps the mode, so scripts stay executable
      }
    }
  };
  mkdirSync(to, { recursive: true });
  walk("");
}

/** The environment a build step sees: this machine's PATH, home (pnpm's store) and network
 * settings, none of the test runner's own variables, then the Dockerfile's ENV. The node that
 * runs the tests (the project's, the image's version) comes first on PATH, standing for the
 * base image's node: the image installs with --ignore-scripts, so no node_modules/.bin/node. */
function baseEnv(): Record<string, string> {
  const keep =
    /^(PATH|HOME|TMPDIR|NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|XDG_.*|.*_proxy)$/i;
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      (entry): entry is [string, string] => keep.test(entry[0]) && entry[1] !== undefined,
    ),
  );
  env.PATH = [dirname(process.execPath), env.PATH].filter(Boolean).join(delimiter);
  return env;
}

export interface Replay {
  /** The build context made by copyContext. */
  context: string;
  /** An empty folder standing for the stage's filesystem root. */
  root: string;
  /** Added to every step's environment (e.g. a turbo cache shared by the replays). */
  env?: Record<string, string>;
}

/**
 * Runs the build stage of `dockerfile` (the stage the image copies /app from). Resolves with
 * the folder holding what the stage left in /app: the service's bundle.
 */
export async function replayBuildStage(
  dockerfile: ParsedDockerfile,
  service: Service,
  { context, root, env: extraEnv = {} }: Replay,
): Promise<string> {
  const stage = buildStage(dockerfile);
  const host = (containerPath: string) => join(root, containerPath);
  const env = { ...baseEnv(), ...extraEnv };
  let workdir = "/";
  const where = (instruction: Instruction) =>
    `${dockerfile.path} line ${instruction.getRange().start.line + 1} (${instruction.toString().trim()})`;
  const unknown = (instruction: Instruction, why: string) =>
    new Error(
      `${where(instruction)}: ${why}. The bundle test replays the build stage without Docker ` +
        "and must run every step the image runs: teach test/support/image-build.ts this step, " +
        "or keep the Dockerfile to the steps it knows.",
    );

  for (const instruction of stage.instructions) {
    const keyword = instruction.getKeyword();
    if (keyword === "ENV") {
      for (const property of (instruction as Env).getProperties()) {
        env[property.getName()] = property.getValue() ?? "";
      }
    } else if (keyword === "WORKDIR") {
      workdir = posix.resolve(workdir, words(instruction).join(" "));
      mkdirSync(host(workdir), { recursive: true });
    } else if (keyword === "COPY") {
      const copy = instruction as Copy;
      if (copy.getFlags().length > 0) throw unknown(instruction, "COPY flags are not replayed");
      const sources = words(copy);
      const target = sources.pop();
      if (!target || sources.length === 0) throw unknown(instruction, "COPY needs a source");
      const destination = host(posix.resolve(workdir, target));
      const intoFolder =
        target.endsWith("/") ||
        target === "." ||
        sources.length > 1 ||
        (existsSync(destination) && statSync(destination).isDirectory());
      for (const source of sources) {
        if (/[*?[]/.test(source)) throw unknown(instruction, "COPY wildcards are not replayed");
        const from = join(context, source);
        if (!existsSync(from)) {
          throw new Error(
            `${where(instruction)}: ${source} is not in the build context; is it left out by .dockerignore?`,
          );
        }
        if (statSync(from).isDirectory()) {
          cpSync(from, destination, { recursive: true, verbatimSymlinks: true });
        } else {
          const file = intoFolder ? join(destination, basename(source)) : destination;
          mkdirSync(dirname(file), { recursive: true });
          copyFileSync(from, file);
        }
      }
    } else if (keyword === "RUN") {
      await replayRun(instruction, service, {
        cwd: host(workdir),
        env,
        app: host(imageAppDir),
        unknown,
        where,
      });
    } else {
      throw unknown(instruction, `${keyword} is not replayed`);
    }
  }
  const app = host(imageAppDir);
  if (!existsSync(join(app, "package.json"))) {
    throw new Error(`${dockerfile.path}: the build stage left no bundle in ${imageAppDir}`);
  }
  return app;
}

async function replayRun(
  instruction: Instruction,
  service: Service,
  context: {
    cwd: string;
    env: Record<string, string>;
    app: string;
    unknown: (instruction: Instruction, why: string) => Error;
    where: (instruction: Instruction) => string;
  },
): Promise<void> {
  const { cwd, env, app, unknown, where } = context;
  if ((instruction as Run).getFlags().length > 0) {
    throw unknown(instruction, "RUN flags (--mount, ...) are not replayed");
  }
  const command = (instruction.getArgumentsContent() ?? "").trim();
  if (command.startsWith("[")) throw unknown(instruction, "exec-form RUN is not replayed");

  const pnpmInstall = /^npm (?:install|i) (?:--global|-g) pnpm@(\S+)$/.exec(command);
  if (pnpmInstall) {
    // Skipped: pnpm is on PATH already. It must be the version the image installs.
    let onPath: string;
    try {
      onPath = execFileSync("pnpm", ["--version"], { encoding: "utf8" }).trim();
    } catch {
      onPath = "not found";
    }
    if (onPath !== pnpmInstall[1]) {
      throw new Error(
        `${where(instruction)}: the image installs pnpm ${pnpmInstall[1]} but pnpm on PATH is ` +
          `${onPath}; install that version (npm install -g pnpm@${pnpmInstall[1]}) to replay the build`,
      );
    }
    return;
  }
  if (command === bundleCommand(service, imageAppDir).join(" ")) {
    const [script, ...args] = bundleCommand(service, app);
    await run(join(cwd, script as string), args, cwd, env, where(instruction));
    return;
  }
  if (/^pnpm (fetch|install|turbo build)\b/.test(command) && !command.includes(imageAppDir)) {
    await run("/bin/sh", ["-c", command], cwd, env, where(instruction));
    return;
  }
  throw unknown(instruction, "this RUN is not one the replay knows");
}

function run(
  program: string,
  args: string[],
  cwd: string,
  env: Record<string, string>,
  step: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-20_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const timer = setTimeout(() => child.kill("SIGKILL"), 180_000);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`${step}: could not start: ${error.message}`));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${step} failed (${code ?? signal}):\n${output}`));
    });
  });
}
