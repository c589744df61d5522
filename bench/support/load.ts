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
