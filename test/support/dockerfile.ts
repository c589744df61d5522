// The services' Dockerfiles, parsed with dockerfile-ast and split into stages: read by the image
// test (what the images are) and by the bundle test (which replays the build stage).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Copy, DockerfileParser, type From, type Instruction } from "dockerfile-ast";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** Every service with a container image. */
export const services = ["gateway", "route", "stats"] as const;
export type Service = (typeof services)[number];

export interface Stage {
  from: From;
  /** The name after `AS`, if any. */
  name: string | null;
  /** The instructions after the FROM, up to the next FROM. */
  instructions: Instruction[];
}

export interface ParsedDockerfile {
  /** Relative to the repository root, for messages. */
  path: string;
  text: string;
  stages: Stage[];
}

export function readDockerfile(service: Service): ParsedDockerfile {
  const path = `services/${service}/Dockerfile`;
  const text = readFileSync(join(repoRoot, path), "utf8");
  const stages: Stage[] = [];
  for (const instruction of DockerfileParser.parse(text).getInstructions()) {
    if (instruction.getKeyword() === "FROM") {
      const from = instruction as From;
      stages.push({ from, name: from.getBuildStage(), instructions: [] });
    } else {
      const stage = stages.at(-1);
      if (!stage) throw new Error(`${path}: ${instruction.getKeyword()} before the first FROM`);
      stage.instructions.push(instruction);
    }
  }
  return { path, text, stages };
}

/**
 * The stage the final one copies the bundle from (`COPY --from=<stage> /app ...`). Throws
 * if there is no such stage, so both tests fail with the same message.
 */
export function buildStage(dockerfile: ParsedDockerfile): Stage {
  const final = dockerfile.stages.at(-1);
  const copy = final?.instructions.find(
    (instruction): instruction is Copy =>
      instruction.getKeyword() === "COPY" && (instruction as Copy).getFromFlag() !== null,
  );
  const name = copy?.getFromFlag()?.getValue();
  const stage = dockerfile.stages.find(
    (candidate) => candidate.name !== null && candidate.name === name,
  );
  if (!stage) {
    throw new Error(
      `${dockerfile.path}: the final stage must copy the bundle from a named build stage ` +
        "(FROM ... AS build, then COPY --from=build /app /app in the final stage)",
    );
  }
  return stage;
}

/** The stage the image runs: the last one. */
export function finalStage(dockerfile: ParsedDockerfile): Stage {
  const stage = dockerfile.stages.at(-1);
  if (!stage) throw new Error(`${dockerfile.path}: no FROM at all`);
  return stage;
}

/** The words of an instruction, flags left out (e.g. RUN's command, COPY's sources and target). */
export const words = (instruction: Instruction): string[] =>
  instruction.getArguments().map((argument) => argument.getValue());
