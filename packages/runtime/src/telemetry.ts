// Traces and RPC metrics with OpenTelemetry (issue 18): a server span per call handled, a
// client span per peer call, one tree across the services; RPC duration histograms; exported
// over OTLP (telemetry-export.ts). One instance per process, started by runService before the
// service is built; the call observer, the peer interceptors and route's reporter reach it
// through the small hooks at the bottom of this file, which cost nothing while it is off.
//
// How it fits what was there:
//   - Our ids stay the ids. trace.ts gives every call its span id when it starts: the logs
//     carry it (logging.googleapis.com/spanId) and traceparent sends it downstream, sampled or
//     not. The exported span must be that one, so the SDK is handed our ids through its one
//     extension point for ids, an IdGenerator (TracerProviderOptions.idGenerator), which the
//     Tracer asks synchronously inside startSpan: generateSpanId(), then generateTraceId() when
//     there is no parent (@opentelemetry/sdk-trace 3.1 Tracer.startSpan). SpanOptions has no
//     way to name ids; taking the SDK's ids into our context instead would need an SDK span at
//     the start of every call, sampled or not.
//   - Sampling is decided where the trace is: when a call's context is made (the call
//     observer), before anything is sent downstream, so the flag in traceparent and in the
//     log lines is the decision. A call not sampled never reaches the SDK: no span object, no
//     sampler call. The SDK's own sampler therefore records whatever it is given (AlwaysOn).
//   - A span is made when its call ends, with the call's start time: nothing of the SDK lives
//     during a call, and a call's children only need its span id, which is ours.
//   - Not @opentelemetry/instrumentation-grpc: it patches grpc-js's module (require hooks) to
//     wrap every call, and would mint ids of its own; the call observer and the peer
//     interceptors already see every call's start and end.
import { performance } from "node:perf_hooks";
import type * as grpc from "@grpc/grpc-js";
import * as api from "@opentelemetry/api";
import type { MeterProvider } from "@opentelemetry/sdk-metrics";
import type { IdGenerator, TracerProvider } from "@opentelemetry/sdk-trace";
import type { EndedCall } from "./call-observer.js";
import type { Logger } from "./logger.js";
import type { TelemetryEnv, TraceSampler } from "./telemetry-config.js";
import { createExporters, type ExportTarget, googleTelemetryEndpoint } from "./telemetry-export.js";
import { parseTraceparent, type TraceContext, traceInSample } from "./trace.js";

// OpenTelemetry's RPC semantic conventions, the names the issue asks for
// (https://opentelemetry.io/docs/specs/semconv/rpc/grpc/ and rpc-metrics, v1.2x): written out
// here rather than imported from @opentelemetry/semantic-conventions/incubating, a module of
// several thousand names loaded at start-up for these seven.
const rpcSystem = "rpc.system";
const rpcService = "rpc.service";
const rpcMethod = "rpc.method";
const rpcGrpcStatusCode = "rpc.grpc.status_code";
const enduserId = "enduser.id";
/** RPC durations in milliseconds, one histogram per side (rpc-metrics). */
export const serverDurationMetric = "rpc.server.duration";
export const clientDurationMetric = "rpc.client.duration";
/** What rpc.method and rpc.service say of a method this server does not serve (semconv). */
const otherMethod = "_OTHER";

/**
 * The codes that make a server span an error (semconv, gRPC: "the span status MUST be set to
 * Error" for these on the server side; a client's span is an error for any code but OK).
 */
const serverErrorCodes = new Set([2, 4, 12, 13, 14, 15]); // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS

/** The SDK's ids for the next span: the ones our trace context already has. */
export class GivenIds implements IdGenerator {
  traceId = "";
  spanId = "";
  generateTraceId(): string {
    return this.traceId;
  }
  generateSpanId(): string {
    return this.spanId;
  }
}

/** Epoch milliseconds with performance.now()'s precision (a span's start and end). */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

interface MethodNames {
  service: string;
  method: string;
  /** The span name: package.Service/Method (semconv). */
  spanName: string;
}

const namesByPath = new Map<string, MethodNames>();

