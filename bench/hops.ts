// What every hop, auth and stream costs, against bare grpc-js measured in the same run:
//   unary    baseline A (bare grpc-js, 1 hop), baseline B (bare grpc-js, client → proxy →
//            backend), the gateway's GetFeature (gateway → route, route reporting to stats)
//            with auth on, with auth off (both at the services' default call-line sampling), and with
//            auth on and a call line per call per hop
//   streams  ListFeatures (150 features per call) and RecordRoute (1,000 points per call)
//            through the gateway and through baseline B
//   rest     the same GetFeature as JSON over HTTP/1.1 and h2c from node:http / node:http2,
//            against baseline A
//   long-streams  one RecordRoute of 250,000 points at a time from a grpc-js client, through
//            baseline B, through the gateway and straight to route (issue 19: such routes
//            stalled for 30 s per MiB sent in grpc-js's retry buffer)
// Every row: h2load at each concurrency, a warm-up run first, then a measured run; CPU per
// call of every server process from /proc/<pid>/stat over the measured run, peak RSS from
// /proc/<pid>/status (VmHWM: the process's peak so far). stats' database, the stack's own
// PostgreSQL server, is measured as one "database" process: its postmaster and backends' CPU,
// and their PSS at the row's end (their shared buffers counted once, not once per process).
import { createServer as createHttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { Writable } from "node:stream";
import { type ServiceProcess, type Stack, startStack } from "@cloudrun-grpc/local-stack";
import {
  createGatewayClient,
  createRouteGuideClient,
  explicitRouteEnd,
  packageDefinition,
  routeEndHeader,
} from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { checkOnce, grpcBody, type H2loadTarget, h2load } from "./support/h2load.js";
import {
  processCpuUs,
  processPeakRssMiB,
  processTreeCpuUs,
  processTreePssMiB,
} from "./support/load.js";
import { median } from "./support/report.js";
import { type ServerProcess, startServerProcess } from "./support/server-process.js";

export type Section = "unary" | "streams" | "rest" | "ablation" | "long-streams";

export interface HopOptions {
  seconds: number;
  warmupSeconds: number;
  /** Before a scenario's first row. */
  firstWarmupSeconds: number;
  concurrencies: number[];
  /** Runs of each scenario per concurrency, interleaved with the others of its group. */
  rounds: number;
  /** Profile gateway and route (as --cpu-prof does) into this folder. */
  profileDir?: string;
}

export interface MeasuredProcess {
  name: string;
  pid: number;
  /** With its children (a PostgreSQL server's backends); memory as PSS, not peak RSS. */
  tree?: boolean;
}

/** CPU so far of one measured process (its children too, for a tree). */
const cpuOf = ({ pid, tree }: MeasuredProcess) =>
  tree ? processTreeCpuUs(pid) : processCpuUs(pid);
/** Peak RSS of a process; for a tree (shared memory), its PSS now. */
const memoryOf = ({ pid, tree }: MeasuredProcess) =>
  tree ? processTreePssMiB(pid) : processPeakRssMiB(pid);

export interface HopRow {
  section: Section;
  scenario: string;
  generator: string;
  /** What the services were told for logging (gateway rows), or "none". */
  logging: string;
  concurrency: number;
  /** What `rate` counts: calls, or the messages / points the calls carried. */
  unit: "calls" | "messages" | "points";
  rate: number;
  callsPerSecond: number;
  /** The row this one is compared with, and `rate` as a share of its rate. */
  baseline: string | null;
  /** The median of the per-round ratios (or of the rates, for a baseline in another group). */
  ratio: number | null;
  /** Each round's ratio, when the baseline was measured in the same rounds. */
  ratioRuns: number[];
  /** Runs the row is the median of. */
  runs: number;
  /** Each run's rate, in round order (rows of one group ran their rounds side by side). */
  rateRuns: number[];
  /** The interleaved group the row was measured in: only rows of one group pair round by round. */
  group: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  calls: number;
  /** Calls that failed: HTTP errors, plus gRPC failures the gateway logged. */
  errors: number;
  /** CPU µs per call of each server process over the measured run. */
  cpuUsPerCall: Record<string, number>;
  cpuUsPerCallTotal: number;
  peakRssMiB: Record<string, number>;
  generatorCpuUsPerCall: number;
}

// The call every unary row makes: a point where route has a feature, so the answer has a name.
const point = { latitude: 402223000, longitude: -749300000 };
const wholeMap = {
  lo: { latitude: 400_000_000, longitude: -750_000_000 },
  hi: { latitude: 410_000_000, longitude: -740_000_000 },
};
export const featuresOnMap = 150;
export const routePoints = 1000;

function serialize(method: string, message: object): Buffer {
  const definition = packageDefinition["gateway.v1.GatewayService"] as Record<
    string,
    { requestSerialize(message: object): Buffer }
  >;
  const found = definition[method];
  if (!found) throw new Error(`no method ${method}`);
  return found.requestSerialize(message);
}

/** The request body of each gateway method the h2load rows call. */
export const bodies = {
  GetFeature: () => grpcBody([serialize("GetFeature", { point })]),
  ListFeatures: () => grpcBody([serialize("ListFeatures", { rectangle: wholeMap })]),
  RecordRoute: () =>
    grpcBody(
      Array.from({ length: routePoints }, (_, index) =>
        serialize("RecordRoute", {
          point: { latitude: 400_000_000 + index * 1000, longitude: -745_000_000 + index * 500 },
        }),
      ),
    ),
};

function grpcTarget(port: number, method: keyof typeof bodies, token?: string): H2loadTarget {
  return {
    url: `http://127.0.0.1:${port}/gateway.v1.GatewayService/${method}`,
    body: bodies[method](),
    headers: {
      "content-type": "application/grpc",
      te: "trailers",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
  };
}

/** A baseline server process (bench/baseline-server.ts). */
type BaselineProcess = ServerProcess;

const startBaseline = (name: string, args: string[], env: Record<string, string> = {}) =>
  startServerProcess(new URL("./baseline-server.ts", import.meta.url), name, args, env);

/**
 * Failed calls the gateway logged (failures are logged whatever the sample rate). CANCELLED is
 * not counted: h2load resets the streams still open when its time is up.
 */
function failedCallsLogged(service: ServiceProcess): () => number {
  const from = service.lines.length;
  return () =>
    service.lines
      .slice(from)
      .filter(
        (line) =>
          line.includes('"side":"server"') &&
          !line.includes('"code":"OK"') &&
          !line.includes('"code":"CANCELLED"'),
      ).length;
}

interface Scenario {
  section: Section;
  name: string;
  generator: string;
  logging: string;
  processes: MeasuredProcess[];
  target: H2loadTarget;
  unit: HopRow["unit"];
  perCall: number;
  baseline: string | null;
  /** Failed calls since the given moment (gRPC failures h2load cannot see). */
  failures?: () => () => number;
  /** A call made by hand first: undefined when it went right, else what went wrong. */
  check?: () => Promise<string | undefined>;
}

async function grpcCheck(scenario: Scenario): Promise<string | undefined> {
  const check = await checkOnce(scenario.target);
  const expected = scenario.unit === "messages" ? featuresOnMap : 1;
  if (check.grpcStatus.startsWith("0") && check.messages === expected) return undefined;
  return `ended with grpc-status ${check.grpcStatus} and ${check.messages} messages (wanted 0 and ${expected})`;
}

let groups = 0;
const nextGroup = () => {
  groups += 1;
  return groups;
};

/** One measured run of one scenario at one concurrency: a row's figures, before the median. */
type Sample = Pick<
  HopRow,
  | "rate"
  | "callsPerSecond"
  | "p50Us"
  | "p90Us"
  | "p99Us"
  | "calls"
  | "errors"
  | "cpuUsPerCall"
  | "peakRssMiB"
  | "generatorCpuUsPerCall"
>;

async function sample(
  scenario: Scenario,
  concurrency: number,
  options: HopOptions,
): Promise<Sample> {
  await h2load(scenario.target, concurrency, options.warmupSeconds);
  const failures = scenario.failures?.();
  const before = await Promise.all(scenario.processes.map(cpuOf));
  const result = await h2load(scenario.target, concurrency, options.seconds);
  const after = await Promise.all(scenario.processes.map(cpuOf));
  const calls = Math.max(1, result.succeeded);
  return {
    rate: result.requestsPerSecond * scenario.perCall,
    callsPerSecond: result.requestsPerSecond,
    p50Us: result.p50Us,
    p90Us: result.p90Us,
    p99Us: result.p99Us,
    calls: result.succeeded,
    errors: result.failed + (failures?.() ?? 0),
    cpuUsPerCall: Object.fromEntries(
      scenario.processes.map(({ name }, index) => [
        name,
        Math.round(((after[index] as number) - (before[index] as number)) / calls),
      ]),
    ),
    peakRssMiB: Object.fromEntries(
      await Promise.all(
        scenario.processes.map(async (process) => [process.name, await memoryOf(process)]),
      ),
    ),
    generatorCpuUsPerCall: Math.round(result.generatorCpuUs / calls),
  };
}

/**
 * Measures scenarios interleaved: at each concurrency, `rounds` rounds, each a run of every
 * scenario in turn, so a scenario and its baseline see the same moments of a shared, noisy
 * machine. A row is the median of its runs; its ratio is the median of the per-round ratios
 * when its baseline is in the group (else the ratio of the medians, against an earlier row).
 */
async function measureGroup(
  scenarios: Scenario[],
  options: HopOptions,
  rows: HopRow[],
): Promise<void> {
  const group = nextGroup();
  for (const scenario of scenarios) {
    const problem = await (scenario.check ?? (() => grpcCheck(scenario)))();
    if (problem) throw new Error(`${scenario.name}: a check call ${problem}`);
    // A fresh process runs slowly for its first seconds (JIT, the database's caches): a longer
    // warm-up at the highest concurrency first, then one before each run.
    await h2load(scenario.target, Math.max(...options.concurrencies), options.firstWarmupSeconds);
  }
  for (const concurrency of options.concurrencies) {
    const samples = new Map<Scenario, Sample[]>(scenarios.map((scenario) => [scenario, []]));
    for (let round = 0; round < options.rounds; round += 1) {
      // Each round starts one row later, so what a run leaves behind (route's reports to
      // stats, a collection) does not always fall on the same next row.
      for (let turn = 0; turn < scenarios.length; turn += 1) {
        const scenario = scenarios[(turn + round) % scenarios.length] as Scenario;
        samples.get(scenario)?.push(await sample(scenario, concurrency, options));
      }
    }
    for (const scenario of scenarios) {
      const runs = samples.get(scenario) as Sample[];
      const rate = median(runs.map((run) => run.rate));
      // The run whose rate is the median gives the latencies, so they belong together.
      const typical = [...runs].sort((x, y) => x.rate - y.rate)[Math.floor((runs.length - 1) / 2)];
      const pairedBase = scenarios.find((other) => other.name === scenario.baseline);
      const earlierBase = rows.find(
        (row) => row.scenario === scenario.baseline && row.concurrency === concurrency,
      );
      const ratio = pairedBase
        ? median(
            runs.map(
              (run, round) =>
                run.rate / Math.max(1, (samples.get(pairedBase) as Sample[])[round]?.rate ?? 1),
            ),
          )
        : earlierBase
          ? rate / Math.max(1, earlierBase.rate)
          : undefined;
      const cpuUsPerCall = Object.fromEntries(
        scenario.processes.map(({ name }) => [
          name,
          Math.round(median(runs.map((run) => run.cpuUsPerCall[name] ?? 0))),
        ]),
      );
      const row: HopRow = {
        section: scenario.section,
        scenario: scenario.name,
        generator: scenario.generator,
        logging: scenario.logging,
        concurrency,
        unit: scenario.unit,
        rate: Math.round(rate),
        callsPerSecond: Math.round(median(runs.map((run) => run.callsPerSecond))),
        baseline: scenario.baseline,
        ratio: ratio === undefined ? null : Number(ratio.toFixed(2)),
        ratioRuns: pairedBase
          ? runs.map((run, round) =>
              Number(
                (
                  run.rate / Math.max(1, (samples.get(pairedBase) as Sample[])[round]?.rate ?? 1)
                ).toFixed(2),
              ),
            )
          : [],
        runs: runs.length,
        rateRuns: runs.map((run) => Math.round(run.rate)),
        group,
        p50Us: typical?.p50Us ?? 0,
        p90Us: typical?.p90Us ?? 0,
        p99Us: typical?.p99Us ?? 0,
        calls: runs.reduce((sum, run) => sum + run.calls, 0),
        errors: runs.reduce((sum, run) => sum + run.errors, 0),
        cpuUsPerCall,
        cpuUsPerCallTotal: Object.values(cpuUsPerCall).reduce((sum, value) => sum + value, 0),
        peakRssMiB: Object.fromEntries(
          scenario.processes.map(({ name }) => [
            name,
            Math.max(...runs.map((run) => run.peakRssMiB[name] ?? 0)),
          ]),
        ),
        generatorCpuUsPerCall: Math.round(median(runs.map((run) => run.generatorCpuUsPerCall))),
      };
      rows.push(row);
      console.error(
        `  ${row.scenario} @${concurrency}: ${row.rate} ${row.unit}/s${row.ratio === null ? "" : ` (× ${row.ratio}${row.ratioRuns.length > 1 ? `; runs ${row.ratioRuns.join(", ")}` : ""})`}, p99 ${(row.p99Us / 1000).toFixed(2)} ms, CPU µs/call ${JSON.stringify(cpuUsPerCall)}${row.errors ? `, ${row.errors} errors` : ""}`,
      );
    }
  }
}

const baselineA = "baseline A: bare grpc-js, 1 hop";
const baselineB = "baseline B: bare grpc-js, 2 hops";
const h2loadGrpc = "h2load, h2c, 1 connection";
export const scenarioNames = { baselineA, baselineB };

interface Running {
  stop(): Promise<void>;
}

/** A gateway stack of one configuration: what its scenarios measure and send. */
interface GatewayStack {
  name: string;
  streams: boolean;
  port: number;
  token: string | undefined;
  common: Pick<Scenario, "generator" | "logging" | "processes" | "failures">;
}

/** The gateway's stacks, one per configuration, all running while their groups are measured. */
async function startGatewayStacks(
  sections: Section[],
  options: HopOptions,
  running: Running[],
): Promise<GatewayStack[]> {
  // The services' own logging defaults (LOG_RPC_SAMPLE_RATE 0.1: failures, slow calls and one
  // trace in ten get call lines), and a row with a line for every call on every hop.
  const configurations = [
    { name: "gateway, auth on", auth: true, sampleRate: undefined, streams: true },
    { name: "gateway, auth off", auth: false, sampleRate: undefined, streams: false },
    { name: "gateway, auth on, a line per call", auth: true, sampleRate: "1", streams: false },
  ];
  const stacks: GatewayStack[] = [];
  for (const configuration of configurations) {
    const streams = sections.includes("streams") && configuration.streams;
    if (!sections.includes("unary") && !streams) continue;
    const logging = `LOG_LEVEL=info LOG_RPC_SAMPLE_RATE=${configuration.sampleRate ?? "0.1 (default)"}`;
    const profiling: Record<string, string> = options.profileDir
      ? {
          NODE_OPTIONS: `--import ${new URL("./support/cpu-profile.mjs", import.meta.url).pathname}`,
          BENCH_CPU_PROF_DIR: options.profileDir,
        }
      : {};
    const stack: Stack = await startStack({
      auth: configuration.auth,
      env: {
        all: {
          LOG_LEVEL: "info",
          LOG_FORMAT: "json",
          ...(configuration.sampleRate ? { LOG_RPC_SAMPLE_RATE: configuration.sampleRate } : {}),
        },
        gateway: profiling,
        route: profiling,
      },
    });
    running.push(stack);
    const processes: MeasuredProcess[] = stack.services.map((service) => ({
      name: service.name,
      pid: service.child.pid as number,
    }));
    // stats' database counts too, wherever it runs: here the stack's own server.
    if (stack.database) processes.push({ name: "database", pid: stack.database.pid, tree: true });
    stacks.push({
      name: configuration.name,
      streams,
      port: stack.gateway.port,
      token: stack.auth ? await stack.auth.tokenFor("client", stack.gateway.url) : undefined,
      common: {
        generator: h2loadGrpc,
        logging,
        processes,
        failures: () => failedCallsLogged(stack.gateway),
      },
    });
  }
  return stacks;
}

/**
 * Every row's scenario in one of these interleaved groups: GetFeature (baselines A and B, the
 * gateway stacks, REST), ListFeatures (B, gateway), RecordRoute (B, gateway), the ablation's
 * proxies; then the long streams. Each group's processes run together while it is measured.
 */
export async function benchHops(sections: Section[], options: HopOptions): Promise<HopRow[]> {
  const rows: HopRow[] = [];
  const running: Running[] = [];
  // Every process is stopped, newest first, even when one of them fails to stop.
  const stopAll = async () => {
    let failure: unknown;
    for (const process_ of running.splice(0).reverse()) {
      await process_.stop().catch((error: unknown) => {
        failure ??= error;
      });
    }
    if (failure) throw failure;
  };
  try {
    const unary = sections.includes("unary");
    const streams = sections.includes("streams");
    const rest = sections.includes("rest");
    const none = "none (bare)";
    const getFeature: Scenario[] = [];
    if (unary || rest) {
      const echo = await startBaseline("A echo", ["echo"]);
      running.push(echo);
      getFeature.push({
        section: "unary",
        name: baselineA,
        generator: h2loadGrpc,
        logging: none,
        processes: [{ name: "server", pid: echo.pid }],
        target: grpcTarget(echo.port, "GetFeature"),
        unit: "calls",
        perCall: 1,
        baseline: null,
      });
    }
    let proxyPort = 0;
    let b: Pick<Scenario, "generator" | "logging" | "processes"> | undefined;
    if (unary || streams) {
      const backend = await startBaseline("B backend", ["echo"]);
      running.push(backend);
      const proxy = await startBaseline("B proxy", ["proxy", String(backend.port)]);
      running.push(proxy);
      proxyPort = proxy.port;
      b = {
        generator: h2loadGrpc,
        logging: none,
        processes: [
          { name: "proxy", pid: proxy.pid },
          { name: "backend", pid: backend.pid },
        ],
      };
    }
    const stacks = await startGatewayStacks(sections, options, running);
    if (unary && b) {
      getFeature.push({
        ...b,
        section: "unary",
        name: baselineB,
        target: grpcTarget(proxyPort, "GetFeature"),
        unit: "calls",
        perCall: 1,
        baseline: baselineA,
      });
      for (const stack of stacks) {
        getFeature.push({
          ...stack.common,
          section: "unary",
          name: `GetFeature, ${stack.name}`,
          target: grpcTarget(stack.port, "GetFeature", stack.token),
          unit: "calls",
          perCall: 1,
          baseline: baselineB,
        });
      }
    }
    if (rest) {
      for (const [mode, name, http1] of [
        ["rest-h1", "REST: JSON over HTTP/1.1 (node:http, keep-alive)", true],
        ["rest-h2", "REST: JSON over h2c (node:http2)", false],
      ] as const) {
        const server = await startBaseline(name, [mode]);
        running.push(server);
        getFeature.push(restScenario(server, name, http1));
      }
    }
    if (getFeature.length > 0) await measureGroup(getFeature, options, rows);
    const streamed = stacks.find((stack) => stack.streams);
    if (streams && b && streamed) {
      for (const [method, unit, perCall] of [
        ["ListFeatures", "messages", featuresOnMap],
        ["RecordRoute", "points", routePoints],
      ] as const) {
        const bare = `${method}, ${baselineB}`;
        await measureGroup(
          [
            {
              ...b,
              section: "streams",
              name: bare,
              target: grpcTarget(proxyPort, method),
              unit,
              perCall,
              baseline: null,
            },
            {
              ...streamed.common,
              section: "streams",
              name: `${method}, ${streamed.name}`,
              target: grpcTarget(streamed.port, method, streamed.token),
              unit,
              perCall,
              baseline: bare,
            },
          ],
          options,
          rows,
        );
      }
    }
    await stopAll();
    if (sections.includes("ablation")) await ablationRows(options, rows, running);
    await stopAll();
    if (sections.includes("long-streams")) await longStreamRows(rows);
  } finally {
    await stopAll();
  }
  // Each scenario's rows together, in the order the scenarios were first measured.
  const order = [...new Set(rows.map((row) => row.scenario))];
  return rows.sort(
    (x, y) =>
      order.indexOf(x.scenario) - order.indexOf(y.scenario) || x.concurrency - y.concurrency,
  );
}

function restScenario(server: BaselineProcess, name: string, http1: boolean): Scenario {
  const json = Buffer.from(JSON.stringify({ point }));
  const url = `http://127.0.0.1:${server.port}/v1/features:get`;
  const target = { url, body: json, headers: { "content-type": "application/json" }, http1 };
  return {
    section: "rest",
    name,
    generator: http1 ? "h2load --h1, one connection per caller" : h2loadGrpc,
    logging: "none (bare)",
    processes: [{ name: "server", pid: server.pid }],
    target,
    unit: "calls",
    perCall: 1,
    baseline: baselineA,
    // fetch speaks HTTP/1.1; checkOnce h2c.
    check: async () => {
      const text = http1
        ? await (await fetch(url, { method: "POST", body: json })).text()
        : (await checkOnce(target)).body.toString("utf8");
      const answer = JSON.parse(text) as { feature?: { name?: string } };
      return answer.feature?.name ? undefined : `answered ${text}`;
    },
  };
}

/**
 * Baseline B's proxy taking on our runtime's pieces one at a time (see baseline-server.ts),
 * each measured against plain baseline B in the same run: what each piece costs.
 */
async function ablationRows(
  options: HopOptions,
  rows: HopRow[],
  running: Running[],
): Promise<void> {
  const variants = [
    ["", "ablation: baseline B"],
    ["passthrough", "ablation: B + pass-through interceptors (server and client)"],
    ["als", "ablation: B + AsyncLocalStorage.run per call"],
    ["policy", "ablation: B + peer channel policy (retries, round_robin)"],
    ["policy,downstream", "ablation: B + policy + downstream()"],
    ["policy,downstream,log", "ablation: B + policy + downstream + call logs"],
    ["policy,downstream,log0", "ablation: B + policy + downstream + call logs at sample 0"],
    ["policy,downstream,logAsync", "ablation: B + policy + downstream + call logs, buffered"],
    [
      "policy,downstream,log,telemetry",
      "ablation: B + policy + downstream + call logs + telemetry (default 1% of traces, RPC metrics)",
    ],
  ] as const;
  const backend = await startBaseline("B backend", ["echo"]);
  running.push(backend);
  // Where the telemetry row exports: an OTLP receiver that only acknowledges (its CPU is the
  // bench's, not the proxy's).
  const sink = createHttpServer((request, response) => {
    request.resume();
    request.on("end", () => response.writeHead(200).end());
  });
  await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));
  running.push({
    stop: async () => {
      sink.closeAllConnections();
      await new Promise((resolve) => sink.close(resolve));
    },
  });
  const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;
  const scenarios: Scenario[] = [];
  for (const [add, name] of variants) {
    const proxy = await startBaseline(name, ["proxy", String(backend.port)], {
      BENCH_PROXY_ADD: add,
      OTEL_EXPORTER_OTLP_ENDPOINT: sinkUrl,
      // Metrics as often as traces, so their export is in the measured seconds.
      OTEL_METRIC_EXPORT_INTERVAL: "1000",
    });
    running.push(proxy);
    scenarios.push({
      section: "ablation",
      name,
      generator: h2loadGrpc,
      logging: add.includes("log") ? "LOG_LEVEL=info (the service logger)" : "none",
      processes: [
        { name: "proxy", pid: proxy.pid },
        { name: "backend", pid: backend.pid },
      ],
      target: grpcTarget(proxy.port, "GetFeature"),
      unit: "calls",
      perCall: 1,
      baseline:
        add === ""
          ? null
          : add.includes("telemetry")
            ? "ablation: B + policy + downstream + call logs"
            : "ablation: baseline B",
    });
  }
  await measureGroup(scenarios, options, rows);
}

