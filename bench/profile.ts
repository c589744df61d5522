// node --import tsx bench/profile.ts [seconds] [concurrency]: where the gateway path's time goes.
// Starts the stack with auth (LOG_LEVEL=info and the services' call-line sampling, unless
// LOG_RPC_SAMPLE_RATE is set) and the
// services named in BENCH_PROFILE_SERVICES (default gateway,route; add stats) under `node --cpu-prof`, drives GetFeature through the gateway with h2load, stops
// the stack (the profiles are written at exit) and prints each process's heaviest functions
// by self time, and self time by package. Profiles: bench-results/profiles/*.cpuprofile (open
// them in Chrome DevTools or speedscope).
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { startStack } from "@cloudrun-grpc/local-stack";
import { packageDefinition } from "@cloudrun-grpc/proto";
import { grpcBody, h2load, requireH2load } from "./support/h2load.js";

requireH2load();
const seconds = Number(process.argv[2] ?? 8);
const concurrency = Number(process.argv[3] ?? 64);
const dir = resolve("bench-results/profiles");
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
// What --cpu-prof does, through a preloaded module (see support/cpu-profile.mjs).
const nodeOptions = {
  NODE_OPTIONS: `--import ${new URL("./support/cpu-profile.mjs", import.meta.url).pathname}`,
  BENCH_CPU_PROF_DIR: dir,
};
const profiled = (process.env.BENCH_PROFILE_SERVICES ?? "gateway,route").split(",");
const stack = await startStack({
  auth: process.env.BENCH_AUTH !== "off",
  env: {
    all: {
      LOG_LEVEL: "info",
      ...(process.env.LOG_RPC_SAMPLE_RATE
        ? { LOG_RPC_SAMPLE_RATE: process.env.LOG_RPC_SAMPLE_RATE }
        : {}),
    },
    ...Object.fromEntries(profiled.map((name) => [name, nodeOptions])),
  },
});
const pids = new Map(stack.services.map((service) => [service.child.pid, service.name]));
try {
  const token = stack.auth ? await stack.auth.tokenFor("client", stack.gateway.url) : undefined;
  const method = packageDefinition["gateway.v1.GatewayService"] as unknown as Record<
    string,
    { requestSerialize(message: object): Buffer }
  >;
  const body = grpcBody([
    (method.GetFeature as { requestSerialize(message: object): Buffer }).requestSerialize({
      point: { latitude: 402223000, longitude: -749300000 },
    }),
  ]);
  const getFeature = {
    url: `${stack.gateway.url}/gateway.v1.GatewayService/GetFeature`,
    body,
    headers: {
      "content-type": "application/grpc",
      te: "trailers",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
  };
  // A warm-up, then every profiled process starts its profile afresh: only the load is profiled.
  await h2load(getFeature, concurrency, 2);
  for (const service of stack.services)
    if (profiled.includes(service.name)) service.child.kill("SIGUSR2");
  const result = await h2load(getFeature, concurrency, seconds);
  console.log(
    `GetFeature through the gateway: ${result.requestsPerSecond} calls/s at concurrency ${concurrency}, p99 ${result.p99Us} µs`,
  );
} finally {
  await stack.stop();
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function packageOf(url: string): string {
  if (url === "") return "(native / V8)";
  const pnpm = /node_modules\/\.pnpm\/([^/]+)\//.exec(url);
  if (pnpm) return (pnpm[1] as string).replace(/@[\d.]+.*$/, "").replace("+", "/");
  const ours = /\/(packages|services)\/([^/]+)\//.exec(url);
  if (ours) return `ours: ${ours[1]}/${ours[2]}`;
  if (url.startsWith("node:")) return "node core";
  return url;
}

for (const file of readdirSync(dir).filter((name) => name.endsWith(".cpuprofile"))) {
  const pid = Number(/^CPU\.(\d+)\.cpuprofile$/.exec(file)?.[1]);
  const profile = JSON.parse(readFileSync(join(dir, file), "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, index) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0));
  });
  const total = [...selfUs.values()].reduce((sum, value) => sum + value, 0);
  const byFunction = new Map<string, number>();
  const byPackage = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = (byId.get(id) as ProfileNode).callFrame;
    if (functionName === "(idle)") continue;
    const where = url
      .replace(/^.*node_modules\/\.pnpm\//, "")
      .replace(/^file:\/\/\/work\/main\//, "");
    const key = `${functionName || "(anonymous)"} ${where}:${lineNumber + 1}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    byPackage.set(packageOf(url), (byPackage.get(packageOf(url)) ?? 0) + us);
  }
  const busy = [...byFunction.values()].reduce((sum, value) => sum + value, 0);
  const pct = (us: number) => `${((100 * us) / busy).toFixed(1)}%`;
  console.log(
    `\n${pids.get(pid) ?? "?"} (${file}): ${(busy / 1e6).toFixed(2)} s busy of ${(total / 1e6).toFixed(2)} s profiled`,
  );
  console.log("  by package (self time):");
  for (const [name, us] of [...byPackage].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    console.log(`    ${pct(us).padStart(6)}  ${name}`);
  }
  console.log("  heaviest functions (self time):");
  for (const [name, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.log(`    ${pct(us).padStart(6)}  ${name}`);
  }
  // Inclusive time (the function and all it calls) of our code and of the logger.
  const parent = new Map<number, number>();
  for (const node of profile.nodes)
    for (const child of node.children ?? []) parent.set(child, node.id);
  const inclusive = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const own = (byId.get(id) as ProfileNode).callFrame.functionName;
    if (own === "(idle)" || own === "(program)" || own === "(garbage collector)") continue;
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const { functionName, url, lineNumber } = (byId.get(at) as ProfileNode).callFrame;
      if (!/\/(packages|services)\/|pino|randomFillSync|async_hooks/.test(url + functionName))
        continue;
      const where = url
        .replace(/^.*node_modules\/\.pnpm\//, "")
        .replace(/^file:\/\/\/work\/main\//, "");
      const key = `${functionName || "(anonymous)"} ${where}:${lineNumber + 1}`;
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
  }
  console.log("  ours, the logger, random ids and async hooks (inclusive time):");
  for (const [name, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, 30)) {
    console.log(`    ${pct(us).padStart(6)}  ${name}`);
  }
}
