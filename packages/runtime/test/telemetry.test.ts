// The telemetry module on its own: sampling decisions, where export goes, and spans made with
// our ids (those the logs and traceparent carry), kinds, parents, links and error statuses, as
// the SDK hands them to an exporter. The whole path through real processes is
// test/telemetry.test.ts.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as api from "@opentelemetry/api";
import {
  AlwaysOnSampler,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import type { EndedCall } from "../src/call-observer.js";
import { createLogger, silentLogger } from "../src/logger.js";
import {
  exportTargetOf,
  GivenIds,
  rateLimitedWarnings,
  samplingRule,
  startTelemetry,
  stopUsingTelemetry,
  Telemetry,
} from "../src/telemetry.js";
import type { TelemetryEnv } from "../src/telemetry-config.js";
import { childSpan, formatTraceparent, type TraceContext } from "../src/trace.js";

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";

function incoming(sampled: boolean): TraceContext {
  return { traceId, spanId: "b7ad6b7169203331", parentSpanId: "00f067aa0ba902b7", sampled };
}

describe("sampling", () => {
  test("parent-based: the caller's decision holds both ways; a new trace takes the ratio", () => {
    const none = samplingRule("parentbased_traceidratio", 0);
    const all = samplingRule("parentbased_traceidratio", 1);
    assert.equal(all(incoming(false), false), false);
    assert.equal(none(incoming(true), false), true);
    const root: TraceContext = { traceId, spanId: "b7ad6b7169203331", sampled: false };
    assert.equal(none(root, false), false);
    assert.equal(all(root, false), true);
    // A batch serving a sampled call is sampled whatever the ratio.
    assert.equal(none(root, true), true);
  });

  test("always_on and always_off ignore the caller; parentbased_always_off samples no new trace", () => {
    assert.equal(samplingRule("always_on", 0)(incoming(false), false), true);
    assert.equal(samplingRule("always_off", 1)(incoming(true), false), false);
    const root: TraceContext = { traceId, spanId: "b7ad6b7169203331", sampled: true };
    assert.equal(samplingRule("parentbased_always_off", 1)(root, true), false);
  });
});

describe("where telemetry goes", () => {
  const env: TelemetryEnv = {
    TELEMETRY_EXPORT: undefined,
    OTEL_SDK_DISABLED: false,
    OTEL_SERVICE_NAME: undefined,
    OTEL_EXPORTER_OTLP_ENDPOINT: undefined,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
    OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
    OTEL_TRACES_SAMPLER_ARG: 0.01,
    OTEL_BSP_SCHEDULE_DELAY: 5000,
    OTEL_METRICS_EXPORTER: "otlp",
    OTEL_METRIC_EXPORT_INTERVAL: 60000,
  };

  test("nowhere unless told: locally only an OTLP endpoint turns it on", () => {
    assert.equal(exportTargetOf(env, "p"), undefined);
    assert.deepEqual(
      exportTargetOf({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }, "p"),
      {
        endpoint: "http://c:4318",
        protocol: "http/protobuf",
      },
    );
  });

  test("google-cloud: Google's OTLP endpoint with the project's credentials; off and OTEL_SDK_DISABLED win", () => {
    assert.deepEqual(exportTargetOf({ ...env, TELEMETRY_EXPORT: "google-cloud" }, "my-project"), {
      endpoint: "https://telemetry.googleapis.com",
      protocol: "http/protobuf",
      google: { project: "my-project" },
    });
    const endpoint = { ...env, OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" };
    assert.equal(exportTargetOf({ ...endpoint, TELEMETRY_EXPORT: "off" }, "p"), undefined);
    assert.equal(exportTargetOf({ ...endpoint, OTEL_SDK_DISABLED: true }, "p"), undefined);
  });
});

describe("spans", () => {
  function withTelemetry() {
    const exporter = new InMemorySpanExporter();
    const ids = new GivenIds();
    const provider = new TracerProvider({
      idGenerator: ids,
      sampler: new AlwaysOnSampler(),
      spanProcessors: [new SimpleSpanProcessor({ exporter })],
    });
    const telemetry = new Telemetry(
      ids,
      provider,
      undefined,
      samplingRule("parentbased_traceidratio", 0),
      silentLogger(),
    );
    // SimpleSpanProcessor exports asynchronously: finished spans are read after a flush.
    const finished = async () => {
      await provider.forceFlush();
      return exporter.getFinishedSpans();
    };
    return { telemetry, finished };
  }

  const ended = (trace: TraceContext, code: grpc.status, method: string): EndedCall => ({
    context: { method, trace, endListeners: [] },
    method,
    requestStream: false,
    responseStream: false,
    code,
    details: code === grpc.status.OK ? undefined : "it broke",
    durationMs: 12.5,
    metadata: undefined,
    peer: "ipv4:127.0.0.1:1",
    received: 1,
    sent: 1,
  });

  test("a server span has the call's own ids, its caller's span as parent, and its caller", async () => {
    const { telemetry, finished } = withTelemetry();
    const trace = telemetry.sample(incoming(true));
    telemetry.serverCallEnded(ended(trace, grpc.status.OK, "/p.S/M"), "someone@example.com");
    const [span] = await finished();
    assert.ok(span);
    assert.equal(span.spanContext().traceId, traceId);
    assert.equal(span.spanContext().spanId, trace.spanId);
    assert.equal(span.parentSpanContext?.spanId, "00f067aa0ba902b7");
    assert.equal(span.kind, api.SpanKind.SERVER);
    assert.equal(span.name, "p.S/M");
    assert.equal(span.attributes["enduser.id"], "someone@example.com");
    assert.equal(span.status.code, api.SpanStatusCode.UNSET);
    // Its duration is the call's.
    const [seconds, nanos] = span.duration;
    assert.ok(Math.abs(seconds * 1000 + nanos / 1e6 - 12.5) < 0.01);
  });

  test("on a server, INVALID_ARGUMENT is the caller's fault, INTERNAL an error with its details", async () => {
    const { telemetry, finished } = withTelemetry();
    telemetry.serverCallEnded(ended(incoming(true), grpc.status.INVALID_ARGUMENT, "/p.S/M"), "");
    telemetry.serverCallEnded(ended(incoming(true), grpc.status.INTERNAL, "/p.S/M"), "");
    assert.deepEqual(
      (await finished()).map((span) => [span.attributes["rpc.grpc.status_code"], span.status]),
      [
        [grpc.status.INVALID_ARGUMENT, { code: api.SpanStatusCode.UNSET }],
        [grpc.status.INTERNAL, { code: api.SpanStatusCode.ERROR, message: "it broke" }],
      ],
    );
  });

  test("an unsampled call never reaches the SDK", async () => {
    const { telemetry, finished } = withTelemetry();
    const trace = telemetry.sample(incoming(false));
    telemetry.serverCallEnded(ended(trace, grpc.status.INTERNAL, "/p.S/M"), "");
    assert.equal(telemetry.outgoingCall(childSpan(trace), "/p.S/M"), undefined);
    assert.deepEqual(await finished(), []);
  });

  test("a client span: its own ids under the call's span, an error for any code but OK", async () => {
    const { telemetry, finished } = withTelemetry();
    const parent = telemetry.sample(incoming(true));
    const trace = telemetry.sample(childSpan(parent));
    const recordEnd = telemetry.outgoingCall(trace, "/p.S/M");
    assert.ok(recordEnd, "a sampled call is recorded");
    recordEnd({
      code: grpc.status.NOT_FOUND,
      details: "no such thing",
      metadata: new grpc.Metadata(),
    });
    const [span] = await finished();
    assert.ok(span);
    assert.equal(span.kind, api.SpanKind.CLIENT);
    assert.equal(span.spanContext().spanId, trace.spanId);
    assert.equal(span.parentSpanContext?.spanId, parent.spanId);
    assert.deepEqual(span.status, { code: api.SpanStatusCode.ERROR, message: "no such thing" });
  });

  test("a batch made for calls links to the sampled ones and is sampled for them", async () => {
    const { telemetry, finished } = withTelemetry();
    const sampledCall = incoming(true);
    const unsampledCall = { ...incoming(false), traceId: "5bf92f3577b34da6a3ce929d0e0e4736" };
    telemetry.withLinkedCalls(
      [formatTraceparent(sampledCall), formatTraceparent(unsampledCall), undefined],
      () => {
        const trace = telemetry.sample(childSpan(undefined));
        assert.equal(trace.sampled, true);
        telemetry.outgoingCall(
          trace,
          "/p.S/Batch",
        )?.({
          code: 0,
          details: "",
          metadata: new grpc.Metadata(),
        });
      },
    );
    const [span] = await finished();
    assert.ok(span);
    assert.equal(span.parentSpanContext, undefined);
    assert.deepEqual(
      span.links.map((link) => [link.context.traceId, link.context.spanId]),
      [[traceId, sampledCall.spanId]],
    );
    // Outside withLinkedCalls, a new trace is the ratio's again (0 here).
    assert.equal(telemetry.sample(childSpan(undefined)).sampled, false);
  });
});

describe("export failures", () => {
  test("an export refused (a token without the role) is logged as a warning, with its reason", async () => {
    // What the Telemetry API answers a caller without the role.
    const refusing = createServer((request, response) => {
      request.resume();
      request.on("end", () => response.writeHead(403).end("permission denied"));
    });
    await new Promise<void>((resolve) => refusing.listen(0, "127.0.0.1", resolve));
    const { port } = refusing.address() as AddressInfo;
    const lines: string[] = [];
    const logger = createLogger({
      service: "test",
      level: "info",
      destination: { write: (line: string) => void lines.push(line) },
    });
    const telemetry = await startTelemetry(
      {
        TELEMETRY_EXPORT: undefined,
        OTEL_SDK_DISABLED: false,
        OTEL_SERVICE_NAME: undefined,
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
        OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG: 0,
        OTEL_BSP_SCHEDULE_DELAY: 10,
        OTEL_METRICS_EXPORTER: "none",
        OTEL_METRIC_EXPORT_INTERVAL: 60000,
      },
      { serviceName: "test", logger },
    );
    assert.ok(telemetry);
    try {
      const trace = telemetry.sample(incoming(true));
      telemetry.serverCallEnded(
        {
          context: { method: "/p.S/M", trace, endListeners: [] },
          method: "/p.S/M",
          requestStream: false,
          responseStream: false,
          code: 0,
          details: undefined,
          durationMs: 1,
          metadata: undefined,
          peer: "",
          received: 1,
          sent: 1,
        },
        undefined,
      );
      await telemetry.shutdown(5000);
    } finally {
      stopUsingTelemetry(telemetry);
      refusing.close();
    }
    const warnings = lines
      .map((line) => JSON.parse(line) as { severity: string; message: string; reasons?: string[] })
      .filter((entry) => entry.severity === "WARNING" && entry.message.startsWith("telemetry:"));
    assert.ok(warnings.length > 0, lines.join(""));
    assert.match(JSON.stringify(warnings), /403|Forbidden/);
    // One short line: not the serialized error's stack, nor the endpoint's answer.
    for (const { message } of warnings) {
      assert.doesNotMatch(message, /stack|\n|permission denied|\s{4}at /, message);
      assert.ok(message.length <= 320, message);
    }
  });

  test("the SDK's warnings: one line per kind of failure a minute, saying how many were left out", () => {
    const lines: { details: object; message: string }[] = [];
    let now = 0;
    const warn = rateLimitedWarnings(
      { warn: (details: object, message: string) => void lines.push({ details, message }) },
      60_000,
      () => now,
    );
    const refused = (attempt: number) =>
      `{"stack":"OTLPExporterError: Forbidden\\n    at attempt ${attempt}","message":"Forbidden","data":"{\\"error\\":{\\"code\\":403}}"}`;
    warn("Export failed", refused(1));
    warn("Export failed", refused(2));
    warn("Export failed", refused(3));
    warn("Request timed out after 10000 ms");
    assert.deepEqual(
      lines.map((line) => line.message),
      [
        "telemetry: Export failed OTLPExporterError: Forbidden",
        "telemetry: Request timed out after 10000 ms",
      ],
    );
    now = 60_000;
    warn("Export failed", refused(4));
    assert.deepEqual(lines.at(-1), {
      details: { leftOut: 2 },
      message: "telemetry: Export failed OTLPExporterError: Forbidden",
    });
  });
});
