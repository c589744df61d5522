// Preloaded (node --import) into every service the local stack starts, never into an image:
// the service ends when the process that started it is gone, however that one ended (a
// SIGKILL runs no handler of its own, so it could not stop its services itself).
//
// The stack holds the write end of this process's stdin and never writes to it. When the
// stack's process ends, the kernel closes that end and this side reads end-of-file; the
// service then stops as Cloud Run stops it: SIGTERM, its own drain, exit. If it has not ended
// well after its grace period, it is killed. Only with a pipe for stdin (what the stack
// gives): another stdin (a terminal, /dev/null) says nothing about a parent.
import { fstatSync } from "node:fs";

const graceMs = Number(process.env.SHUTDOWN_GRACE_MS) || 8_000;

let ending = false;
const parentGone = () => {
  if (ending) return;
  ending = true;
  // At exit, after its drain, it ends without flushing its last log lines, which nothing
  // reads any more: pino's final synchronous flush would try to write them to the closed pipe
  // forever (sonic-boom 4.2 flushSync sleeps and retries on any error but EAGAIN, EPIPE
  // included). Before the other exit listeners, so before that flush.
  process.prependListener("exit", () => process.kill(process.pid, "SIGKILL"));
  process.kill(process.pid, "SIGTERM");
  setTimeout(() => process.kill(process.pid, "SIGKILL"), graceMs + 5_000).unref();
};

const stdin = fstatSync(0);
if (stdin.isFIFO() || stdin.isSocket()) {
  process.stdin.once("end", parentGone);
  process.stdin.once("error", parentGone);
  process.stdin.resume();
  // Reading it keeps no service running by itself.
  (process.stdin as { unref?: () => void }).unref?.();
}