const longRoutePoints = 250_000;
const longRouteCalls = 3;
const grpcjsClient = "grpc-js client in the bench process, 1 call at a time";

/** One RecordRoute of `points` points, written with backpressure; resolves with its duration. */
function sendLongRoute(
  start: (done: grpc.requestCallback<unknown>) => Writable,
  points: number,
  explicitEnd: boolean,
): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const stream = start((error) => (error ? reject(error) : resolve(performance.now() - started)));
    let index = 0;
    const writeSome = () => {
      while (index < points) {
        const point = { latitude: 400_000_000 + (index % 1000) * 1000, longitude: -750_000_000 };
        index += 1;
        if (!stream.write({ point })) {
          stream.once("drain", writeSome);
          return;
        }
      }
      if (explicitEnd) stream.write({ endOfRoute: true });
      stream.end();
    };
    writeSome();
  });
}

/**
 * Long client streams (issue 19): RecordRoutes of 250,000 points, one at a time, from a grpc-js
 * client (the client's own channel is part of what is measured: grpc-js's retry buffer is on
 * the sending side), through baseline B, through the gateway (auth on) and straight to route.
 * Rate: points per second over the calls; p50/p90/p99: the calls' durations.
 */
async function longStreamRows(rows: HopRow[]): Promise<void> {
  const measureCalls = async (
    name: string,
    baseline: string | null,
    processes: MeasuredProcess[],
    send: (points: number) => Promise<number>,
  ) => {
    await send(longRoutePoints / 10); // warm-up
    const before = await Promise.all(processes.map(({ pid }) => processCpuUs(pid)));
    const durations: number[] = [];
    let errors = 0;
    for (let call = 0; call < longRouteCalls; call += 1) {
      try {
        durations.push(await send(longRoutePoints));
      } catch (error) {
        errors += 1;
        console.error(`  ${name}: ${(error as Error).message}`);
      }
    }
    const after = await Promise.all(processes.map(({ pid }) => processCpuUs(pid)));
    const calls = Math.max(1, durations.length);
    const cpuUsPerCall = Object.fromEntries(
      processes.map(({ name: process_ }, index) => [
        process_,
        Math.round(((after[index] as number) - (before[index] as number)) / calls),
      ]),
    );
    const seconds = durations.reduce((sum, ms) => sum + ms, 0) / 1000;
    const rate = Math.round((durations.length * longRoutePoints) / Math.max(seconds, 1e-3));
    const sorted = [...durations].sort((a, b) => a - b);
    const at = (q: number) =>
      Math.round(1000 * (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0));
    const base = baseline ? rows.find((row) => row.scenario === baseline) : undefined;
    const row: HopRow = {
      section: "long-streams",
      scenario: name,
      generator: grpcjsClient,
      logging: "LOG_LEVEL=info LOG_RPC_SAMPLE_RATE=1",
      concurrency: 1,
      unit: "points",
      rate,
      callsPerSecond: Number((durations.length / Math.max(seconds, 1e-3)).toFixed(3)),
      baseline,
      ratio: base ? Number((rate / Math.max(1, base.rate)).toFixed(2)) : null,
      ratioRuns: [],
      runs: durations.length,
      rateRuns: [],
      group: nextGroup(),
      p50Us: at(0.5),
      p90Us: at(0.9),
      p99Us: at(0.99),
      calls: durations.length,
      errors,
      cpuUsPerCall,
      cpuUsPerCallTotal: Object.values(cpuUsPerCall).reduce((sum, value) => sum + value, 0),
      peakRssMiB: Object.fromEntries(
        await Promise.all(
          processes.map(async ({ name: process_, pid }) => [
            process_,
            await processPeakRssMiB(pid),
          ]),
        ),
      ),
      generatorCpuUsPerCall: 0,
    };
    rows.push(row);
    console.error(
      `  ${name}: ${rate} points/s${row.ratio === null ? "" : ` (× ${row.ratio})`}, ${durations.length} calls of ${(at(0.5) / 1e6).toFixed(1)} s (p50)${errors ? `, ${errors} errors` : ""}`,
    );
  };

  const baselineName = `RecordRoute (${longRoutePoints.toLocaleString("en-US")} points), ${baselineB}`;
  const backend = await startBaseline("backend", ["echo"]);
  const proxy = await startBaseline("proxy", ["proxy", String(backend.port)]).catch(
    async (error: unknown) => {
      await backend.stop();
      throw error;
    },
  );
  const bare = createGatewayClient(`127.0.0.1:${proxy.port}`, grpc.credentials.createInsecure());
  try {
    await measureCalls(
      baselineName,
      null,
      [proxy, backend].map(({ name, pid }) => ({ name, pid })),
      (points) => sendLongRoute((done) => bare.RecordRoute(done), points, false),
    );
  } finally {
    bare.close();
    await proxy.stop();
    await backend.stop();
  }

  const stack = await startStack({
    env: {
      all: { LOG_LEVEL: "info", LOG_FORMAT: "json", LOG_RPC_SAMPLE_RATE: "1" },
      route: { ROUTE_MAX_POINTS: String(longRoutePoints) },
    },
  });
  const gateway = createGatewayClient(
    `127.0.0.1:${stack.gateway.port}`,
    grpc.credentials.createInsecure(),
  );
  const route = createRouteGuideClient(
    `127.0.0.1:${stack.route.port}`,
    grpc.credentials.createInsecure(),
  );
  try {
    const auth = stack.auth;
    if (!auth) throw new Error("the stack has no auth");
    const explicit = (token: string) => {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${token}`);
      metadata.set(routeEndHeader, explicitRouteEnd);
      return metadata;
    };
    const toGateway = explicit(await auth.tokenFor("client", stack.gateway.url));
    const toRoute = explicit(await auth.tokenFor("gateway", stack.route.url));
    const processes = stack.services.map((service) => ({
      name: service.name,
      pid: service.child.pid as number,
    }));
    await measureCalls(
      `RecordRoute (${longRoutePoints.toLocaleString("en-US")} points), gateway, auth on`,
      baselineName,
      processes,
      (points) =>
        sendLongRoute((done) => gateway.RecordRoute(toGateway.clone(), done), points, true),
    );
    await measureCalls(
      `RecordRoute (${longRoutePoints.toLocaleString("en-US")} points), straight to route`,
      baselineName,
      processes.filter(({ name }) => name !== "gateway"),
      (points) => sendLongRoute((done) => route.RecordRoute(toRoute.clone(), done), points, true),
    );
  } finally {
    gateway.close();
    route.close();
    await stack.stop();
  }
}