/** `/pkg.Service/Method` → its parts; one object per path, made once. */
function methodNames(path: string, known: boolean): MethodNames {
  if (!known) return { service: otherMethod, method: otherMethod, spanName: otherMethod };
  let names = namesByPath.get(path);
  if (!names) {
    const slash = path.lastIndexOf("/");
    names = {
      service: path.slice(1, slash),
      method: path.slice(slash + 1),
      spanName: path.slice(1),
    };
    namesByPath.set(path, names);
  }
  return names;
}

export interface TelemetrySettings {
  /** The service.name of the resource (OTEL_SERVICE_NAME, K_SERVICE or the service's name). */
  serviceName: string;
  serviceVersion?: string | undefined;
  /** K_SERVICE, set by Cloud Run: the resource is a Cloud Run service's (faas.name). */
  cloudRunService?: string | undefined;
  /** GOOGLE_CLOUD_PROJECT: names the project on the resource, and the quota project. */
  projectId?: string | undefined;
  logger: Logger;
}

/** How a root trace (one that came without a decision) and a continued one are sampled. */
type SamplingRule = (trace: TraceContext, linkedSampled: boolean) => boolean;

export function samplingRule(sampler: TraceSampler, ratio: number): SamplingRule {
  const parentBased = sampler.startsWith("parentbased_");
  const root = sampler.replace("parentbased_", "");
  return (trace, linkedSampled) => {
    // A parent's decision is honoured (Cloud Run's front end sends one in traceparent).
    if (parentBased && trace.parentSpanId !== undefined) return trace.sampled;
    if (root === "always_on") return true;
    if (root === "always_off") return false;
    // A batch serving calls of which one is sampled is sampled too: its links lead somewhere.
    return linkedSampled || traceInSample(trace.traceId, ratio);
  };
}

export class Telemetry {
  private readonly tracer: api.Tracer;
  private readonly serverDuration: api.Histogram | undefined;
  private readonly clientDuration: api.Histogram | undefined;
  /** Links for the next outgoing call made now (withLinkedCalls). */
  private pendingLinks: api.Link[] | undefined;

  constructor(
    /** The IdGenerator `tracerProvider` was built with. */
    private readonly ids: GivenIds,
    private readonly tracerProvider: TracerProvider,
    private readonly meterProvider: MeterProvider | undefined,
    private readonly rule: SamplingRule,
    private readonly logger: Logger,
  ) {
    this.tracer = tracerProvider.getTracer("@cloudrun-grpc/runtime");
    const meter = meterProvider?.getMeter("@cloudrun-grpc/runtime");
    this.serverDuration = meter?.createHistogram(serverDurationMetric, {
      description: "Duration of the calls this server handled, to the status its client saw",
      unit: "ms",
    });
    this.clientDuration = meter?.createHistogram(clientDurationMetric, {
      description: "Duration of the calls made to peers, to their status",
      unit: "ms",
    });
  }

  /** Decides whether `trace` is sampled (its flag is set accordingly), and returns it. */
  sample(trace: TraceContext): TraceContext {
    // Links are only ever to sampled spans (withLinkedCalls).
    trace.sampled = this.rule(trace, this.pendingLinks !== undefined);
    return trace;
  }

  /**
   * Records a handled call: its duration, and its span when sampled. `known`: whether the
   * server serves its method; if not, its path is the caller's invention and named _OTHER.
   */
  serverCallEnded(ended: EndedCall, caller: string | undefined, known = true): void {
    const names = methodNames(ended.method, known);
    const endTime = nowMs();
    const metricAttributes = this.metricAttributes(names, ended.code);
    this.serverDuration?.record(ended.durationMs, metricAttributes);
    const trace = ended.context?.trace;
    if (!trace?.sampled) return;
    const attributes = caller ? { ...metricAttributes, [enduserId]: caller } : metricAttributes;
    this.record(names.spanName, api.SpanKind.SERVER, trace, {
      attributes,
      startTime: endTime - ended.durationMs,
      endTime,
      error: serverErrorCodes.has(ended.code) ? (ended.details ?? "") : undefined,
    });
  }

