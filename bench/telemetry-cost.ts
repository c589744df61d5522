// The CPU telemetry adds to one service hop (one call handled, one peer call made for it),
// measured in one process through the runtime's own hooks, exactly as the call observer and
// the peer interceptor (outgoing-calls.ts) call them: the ablation's proxy rows vary by ±100 µs on a shared machine, far more
// than this. Exports go to an OTLP/HTTP receiver in this process (its CPU is counted too, so
// the figures are upper bounds).
//   pnpm exec node --import tsx bench/telemetry-cost.ts      (after pnpm turbo build)
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { EndedCall } from "@cloudrun-grpc/runtime";
import {
  childSpan,
  envSchema,
  observeOutgoingCall,
  parseConfig,
  recordServerCalls,
  sampleTrace,
  silentLogger,
  startTelemetry,
  stopUsingTelemetry,
  telemetryEnv,
  traceForIncomingCall,
} from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";

const calls = Number(process.env.BENCH_CALLS ?? 200_000);
const method = "/gateway.v1.GatewayService/GetFeature";
const record = recordServerCalls({ served: new Set([method]) });
const trailers = new grpc.Metadata();

/** One hop: a call handled (no traceparent: a new trace) and its call to a peer. */
function oneHop(): void {
  const trace = sampleTrace(traceForIncomingCall({}));
  const peer = sampleTrace(childSpan(trace));
  const recordEnd = observeOutgoingCall(peer, "/routeguide.v1.RouteGuideService/GetFeature");
  recordEnd?.({ code: 0, details: "", metadata: trailers });
  const ended: EndedCall = {
    context: { method, trace, endListeners: [] },
    method,
    requestStream: false,
    responseStream: false,
    code: 0,
    details: undefined,
    durationMs: 1.2,
    metadata: undefined,
    peer: "ipv4:127.0.0.1:1",
    received: 1,
    sent: 1,
  };
  record(ended);
}

/**
 * CPU µs per hop over `calls` hops, the event loop turning every 50 (exports run there), then
 * `flush` (what is still queued is sent, and counted).
 */
async function measure(flush?: () => Promise<void>): Promise<number> {
  for (let i = 0; i < 20_000; i += 1) oneHop();
  const before = process.cpuUsage();
  for (let i = 0; i < calls; i += 1) {
    oneHop();
    if (i % 50 === 49) await new Promise((resolve) => setImmediate(resolve));
  }
  await flush?.();
  const { user, system } = process.cpuUsage(before);
  return (user + system) / calls;
}

const sink = createServer((request, response) => {
  request.resume();
  request.on("end", () => response.writeHead(200).end());
});
await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));
const endpoint = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;

const rows: [string, number][] = [["off (no exporter)", await measure()]];
for (const ratio of ["0.01", "1"]) {
  const telemetry = await startTelemetry(
    parseConfig(envSchema(telemetryEnv), {
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_TRACES_SAMPLER_ARG: ratio,
      OTEL_METRIC_EXPORT_INTERVAL: "1000",
      OTEL_BSP_SCHEDULE_DELAY: "200",
    }),
    { serviceName: "bench", logger: silentLogger() },
  );
  if (!telemetry) throw new Error("telemetry did not start");
  const perHop = await measure(() => telemetry.shutdown(30_000));
  rows.push([`on, ${Number(ratio) * 100}% of traces sampled, RPC metrics`, perHop]);
  stopUsingTelemetry(telemetry);
}
sink.close();
for (const [name, us] of rows) console.log(`${name}: ${us.toFixed(1)} µs CPU per hop`);
