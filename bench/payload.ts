// gRPC against JSON by payload size (issue 17; pnpm bench payload): one unary call whose answer
// is a page of N of route's features, N chosen so the page's protobuf encoding is near each
// size step (100 B to 1 MiB), served with the same data by bare grpc-js, by JSON over HTTP/1.1
// (node:http, keep-alive) and by JSON over h2c (node:http2); see payload-server.ts.
// Every row: one answer checked by hand (status, byte size, feature count), a warm-up run,
// then h2load at one concurrency for the measured run; server CPU from /proc/<pid>/stat.
// Steps go one after another and the three protocols take turns within each step, so that
// a machine that gets busier over the run does not favour one protocol.

import {
  catalogueSize,
  decodePage,
  encodePage,
  encodeRequest,
  type Feature,
  grpcPath,
  jsonPath,
  loadCatalogue,
  pageSizeFor,
} from "./support/feature-page.js";
import { checkOnce, grpcBody, type H2loadTarget, h2load } from "./support/h2load.js";
import { processCpuUs, processPeakRssMiB } from "./support/load.js";
import { type ServerProcess, startServerProcess } from "./support/server-process.js";

export const protocols = ["grpc", "json-h1", "json-h2"] as const;
export type Protocol = (typeof protocols)[number];

export const protocolNames: Record<Protocol, string> = {
  grpc: "gRPC (bare grpc-js, h2c)",
  "json-h1": "JSON over HTTP/1.1 (node:http)",
  "json-h2": "JSON over h2c (node:http2)",
};

const generators: Record<Protocol, string> = {
  grpc: "h2load, h2c, 1 connection",
  "json-h1": "h2load --h1, one connection per caller",
  "json-h2": "h2load, h2c, 1 connection",
};

export interface PayloadStep {
  label: string;
  targetBytes: number;
  pageSize: number;
  /** The page's encodings: the protobuf message (without gRPC's 5-byte prefix), the JSON. */
  protobufBytes: number;
  jsonBytes: number;
}

export interface PayloadRow extends PayloadStep {
  protocol: Protocol;
  generator: string;
  concurrency: number;
  callsPerSecond: number;
  /** Page data per second, counted as its protobuf size for every protocol (the same data). */
  payloadMBPerSecond: number;
  /** The bytes each protocol's answers carried per second (JSON's are larger). */
  bodyMBPerSecond: number;
  cpuUsPerCall: number;
  /** Server CPU per byte of page data (its protobuf size): comparable across protocols. */
  cpuNsPerByte: number;
  p50Us: number;
  p99Us: number;
  calls: number;
  errors: number;
  peakRssMiB: number;
  generatorCpuUsPerCall: number;
}

export interface PayloadOptions {
  seconds: number;
  warmupSeconds: number;
  /** Before each server's first row. */
  firstWarmupSeconds: number;
  concurrency: number;
  targetBytes: number[];
}

export const defaultTargets = [100, 1024, 10 * 1024, 100 * 1024, 1024 * 1024];

export function sizeLabel(bytes: number): string {
  if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) === 0) return `${bytes / 1024 / 1024} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} B`;
}

/** Each step's page size, found by encoding pages as the gRPC server will. */
export function payloadSteps(catalogue: Feature[], targets: number[]): PayloadStep[] {
  const page = (count: number) => catalogue.slice(0, count);
  return targets.map((targetBytes) => {
    const pageSize = pageSizeFor(
      targetBytes,
      (count) => encodePage(page(count)).length,
      catalogue.length,
    );
    return {
      label: sizeLabel(targetBytes),
      targetBytes,
      pageSize,
      protobufBytes: encodePage(page(pageSize)).length,
      jsonBytes: Buffer.byteLength(JSON.stringify({ features: page(pageSize) })),
    };
  });
}

function target(protocol: Protocol, port: number, step: PayloadStep): H2loadTarget {
  if (protocol === "grpc") {
    return {
      url: `http://127.0.0.1:${port}${grpcPath}`,
      body: grpcBody([encodeRequest(step.pageSize)]),
      headers: { "content-type": "application/grpc", te: "trailers" },
    };
  }
  return {
    url: `http://127.0.0.1:${port}${jsonPath}`,
    body: Buffer.from(JSON.stringify({ pageSize: step.pageSize })),
    headers: { "content-type": "application/json" },
    http1: protocol === "json-h1",
  };
}

