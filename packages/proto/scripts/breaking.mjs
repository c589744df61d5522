// The contracts stay wire-compatible with main's: `buf breaking` (the FILE rules of
// protos/buf.yaml: no field renumbered, retyped or removed, no message or method gone) against
// the protos of the `main` branch, or `origin/main` in a clone that has only that. On main
// itself this compares main with itself; on a branch, with what it would merge into.
// Outside a git checkout with either ref there is nothing to compare with: said, not failed.
import { execFileSync, spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = join(packageRoot, "..", "..");
const hasRef = (ref) =>
  spawnSync("git", ["rev-parse", "--verify", "--quiet", `${ref}^{commit}`], {
    cwd: repoRoot,
    stdio: "ignore",
  }).status === 0;
const ref = ["main", "origin/main"].find(hasRef);
if (!ref) {
  console.log("protos: no main or origin/main here to compare with: buf breaking not run");
  process.exit(0);
}
// The repository's git directory, also from a worktree (where .git is a file).
const gitDir = execFileSync("git", ["rev-parse", "--path-format=absolute", "--git-common-dir"], {
  cwd: repoRoot,
  encoding: "utf8",
}).trim();
// The package's own buf (@bufbuild/buf), as the lint script's other commands use.
const result = spawnSync(
  join(packageRoot, "node_modules", ".bin", "buf"),
  ["breaking", join(repoRoot, "protos"), "--against", `${gitDir}#ref=${ref},subdir=protos`],
  { stdio: "inherit" },
);
if (result.error) throw result.error;
process.exit(result.status ?? 1);
