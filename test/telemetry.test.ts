// Issue 18: spans and RPC metrics with OpenTelemetry, exported over OTLP. The three services run
// as processes (the local stack, with auth) and export to an OTLP receiver in this process; the
// spans of one call must form one tree across the services, with the ids the log lines carry,
// and a call whose caller did not sample it must export nothing.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Stack } from "@cloudrun-grpc/local-stack";
import { startService, startStack } from "@cloudrun-grpc/local-stack";
import { createRouteGuideClient, type GatewayServiceClient } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { deadline, failure, stackGatewayClient, unary } from "./support/grpc.js";
import { OtlpReceiver, type ReceivedSpan, spanKind } from "./support/otlp-receiver.js";
import { describeLocalOnly } from "./support/target.js";

const point = { latitude: 407_838_351, longitude: -746_143_763 };
const callerSpan = "00f067aa0ba902b7";

let traceCounter = 0;
/** A fresh trace id and the metadata of a call made in it, sampled or not by its caller. */
function newTrace(sampled: boolean): { id: string; metadata: grpc.Metadata } {
  traceCounter += 1;
  const id = `${"7e1e".padEnd(8, "0")}${process.pid.toString(16).padStart(8, "0")}${String(traceCounter).padStart(16, "0")}`;
  const metadata = new grpc.Metadata();
  metadata.set("traceparent", `00-${id}-${callerSpan}-${sampled ? "01" : "00"}`);
  return { id, metadata };
}