  /**
   * For a call about to be made to a peer within `trace` (its own span): a listener that records
   * its duration and span at its status, or undefined when there is nothing to record.
   */
  outgoingCall(
    trace: TraceContext,
    path: string,
  ): ((status: grpc.StatusObject) => void) | undefined {
    const links = this.pendingLinks;
    this.pendingLinks = undefined;
    if (!trace.sampled && !this.clientDuration) return undefined;
    const startTime = nowMs();
    return (status) => {
      const endTime = nowMs();
      const names = methodNames(path, true);
      const attributes = this.metricAttributes(names, status.code);
      this.clientDuration?.record(endTime - startTime, attributes);
      if (trace.sampled) {
        this.record(names.spanName, api.SpanKind.CLIENT, trace, {
          attributes,
          startTime,
          endTime,
          links,
          error: status.code !== 0 ? status.details : undefined,
        });
      }
    };
  }

  /**
   * Runs `work`, which makes one peer call (synchronously) on behalf of the calls whose
   * traceparents are given: that call's span links to theirs, and is sampled if any of them is.
   */
  withLinkedCalls<T>(traceparents: readonly (string | undefined)[], work: () => T): T {
    const links: api.Link[] = [];
    for (const traceparent of traceparents) {
      const linked = parseTraceparent(traceparent);
      // Only sampled calls have a span to link to; the SDK keeps 128 links at most.
      if (!linked?.sampled || !linked.parentSpanId || links.length >= 128) continue;
      links.push({
        context: {
          traceId: linked.traceId,
          spanId: linked.parentSpanId,
          traceFlags: api.TraceFlags.SAMPLED,
          isRemote: true,
        },
      });
    }
    this.pendingLinks = links.length > 0 ? links : undefined;
    try {
      return work();
    } finally {
      this.pendingLinks = undefined;
    }
  }

  /** Sends what is pending and stops, within `timeoutMs`. */
  async shutdown(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const giveUp = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    const stop = Promise.all([this.tracerProvider.shutdown(), this.meterProvider?.shutdown()]);
    try {
      await Promise.race([stop.then(() => undefined), giveUp]);
    } catch (error) {
      this.logger.warn({ err: error }, "telemetry: the last spans and metrics were not sent");
    } finally {
      clearTimeout(timer);
    }
  }

  private metricAttributes(names: MethodNames, code: number): api.Attributes {
    return {
      [rpcSystem]: "grpc",
      [rpcService]: names.service,
      [rpcMethod]: names.method,
      [rpcGrpcStatusCode]: code,
    };
  }

  /** One ended span with our ids, under its parent's span (remote: ours or the caller's). */
  private record(
    name: string,
    kind: api.SpanKind,
    trace: TraceContext,
    span: {
      attributes: api.Attributes;
      startTime: number;
      endTime: number;
      links?: api.Link[] | undefined;
      error: string | undefined;
    },
  ): void {
    const parent = trace.parentSpanId
      ? api.trace.setSpanContext(api.ROOT_CONTEXT, {
          traceId: trace.traceId,
          spanId: trace.parentSpanId,
          traceFlags: api.TraceFlags.SAMPLED,
          isRemote: true,
        })
      : api.ROOT_CONTEXT;
    this.ids.traceId = trace.traceId;
    this.ids.spanId = trace.spanId;
    const sdkSpan = this.tracer.startSpan(
      name,
      {
        kind,
        attributes: span.attributes,
        startTime: span.startTime,
        ...(span.links ? { links: span.links } : {}),
      },
      parent,
    );
    if (span.error !== undefined) {
      sdkSpan.setStatus({ code: api.SpanStatusCode.ERROR, message: span.error });
    }
    sdkSpan.end(span.endTime);
  }
}

let active: Telemetry | undefined;

/** Where telemetry goes per the environment; undefined: off. */
export function exportTargetOf(
  env: TelemetryEnv,
  projectId: string | undefined,
): ExportTarget | undefined {
  if (env.OTEL_SDK_DISABLED || env.TELEMETRY_EXPORT === "off") return undefined;
  if (env.TELEMETRY_EXPORT === "google-cloud") {
    return {
      endpoint: googleTelemetryEndpoint,
      protocol: "http/protobuf",
      google: { project: projectId },
    };
  }
  if (!env.OTEL_EXPORTER_OTLP_ENDPOINT) return undefined;
  return { endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT, protocol: env.OTEL_EXPORTER_OTLP_PROTOCOL };
}

