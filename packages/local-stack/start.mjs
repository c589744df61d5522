// `pnpm start`: builds everything, then runs the local stack (dist/main.js) in this same
// process, so the signal pnpm passes on reaches the stack itself. pnpm 10 runs a script as
// `sh -c <script>` and, on its own SIGTERM or SIGINT, signals only that child
// (@pnpm/npm-lifecycle's runCmd: `proc.kill()`, `proc.kill('SIGINT')`). A shell in between
// passes nothing on: on SIGTERM it ends and leaves its child running, and on SIGINT it waits
// for its child to end first (dash, Debian's sh; the old `turbo … && node …` chain left the
// whole stack running). So the script is `exec node_modules/node/bin/node start.mjs`: exec
// makes this process pnpm's child itself, and it names the project's node binary, not
// node_modules/.bin/node, which is a shell script that runs node as its child. If pnpm is
// killed outright, this process gets a new parent and stops the stack (main.ts).
// Plain JavaScript, committed: it runs before anything is built.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
const parentPid = process.ppid;

const build = spawn(
  join(root, "node_modules", ".bin", "turbo"),
  ["run", "build", "--output-logs=errors-only"],
  { cwd: root, stdio: "inherit" },
);
let stoppedBy;
const stopBuild = (signal) => {
  stoppedBy ??= signal;
  build.kill(signal);
};
const signals = ["SIGINT", "SIGTERM", "SIGHUP"];
for (const signal of signals) process.on(signal, stopBuild);
const parentWatch = setInterval(() => {
  if (process.ppid !== parentPid) stopBuild("SIGTERM");
}, 250);

const result = await new Promise((resolve) => {
  build.once("error", (error) => resolve(`could not run turbo: ${error.message}`));
  build.once("close", (code, signal) => resolve(code ?? signal));
});
clearInterval(parentWatch);
for (const signal of signals) process.off(signal, stopBuild);

if (stoppedBy) {
  process.stdout.write(`stopped during the build (${stoppedBy}); nothing was started\n`);
  process.exit(0);
}
if (result !== 0) {
  process.stderr.write(`local-stack: the build failed (${result})\n`);
  process.exit(1);
}
// The parent this process had from the start: main.ts stops the stack when it is gone.
process.env.LOCAL_STACK_PARENT_PID = String(parentPid);
await import("./dist/main.js");