/** Retries `check` until it passes (spans arrive in batches after the calls end). */
async function untilPasses<T>(check: () => T, timeoutMs = 15_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return check();
    } catch (error) {
      if (Date.now() >= until) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

function only(spans: ReceivedSpan[], where: Partial<ReceivedSpan>): ReceivedSpan {
  const found = spans.filter((span) =>
    Object.entries(where).every(([key, value]) => span[key as keyof ReceivedSpan] === value),
  );
  assert.equal(
    found.length,
    1,
    `one span with ${JSON.stringify(where)} among ${JSON.stringify(spans, null, 1)}`,
  );
  return found[0] as ReceivedSpan;
}

describeLocalOnly("traces and RPC metrics over OTLP, across gateway, route and stats", () => {
  const lines: { service: string; line: string }[] = [];
  let receiver: OtlpReceiver;
  let stack: Stack;
  let client: GatewayServiceClient;

  /** The parsed JSON log lines of `service` in `traceId`. */
  const logLines = (service: string, traceId: string) =>
    lines
      .filter((out) => out.service === service && out.line.startsWith("{"))
      .map((out) => JSON.parse(out.line) as Record<string, unknown>)
      .filter((entry) => String(entry["logging.googleapis.com/trace"]).endsWith(traceId));

  before(async () => {
    receiver = await OtlpReceiver.start();
    stack = await startStack({
      onLine: (service, line, stream) => {
        if (stream === "stdout") lines.push({ service, line });
      },
      env: {
        all: {
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          // New traces are never sampled here: only the callers' decisions count, so a test
          // knows exactly which calls export spans.
          OTEL_TRACES_SAMPLER_ARG: "0",
          OTEL_BSP_SCHEDULE_DELAY: "100",
          OTEL_METRIC_EXPORT_INTERVAL: "300",
          // As Terraform sets it (Cloud Run has no variable with the region).
          OTEL_RESOURCE_ATTRIBUTES: "cloud.region=local-test",
        },
      },
    });
    client = await stackGatewayClient(stack);
  });
  after(async () => {
    client?.close();
    await stack?.stop();
    await receiver?.close();
  });

  test("one sampled GetFeature is one tree gateway → route, and route's report to stats links to it", async () => {
    const trace = newTrace(true);
    await unary((done) => client.GetFeature({ point }, trace.metadata, deadline(), done));

    const [gatewayServer, gatewayClient, routeServer] = await untilPasses(() => {
      const spans = receiver.trace(trace.id);
      assert.equal(spans.length, 3, JSON.stringify(spans, null, 1));
      return [
        only(spans, { service: "gateway", kind: spanKind.server }),
        only(spans, { service: "gateway", kind: spanKind.client }),
        only(spans, { service: "route", kind: spanKind.server }),
      ] as const;
    });
    // The tree: the caller's span → gateway's server span → its call to route → route's.
    assert.equal(gatewayServer.parentSpanId, callerSpan);
    assert.equal(gatewayClient.parentSpanId, gatewayServer.spanId);
    assert.equal(routeServer.parentSpanId, gatewayClient.spanId);
    assert.equal(gatewayServer.name, "gateway.v1.GatewayService/GetFeature");
    assert.equal(gatewayClient.name, "routeguide.v1.RouteGuideService/GetFeature");
    assert.equal(routeServer.name, "routeguide.v1.RouteGuideService/GetFeature");
    // OpenTelemetry's RPC conventions, and the verified caller on each server span.
    assert.deepEqual(
      {
        system: routeServer.attributes["rpc.system"],
        service: routeServer.attributes["rpc.service"],
        method: routeServer.attributes["rpc.method"],
        code: routeServer.attributes["rpc.grpc.status_code"],
      },
      { system: "grpc", service: "routeguide.v1.RouteGuideService", method: "GetFeature", code: 0 },
    );
    assert.match(String(gatewayServer.attributes["enduser.id"]), /^local-client@/);
    assert.match(String(routeServer.attributes["enduser.id"]), /^gateway-svc@/);
    for (const span of [gatewayServer, gatewayClient, routeServer]) {
      assert.equal(span.status.code, 0, `${span.service} ${span.name}: status unset (OK)`);
    }

    // Each span is the one its service's log lines name, and the lines say it is sampled.
    const gatewayLine = logLines("gateway", trace.id).find(
      (entry) => (entry.rpc as { side?: string })?.side === "server",
    );
    const routeLine = logLines("route", trace.id).find(
      (entry) => (entry.rpc as { side?: string })?.side === "server",
    );
    assert.equal(gatewayLine?.["logging.googleapis.com/spanId"], gatewayServer.spanId);
    assert.equal(gatewayLine?.["logging.googleapis.com/trace_sampled"], true);
    assert.equal(routeLine?.["logging.googleapis.com/spanId"], routeServer.spanId);

    // Route's batch to stats: a trace of its own whose client span links to route's span of the
    // call, sampled because that call is; stats' server span is its child.
    const [batch, statsServer] = await untilPasses(() => {
      const batch = only(
        receiver.spans.filter((span) =>
          span.links.some((link) => link.spanId === routeServer.spanId),
        ),
        { service: "route", kind: spanKind.client },
      );
      const statsServer = only(receiver.trace(batch.traceId), {
        service: "stats",
        kind: spanKind.server,
      });
      return [batch, statsServer] as const;
    });
    assert.equal(batch.name, "stats.v1.StatsService/RecordEvents");
    assert.notEqual(batch.traceId, trace.id);
    assert.equal(batch.parentSpanId, undefined, "the batch starts a trace");
    assert.deepEqual(
      batch.links.filter((link) => link.spanId === routeServer.spanId),
      [{ traceId: trace.id, spanId: routeServer.spanId }],
    );
    assert.equal(statsServer.parentSpanId, batch.spanId);
    assert.equal(statsServer.name, "stats.v1.StatsService/RecordEvents");
    // Nothing more came for the call meanwhile (the batch went out after its spans).
    assert.equal(receiver.trace(trace.id).length, 3);

    // Each process is an instance of its own on the resource (Cloud Monitoring's series are
    // per service.instance.id), in the region OTEL_RESOURCE_ATTRIBUTES names.
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    for (const span of [gatewayServer, routeServer, statsServer]) {
      assert.match(String(span.resource["service.instance.id"]), uuid, span.service);
      assert.equal(span.resource["cloud.region"], "local-test", span.service);
    }
    assert.equal(
      new Set(
        [gatewayServer, routeServer, statsServer].map(
          (span) => span.resource["service.instance.id"],
        ),
      ).size,
      3,
    );
  });

  test("a call its caller did not sample exports no span, on any hop", async () => {
    const unsampled = newTrace(false);
    await unary((done) => client.GetFeature({ point }, unsampled.metadata, deadline(), done));
    // A sampled call made after it: once its spans (and its batch's) are in, the first call's
    // would be too, had any been exported (each service sends its spans in order).
    const sampled = newTrace(true);
    await unary((done) => client.GetFeature({ point }, sampled.metadata, deadline(), done));
    const routeServer = await untilPasses(() =>
      only(receiver.trace(sampled.id), { service: "route", kind: spanKind.server }),
    );
    await untilPasses(() =>
      assert.ok(
        receiver.spans.some((span) =>
          span.links.some((link) => link.spanId === routeServer.spanId),
        ),
      ),
    );
    assert.deepEqual(receiver.trace(unsampled.id), []);
    assert.ok(
      !receiver.spans.some((span) => span.links.some((link) => link.traceId === unsampled.id)),
      "no batch links to the unsampled call",
    );
    // Its log lines carry its trace, not marked sampled.
    const line = logLines("gateway", unsampled.id)[0];
    assert.ok(line, "the unsampled call is logged");
    assert.equal(line["logging.googleapis.com/trace_sampled"], undefined);
  });

  test("an error is recorded on the span: status ERROR with the details, and the gRPC code", async () => {
    const trace = newTrace(true);
    // A method the gateway does not serve: UNIMPLEMENTED, an error on a server span. Its path
    // is the caller's invention, so the span is named _OTHER (no unbounded names or labels).
    const error = await failure(
      unary((done) =>
        client.makeUnaryRequest(
          "/gateway.v1.GatewayService/NoSuchMethod",
          (value: Buffer) => value,
          (value: Buffer) => value,
          Buffer.alloc(0),
          trace.metadata,
          deadline(),
          done,
        ),
      ),
    );
    assert.equal(error.code, grpc.status.UNIMPLEMENTED);
    const span = await untilPasses(() =>
      only(receiver.trace(trace.id), { service: "gateway", kind: spanKind.server }),
    );
    assert.equal(span.name, "_OTHER");
    assert.equal(span.attributes["rpc.method"], "_OTHER");
    assert.equal(span.attributes["rpc.grpc.status_code"], grpc.status.UNIMPLEMENTED);
    assert.equal(span.status.code, 2, "status ERROR");
    assert.match(String(span.status.message), /does not implement/);
  });

  test("RPC durations on both sides and route's reporter queue reach the metrics receiver", async () => {
    await unary((done) => client.GetFeature({ point }, newTrace(false).metadata, deadline(), done));
    await untilPasses(() => {
      const named = (service: string, name: string) =>
        receiver.metrics.filter((metric) => metric.service === service && metric.name === name);
      const served = named("gateway", "rpc.server.duration").flatMap((metric) => metric.points);
      assert.ok(
        served.some(
          (point) =>
            point.attributes["rpc.method"] === "GetFeature" &&
            point.attributes["rpc.service"] === "gateway.v1.GatewayService" &&
            point.attributes["rpc.grpc.status_code"] === 0 &&
            point.value >= 1,
        ),
        `gateway's rpc.server.duration: ${JSON.stringify(served)}`,
      );
      const called = named("gateway", "rpc.client.duration").flatMap((metric) => metric.points);
      assert.ok(
        called.some(
          (point) =>
            point.attributes["rpc.service"] === "routeguide.v1.RouteGuideService" &&
            point.value >= 1,
        ),
        `gateway's rpc.client.duration: ${JSON.stringify(called)}`,
      );
      const histogram = named("route", "rpc.server.duration")[0];
      assert.equal(histogram?.kind, "histogram");
      assert.equal(histogram?.unit, "ms");
      const queue = named("route", "stats_reporter.queued_calls")[0];
      assert.equal(queue?.kind, "gauge");
      assert.ok(queue && queue.points.length === 1 && queue.points[0]?.value !== undefined);
    });
    assert.deepEqual(receiver.refused, []);
  });
});

describeLocalOnly("telemetry at shutdown", () => {
  test("spans and metrics still held when SIGTERM comes are sent before the process exits", {
    timeout: 60_000,
  }, async () => {
    const receiver = await OtlpReceiver.start();
    const route = await startService({
      name: "route",
      env: {
        // stats never answers: route's last report waits out its flush, as in a real outage.
        STATS_URL: "http://127.0.0.1:1",
        SHUTDOWN_GRACE_MS: "300",
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        // Nothing would go out for ten minutes but for the shutdown.
        OTEL_BSP_SCHEDULE_DELAY: "600000",
        OTEL_METRIC_EXPORT_INTERVAL: "600000",
      },
    });
    const client = createRouteGuideClient(
      new URL(route.url).host,
      grpc.credentials.createInsecure(),
    );
    try {
      const trace = newTrace(true);
      await unary((done) => client.GetFeature({ point }, trace.metadata, deadline(), done));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(receiver.trace(trace.id), [], "nothing sent before the stop");
      assert.equal(await route.stop(), 0);
      const span = only(receiver.trace(trace.id), { service: "route", kind: spanKind.server });
      assert.equal(span.parentSpanId, callerSpan);
      assert.ok(
        receiver.metrics.some(
          (metric) => metric.service === "route" && metric.name === "rpc.server.duration",
        ),
        "the RPC metrics too",
      );
    } finally {
      client.close();
      await route.stop();
      await receiver.close();
    }
  });
});
