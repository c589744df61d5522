// What the environment says about traces and RPC metrics (issue 18), under OpenTelemetry's own
// variable names where the specification has one
// (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/), so a
// reader who knows OpenTelemetry knows these. One more, ours: TELEMETRY_EXPORT=google-cloud,
// which Terraform sets, sends both to Google's Telemetry (OTLP) API with the service account's
// credentials (telemetry-export.ts says why that and not Google's Cloud Trace exporter).
//
// Nothing is exported unless asked for: locally telemetry is off until OTEL_EXPORTER_OTLP_ENDPOINT
// names a receiver (a collector, Jaeger, a test's).
import { z } from "zod";
import { booleanVar, integerVar, numberVar } from "./config.js";

/** The samplers of OTEL_TRACES_SAMPLER this system implements (telemetry-sampling.ts). */
export const traceSamplers = [
  "parentbased_traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "traceidratio",
  "always_on",
  "always_off",
] as const;
export type TraceSampler = (typeof traceSamplers)[number];

/** OTLP over HTTP, protobuf (what Google's endpoint is documented with) or JSON. */
export const otlpProtocols = ["http/protobuf", "http/json"] as const;
export type OtlpProtocol = (typeof otlpProtocols)[number];

function enumVar<const Values extends readonly string[]>(values: Values, fallback: Values[number]) {
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      const value = raw === undefined || raw.trim() === "" ? fallback : raw.trim().toLowerCase();
      if ((values as readonly string[]).includes(value)) return value as Values[number];
      ctx.addIssue({
        code: "custom",
        message: `must be one of ${values.join(", ")}, got ${JSON.stringify(raw)}`,
      });
      return z.NEVER;
    });
}

/** An OTLP/HTTP base URL (the exporters append /v1/traces and /v1/metrics), or unset. */
const otlpEndpointVar = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    if (raw === undefined || raw.trim() === "") return undefined;
    let url: URL;
    try {
      url = new URL(raw.trim());
    } catch {
      url = new URL("invalid:");
    }
    if ((url.protocol !== "http:" && url.protocol !== "https:") || url.search || url.hash) {
      ctx.addIssue({
        code: "custom",
        message: `must be an http(s) URL of an OTLP/HTTP receiver, e.g. http://127.0.0.1:4318, got ${JSON.stringify(raw)}`,
      });
      return z.NEVER;
    }
    return url.href.replace(/\/$/, "");
  });

/** Where traces and metrics go: Google's endpoint with the service's credentials, or nowhere. */
const telemetryExportVar = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    const value = raw?.trim().toLowerCase() ?? "";
    if (value === "") return undefined;
    if (value === "google-cloud" || value === "off") return value;
    ctx.addIssue({
      code: "custom",
      message: `must be google-cloud (Cloud Trace and Cloud Monitoring through telemetry.googleapis.com) or off, got ${JSON.stringify(raw)}`,
    });
    return z.NEVER;
  });

export const telemetryEnv = {
  /** google-cloud: export to Google's Telemetry API (Terraform sets it); off: never export. */
  TELEMETRY_EXPORT: telemetryExportVar,
  /** OpenTelemetry's switch for the whole SDK. */
  OTEL_SDK_DISABLED: booleanVar(false),
  /** The service name on spans and metrics; by default K_SERVICE, else the service's own name. */
  OTEL_SERVICE_NAME: z
    .string()
    .optional()
    .transform((raw) => (raw === undefined || raw.trim() === "" ? undefined : raw.trim())),
  /** An OTLP/HTTP receiver; without it (and without TELEMETRY_EXPORT) nothing is exported. */
  OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpointVar,
  OTEL_EXPORTER_OTLP_PROTOCOL: enumVar(otlpProtocols, "http/protobuf"),
  OTEL_TRACES_SAMPLER: enumVar(traceSamplers, "parentbased_traceidratio"),
  /**
   * The share of new traces sampled (those that arrive without a sampling decision). Small by
   * default: every sampled call is a span on each hop, written to Cloud Trace and paid for.
   */
  OTEL_TRACES_SAMPLER_ARG: numberVar(0.01, 0, 1),
  /** How long ended spans wait to be sent in a batch (OpenTelemetry's default, 5 s). */
  OTEL_BSP_SCHEDULE_DELAY: integerVar(5000, 1, 600_000),
  /** otlp (the default once exporting) or none: the RPC duration metrics and queue depth. */
  OTEL_METRICS_EXPORTER: enumVar(["otlp", "none"] as const, "otlp"),
  /** How often metrics are sent (OpenTelemetry's default, 60 s). */
  OTEL_METRIC_EXPORT_INTERVAL: integerVar(60_000, 1, 3_600_000),
};

export interface TelemetryEnv {
  TELEMETRY_EXPORT: "google-cloud" | "off" | undefined;
  OTEL_SDK_DISABLED: boolean;
  OTEL_SERVICE_NAME: string | undefined;
  OTEL_EXPORTER_OTLP_ENDPOINT: string | undefined;
  OTEL_EXPORTER_OTLP_PROTOCOL: OtlpProtocol;
  OTEL_TRACES_SAMPLER: TraceSampler;
  OTEL_TRACES_SAMPLER_ARG: number;
  OTEL_BSP_SCHEDULE_DELAY: number;
  OTEL_METRICS_EXPORTER: "otlp" | "none";
  OTEL_METRIC_EXPORT_INTERVAL: number;
}