/**
 * The SDK's diagnostics as the service's warnings. The SDK's error handler passes an export
 * failure as one string, the whole error serialized: its stack and the endpoint's response
 * body (seen with a 403). Only the first line of its message is kept, at most 300 characters
 * (no stack, no body, nothing of the request), and each kind of message (its text without
 * digits) at most once per `intervalMs`, saying how many like it were left out since.
 */
export function rateLimitedWarnings(
  logger: { warn(details: object, message: string): void },
  intervalMs: number,
  now: () => number = Date.now,
): (message: string, ...args: unknown[]) => void {
  const last = new Map<string, { at: number; leftOut: number }>();
  return (message, ...args) => {
    const reason = diagnosticReason(message, args);
    const kind = reason.replace(/[0-9]+/g, "#");
    const seen = last.get(kind);
    const at = now();
    if (seen && at - seen.at < intervalMs) {
      seen.leftOut += 1;
      return;
    }
    last.set(kind, { at, leftOut: 0 });
    logger.warn({ ...(seen?.leftOut ? { leftOut: seen.leftOut } : {}) }, `telemetry: ${reason}`);
  };
}

/** The first line of what a diagnostic says, without a serialized error's stack or body. */
function diagnosticReason(message: string, args: unknown[]): string {
  const parts = [message, ...args.map((arg) => (arg instanceof Error ? arg.message : arg))];
  let text = parts.filter((part) => typeof part === "string").join(" ");
  // {"stack":"OTLPExporterError: Forbidden\n    at …","data":"…"}: its message is the stack's first line.
  const stack = /"stack":"([^"\\]*)/.exec(text);
  if (stack?.[1]) text = `${message} ${stack[1]}`;
  const firstLine = text.split("\n")[0] ?? "";
  return firstLine.length > 300 ? `${firstLine.slice(0, 300)}…` : firstLine;
}

/**
 * Starts telemetry as the environment says (nothing when it says nothing) and makes it the
 * process's: the hooks below use it from now on. Returns it, to be shut down at exit.
 */
export async function startTelemetry(
  env: TelemetryEnv,
  settings: TelemetrySettings,
): Promise<Telemetry | undefined> {
  const target = exportTargetOf(env, settings.projectId);
  if (!target) return undefined;
  // Loaded only when telemetry is on: a process that exports nothing never loads the SDK.
  const [
    { BatchSpanProcessor, AlwaysOnSampler, TracerProvider },
    metricsSdk,
    { detectResources, envDetector, resourceFromAttributes, serviceInstanceIdDetector },
  ] = await Promise.all([
    import("@opentelemetry/sdk-trace"),
    import("@opentelemetry/sdk-metrics"),
    import("@opentelemetry/resources"),
  ]);
  const withMetrics = env.OTEL_METRICS_EXPORTER === "otlp";
  const exporters = await createExporters(target, withMetrics);
  // Each instance's metrics must be series of their own: Cloud Monitoring stores OTLP metrics
  // as prometheus_target, whose `instance` comes from service.instance.id and whose required
  // `location` from cloud.region (Terraform sets it in OTEL_RESOURCE_ATTRIBUTES: Cloud Run
  // sets no variable with the region), and cumulative histograms of two instances in one
  // series would be refused (https://cloud.google.com/stackdriver/docs/reference/telemetry/v1.metrics,
  // "Prometheus mapping"; service.instance.id "MUST be unique for each instance":
  // OpenTelemetry's service attributes). serviceInstanceIdDetector makes a random UUID.
  const detected = detectResources({ detectors: [serviceInstanceIdDetector, envDetector] });
  const resource = resourceFromAttributes({
    "service.name": settings.serviceName,
    ...(settings.serviceVersion ? { "service.version": settings.serviceVersion } : {}),
    ...(settings.projectId ? { "gcp.project_id": settings.projectId } : {}),
    ...(settings.cloudRunService
      ? {
          "cloud.provider": "gcp",
          "cloud.platform": "gcp_cloud_run",
          "faas.name": settings.cloudRunService,
          ...(settings.serviceVersion ? { "faas.version": settings.serviceVersion } : {}),
        }
      : {}),
  }).merge(detected);
  const meterProvider = exporters.metrics
    ? new metricsSdk.MeterProvider({
        resource,
        readers: [
          new metricsSdk.PeriodicExportingMetricReader({
            exporter: exporters.metrics,
            exportIntervalMillis: env.OTEL_METRIC_EXPORT_INTERVAL,
            exportTimeoutMillis: Math.min(30_000, env.OTEL_METRIC_EXPORT_INTERVAL),
          }),
        ],
      })
    : undefined;
  const ids = new GivenIds();
  const tracerProvider = new TracerProvider({
    resource,
    idGenerator: ids,
    sampler: new AlwaysOnSampler(),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: exporters.spans,
        scheduledDelayMillis: env.OTEL_BSP_SCHEDULE_DELAY,
      }),
    ],
  });
  const telemetry = new Telemetry(
    ids,
    tracerProvider,
    meterProvider,
    samplingRule(env.OTEL_TRACES_SAMPLER, env.OTEL_TRACES_SAMPLER_ARG),
    settings.logger,
  );
  if (meterProvider) api.metrics.setGlobalMeterProvider(meterProvider);
  // The SDK reports a failed export (a refused token, an unreachable endpoint) through its
  // diagnostic logger, silent unless set: warnings and errors go to the service's log, as one
  // short line at most once a minute per kind of problem (a refusal repeats at every export),
  // with how many were left out.
  const warn = rateLimitedWarnings(settings.logger, 60_000);
  api.diag.setLogger(
    {
      error: warn,
      warn,
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    { logLevel: api.DiagLogLevel.WARN, suppressOverrideMessage: true },
  );
  active = telemetry;
  settings.logger.info(
    {
      endpoint: target.endpoint,
      protocol: target.protocol,
      sampler: env.OTEL_TRACES_SAMPLER,
      ratio: env.OTEL_TRACES_SAMPLER_ARG,
      metrics: withMetrics,
    },
    "telemetry: exporting traces and metrics over OTLP",
  );
  return telemetry;
}

