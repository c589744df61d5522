// The contracts stay wire-compatible with what came before: `buf breaking` (the FILE rules of
// protos/buf.yaml: no field renumbered, retyped or removed, no message or method gone) against
// an earlier version of protos/ from git:
//   - uncommitted changes to protos/: against HEAD;
//   - on a branch off main (main or origin/main is not HEAD): against where it left main
//     (git merge-base), i.e. everything the branch would merge;
//   - otherwise (on main, as CI's clone is): against HEAD's first parent, i.e. the last commit.
// Without git history to compare with (not a checkout, or a shallow clone of one commit) it
// says so and passes: there is nothing to compare with.
// Not cached by turbo (packages/proto/turbo.json): what it compares with is git's, not a file.
import { execFileSync, spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = join(packageRoot, "..", "..");
const git = (...args) =>
  spawnSync("git", args, { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
const commitOf = (ref) => {
  const result = git("rev-parse", "--verify", "--quiet", `${ref}^{commit}`);
  return result.status === 0 ? result.stdout.trim() : undefined;
};

function baseline() {
  const head = commitOf("HEAD");
  if (!head) return undefined;
  if (git("diff", "--quiet", "HEAD", "--", "protos").status === 1) {
    return { ref: head, why: "HEAD (uncommitted changes to protos/)" };
  }
  for (const branch of ["main", "origin/main"]) {
    const tip = commitOf(branch);
    if (!tip || tip === head) continue;
    const base = git("merge-base", "HEAD", tip).stdout.trim();
    if (base && base !== head) return { ref: base, why: `where this branch left ${branch}` };
  }
  const parent = commitOf("HEAD~1");
  return parent ? { ref: parent, why: "the last commit's parent" } : undefined;
}

const against = baseline();
if (!against) {
  console.log("protos: no earlier commit here to compare with: buf breaking not run");
  process.exit(0);
}
// The repository's git directory, also from a worktree (where .git is a file).
const gitDir = execFileSync("git", ["rev-parse", "--path-format=absolute", "--git-common-dir"], {
  cwd: repoRoot,
  encoding: "utf8",
}).trim();
console.log(`protos: buf breaking against ${against.ref.slice(0, 12)}, ${against.why}`);
// The package's own buf (@bufbuild/buf), as the lint script's other commands use.
const result = spawnSync(
  join(packageRoot, "node_modules", ".bin", "buf"),
  ["breaking", join(repoRoot, "protos"), "--against", `${gitDir}#ref=${against.ref},subdir=protos`],
  { stdio: "inherit" },
);
if (result.error) throw result.error;
process.exit(result.status ?? 1);
