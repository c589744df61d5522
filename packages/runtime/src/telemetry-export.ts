// Where spans and metrics are sent: OTLP over HTTP, to the receiver OTEL_EXPORTER_OTLP_ENDPOINT
// names, or, with TELEMETRY_EXPORT=google-cloud, to Google's Telemetry (OTLP) API.
//
// Why Google's OTLP endpoint and not @google-cloud/opentelemetry-cloud-trace-exporter and
// -cloud-monitoring-exporter:
//   - telemetry.googleapis.com takes OTLP traces (POST /v1/traces, into Cloud Trace) and metrics
//     (POST /v1/metrics, into Cloud Monitoring) with an OAuth token of the caller's
//     credentials (scopes trace.append / monitoring.write or cloud-platform), and Google
//     recommends it over the Cloud Trace API: https://docs.cloud.google.com/stackdriver/docs/reference/telemetry/overview,
//     …/reference/telemetry/v1.traces.post, …/reference/telemetry/v1.metrics.post;
//   - the exporters stay OpenTelemetry's own, the same code path locally and in the cloud (the
//     integration test exercises what runs in Cloud Run, less the URL and the token);
//   - Google's exporters lag the SDK: cloud-trace-exporter 3.1.0 and cloud-monitoring-exporter
//     0.22.0 peer on @opentelemetry/sdk-trace-base, core and resources ^2 and
//     google-auth-library ^10 (this SDK is 3.x, our google-auth-library 11), and the monitoring
//     one pulls `googleapis` (every Google API's client) into each image.
// The token: google-auth-library's Application Default Credentials (on Cloud Run, the
// service's own account from the metadata server), asked for at each export: it caches the
// token and refreshes it before it expires. Google warns that most SDK HTTP exporters cannot
// refresh a token (https://docs.cloud.google.com/stackdriver/docs/otlp/overview, "Protocol
// support"): a headers factory, which the OTLP exporters accept and call per request, can.
// The quota project is named (x-goog-user-project): the Telemetry API is a consumer API and
// charges the project the caller names (same page, "Authentication").
import type { PushMetricExporter } from "@opentelemetry/sdk-metrics";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import type { OtlpProtocol } from "./telemetry-config.js";

export const googleTelemetryEndpoint = "https://telemetry.googleapis.com";

export interface ExportTarget {
  /** The OTLP/HTTP base URL; /v1/traces and /v1/metrics are appended. */
  endpoint: string;
  protocol: OtlpProtocol;
  /** Google Cloud: a token from Application Default Credentials on every export. */
  google?: { project: string | undefined };
}

export interface Exporters {
  spans: SpanExporter;
  metrics: PushMetricExporter | undefined;
}

/** Request headers with a fresh OAuth token of the process's Google credentials. */
async function googleAuthHeaders(project: string | undefined) {
  // Loaded only when exporting to Google: locally it is never needed.
  const { GoogleAuth } = await import("google-auth-library");
  const auth = new GoogleAuth({ scopes: ["https://www.googleapis.com/auth/cloud-platform"] });
  return async (): Promise<Record<string, string>> => {
    try {
      const headers = Object.fromEntries((await auth.getRequestHeaders()).entries());
      return project ? { ...headers, "x-goog-user-project": project } : headers;
    } catch {
      // The factory must not throw (the exporter's contract); the export then fails with 401
      // and the SDK reports it, and the next export asks again.
      return {};
    }
  };
}

/** The span and (unless `withMetrics` is false) metric exporters for `target`. */
export async function createExporters(
  target: ExportTarget,
  withMetrics: boolean,
): Promise<Exporters> {
  const headers = target.google ? await googleAuthHeaders(target.google.project) : undefined;
  const common = (signal: "traces" | "metrics") => ({
    url: `${target.endpoint}/v1/${signal}`,
    ...(headers ? { headers } : {}),
  });
  // Only the exporters this process uses are loaded.
  if (target.protocol === "http/json") {
    const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
    const metrics = withMetrics
      ? new (await import("@opentelemetry/exporter-metrics-otlp-http")).OTLPMetricExporter(
          common("metrics"),
        )
      : undefined;
    return { spans: new OTLPTraceExporter(common("traces")), metrics };
  }
  const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto");
  const metrics = withMetrics
    ? new (await import("@opentelemetry/exporter-metrics-otlp-proto")).OTLPMetricExporter(
        common("metrics"),
      )
    : undefined;
  return { spans: new OTLPTraceExporter(common("traces")), metrics };
}