/** Forgets the process's telemetry (tests that start and stop it in one process). */
export function stopUsingTelemetry(telemetry: Telemetry): void {
  if (active === telemetry) active = undefined;
}

/**
 * A meter for a service's own metrics (route's reporter queue): the process's MeterProvider
 * once telemetry has started (call it after), OpenTelemetry's no-op meter otherwise.
 */
export function serviceMeter(): api.Meter {
  return api.metrics.getMeter("@cloudrun-grpc/service");
}

// The hooks. Each is one line where it is used; with telemetry off each is a single check.

/** Call observer: decides whether a call handled is sampled, as its context is made. */
export function sampleTrace(trace: TraceContext): TraceContext {
  return active ? active.sample(trace) : trace;
}

/**
 * Peer interceptor (outgoing-calls.ts), as the call is made: what records the call (its
 * duration, and its span when sampled) once its status arrives, or undefined.
 */
export function observeOutgoingCall(
  trace: TraceContext,
  path: string,
): ((status: grpc.StatusObject) => void) | undefined {
  return active?.outgoingCall(trace, path);
}

/** gRPC's own services every server has (health, reflection, channelz): known methods too. */
const builtInServices = /^\/grpc\.(health|reflection|channelz)\./;

/**
 * startService: the call observer's subscriber that records each call handled (its duration,
 * and its span when sampled), with the caller once authenticated. `served`: the paths of the
 * server's own methods; any other path is the caller's invention, named _OTHER.
 */
export function recordServerCalls(options: {
  served: ReadonlySet<string>;
  callerOf?: ((metadata: grpc.Metadata) => string | undefined) | undefined;
}): (ended: EndedCall) => void {
  const known = (path: string) => options.served.has(path) || builtInServices.test(path);
  return (ended) => {
    if (!active) return;
    const caller =
      ended.context?.trace.sampled && ended.metadata
        ? options.callerOf?.(ended.metadata)
        : undefined;
    active.serverCallEnded(ended, caller, known(ended.method));
  };
}

/** Route's reporter: makes one peer call linked to the calls it serves (see withLinkedCalls). */
export function withLinkedCalls<T>(
  traceparents: readonly (string | undefined)[],
  work: () => T,
): T {
  return active ? active.withLinkedCalls(traceparents, work) : work();
}
