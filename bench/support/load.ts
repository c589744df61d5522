// A closed-loop load: `concurrency` callers each issue the next call as soon as the last one
// ends, for a fixed time after a warm-up. Latencies of every call, in microseconds.
export interface LoadResult {
  calls: number;
  errors: number;
  callsPerSecond: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
}

export interface LoadOptions {
  concurrency: number;
  warmupMs: number;
  durationMs: number;
}

export async function closedLoop(
  call: () => Promise<unknown>,
  options: LoadOptions,
): Promise<LoadResult> {
  const run = async (ms: number, latencies: number[] | undefined) => {
    const until = performance.now() + ms;
    let errors = 0;
    await Promise.all(
      Array.from({ length: options.concurrency }, async () => {
        while (performance.now() < until) {
          const started = performance.now();
          try {
            await call();
            latencies?.push((performance.now() - started) * 1000);
          } catch {
            errors += 1;
          }
        }
      }),
    );
    return errors;
  };
  await run(options.warmupMs, undefined);
  const latencies: number[] = [];
  const started = performance.now();
  const errors = await run(options.durationMs, latencies);
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0);
  return {
    calls: latencies.length,
    errors,
    callsPerSecond: Math.round(latencies.length / seconds),
    p50Us: at(0.5),
    p90Us: at(0.9),
    p99Us: at(0.99),
  };
}

/** CPU time (user + system) a process has used so far, in microseconds (Linux /proc). */
export async function processCpuUs(pid: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]?.split(" ") ?? [];
  // utime and stime, fields 14 and 15 of the whole line, in clock ticks (100 per second).
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** Peak resident set size of a process so far, in MiB (Linux /proc). */
export async function processPeakRssMiB(pid: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return Math.round(kib / 1024);
}

/** The process and its children (a PostgreSQL server: the postmaster and its backends). */
async function processTree(root: number): Promise<number[]> {
  const { readdir, readFile } = await import("node:fs/promises");
  const children = await Promise.all(
    (await readdir("/proc"))
      .filter((entry) => /^\d+$/.test(entry))
      .map(async (entry) => {
        try {
          const stat = await readFile(`/proc/${entry}/stat`, "utf8");
          return Number(stat.split(") ")[1]?.split(" ")[1]) === root ? [Number(entry)] : [];
        } catch {
          return [];
        }
      }),
  );
  return [root, ...children.flat()];
}

/**
 * CPU time of a process and its children so far, in µs: the live ones' own, and the ended
 * ones' (cutime and cstime of the root, fields 16 and 17).
 */
export async function processTreeCpuUs(root: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  let ticks = 0;
  for (const pid of await processTree(root)) {
    try {
      const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]?.split(" ") ?? [];
      ticks += Number(fields[11]) + Number(fields[12]);
      if (pid === root) ticks += Number(fields[13]) + Number(fields[14]);
    } catch {}
  }
  return ticks * 10_000;
}

/**
 * Resident memory of a process and its children now, in MiB, as PSS: pages they share (a
 * PostgreSQL server's shared buffers) split among them, not counted once per process.
 */
export async function processTreePssMiB(root: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  let kib = 0;
  for (const pid of await processTree(root)) {
    try {
      const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
      kib += Number(/Pss:\s+(\d+)/.exec(rollup)?.[1] ?? 0);
    } catch {}
  }
  return Math.round(kib / 1024);
}
