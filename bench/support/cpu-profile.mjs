// Preloaded with NODE_OPTIONS=--import <this file> (Node 20 refuses --cpu-prof in
// NODE_OPTIONS, and the local stack starts services as `node dist/main.js`): profiles the
// whole process like --cpu-prof and writes CPU.<pid>.cpuprofile into BENCH_CPU_PROF_DIR at exit.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";

const dir = process.env.BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 1000 });
  session.post("Profiler.start");
  // SIGUSR2 starts the profile afresh, so it can leave out the process's start (bench/profile.ts
  // sends it once the stack is up and warm).
  process.on("SIGUSR2", () => {
    session.post("Profiler.stop");
    session.post("Profiler.start");
  });
  process.on("exit", () => {
    // The in-process session answers synchronously, so this works in an exit handler.
    session.post("Profiler.stop", (error, result) => {
      if (!error)
        writeFileSync(join(dir, `CPU.${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
