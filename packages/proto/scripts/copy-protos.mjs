// Copies the contracts into this package (protos/, git-ignored) so the built package is
// self-contained: a deployed service carries the .proto files it loads at start.
import { cpSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
const target = join(packageRoot, "protos");
rmSync(target, { recursive: true, force: true });
cpSync(join(packageRoot, "..", "..", "protos"), target, {
  recursive: true,
  filter: (source) => !source.endsWith(".yaml"),
});