/** One call by hand: undefined when the answer is the page expected, else what is wrong. */
async function check(
  protocol: Protocol,
  call: H2loadTarget,
  step: PayloadStep,
  firstName: string,
): Promise<string | undefined> {
  const grpc = protocol === "grpc";
  let httpStatus: number;
  let grpcStatus = "";
  let body: Buffer;
  if (call.http1) {
    // fetch speaks HTTP/1.1; checkOnce h2c.
    const response = await fetch(call.url, {
      method: "POST",
      body: call.body,
      headers: call.headers,
    });
    httpStatus = response.status;
    body = Buffer.from(await response.arrayBuffer());
  } else {
    const answer = await checkOnce(call);
    httpStatus = answer.httpStatus;
    grpcStatus = answer.grpcStatus;
    // A gRPC answer: one message after its 5-byte prefix.
    body = !grpc ? answer.body : answer.messages === 1 ? answer.body.subarray(5) : Buffer.alloc(0);
  }
  let features: Feature[] = [];
  try {
    features = grpc
      ? decodePage(body).features
      : (JSON.parse(body.toString("utf8")) as { features: Feature[] }).features;
  } catch {}
  const bytes = grpc ? step.protobufBytes : step.jsonBytes;
  if (
    httpStatus === 200 &&
    (!grpc || grpcStatus.startsWith("0")) &&
    body.length === bytes &&
    features.length === step.pageSize &&
    features[0]?.name === firstName
  ) {
    return undefined;
  }
  const status = grpc ? `HTTP ${httpStatus}, grpc-status ${grpcStatus}` : `HTTP ${httpStatus}`;
  return `answered ${status}, ${body.length} bytes, ${features.length} features (wanted 200${grpc ? ", 0" : ""}, ${bytes} bytes, ${step.pageSize} features)`;
}

export async function benchPayload(options: PayloadOptions): Promise<PayloadRow[]> {
  const catalogue = loadCatalogue();
  const steps = payloadSteps(catalogue, options.targetBytes);
  const firstName = catalogue[0]?.name ?? "";
  for (const step of steps) {
    console.error(
      `  ${step.label}: ${step.pageSize} features, ${step.protobufBytes} B as protobuf, ${step.jsonBytes} B as JSON`,
    );
  }
  if (steps.some((step) => step.pageSize >= catalogueSize)) {
    throw new Error(`a step needs more than the catalogue's ${catalogueSize} features`);
  }
  const servers = new Map<Protocol, ServerProcess>();
  const rows: PayloadRow[] = [];
  try {
    for (const protocol of protocols) {
      servers.set(
        protocol,
        await startServerProcess(new URL("./payload-server.ts", import.meta.url), protocol, [
          protocol,
        ]),
      );
    }
    const warmedUp = new Set<Protocol>();
    for (const step of steps) {
      for (const protocol of protocols) {
        const server = servers.get(protocol) as ServerProcess;
        const call = target(protocol, server.port, step);
        const problem = await check(protocol, call, step, firstName);
        if (problem) throw new Error(`${protocolNames[protocol]}, ${step.label}: ${problem}`);
        // A fresh process runs slowly for its first seconds (JIT): a longer warm-up first.
        const warmup = warmedUp.has(protocol) ? options.warmupSeconds : options.firstWarmupSeconds;
        warmedUp.add(protocol);
        await h2load(call, options.concurrency, warmup);
        const before = await processCpuUs(server.pid);
        const result = await h2load(call, options.concurrency, options.seconds);
        const after = await processCpuUs(server.pid);
        const calls = Math.max(1, result.succeeded);
        const cpuUsPerCall = (after - before) / calls;
        const bodyBytes = protocol === "grpc" ? step.protobufBytes + 5 : step.jsonBytes;
        const row: PayloadRow = {
          ...step,
          protocol,
          generator: generators[protocol],
          concurrency: options.concurrency,
          callsPerSecond: result.requestsPerSecond,
          payloadMBPerSecond: round((result.requestsPerSecond * step.protobufBytes) / 1e6, 2),
          bodyMBPerSecond: round((result.requestsPerSecond * bodyBytes) / 1e6, 2),
          cpuUsPerCall: round(cpuUsPerCall, 1),
          cpuNsPerByte: round((cpuUsPerCall * 1000) / step.protobufBytes, 2),
          p50Us: result.p50Us,
          p99Us: result.p99Us,
          calls: result.succeeded,
          errors: result.failed,
          peakRssMiB: await processPeakRssMiB(server.pid),
          generatorCpuUsPerCall: Math.round(result.generatorCpuUs / calls),
        };
        rows.push(row);
        console.error(
          `  ${step.label}, ${protocolNames[protocol]}: ${row.callsPerSecond} calls/s, ${row.payloadMBPerSecond} MB/s, CPU ${row.cpuUsPerCall} µs/call (${row.cpuNsPerByte} ns/B), p99 ${(row.p99Us / 1000).toFixed(2)} ms${row.errors ? `, ${row.errors} errors` : ""}`,
        );
      }
    }
  } finally {
    for (const server of servers.values()) await server.stop();
  }
  return rows;
}

const round = (value: number, digits: number) => Number(value.toFixed(digits));
