// An OTLP/HTTP receiver for tests: an HTTP server on 127.0.0.1 that takes what the services'
// exporters send (OTEL_EXPORTER_OTLP_PROTOCOL=http/json: OTLP's JSON encoding, ids as hex,
// https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding) to /v1/traces and
// /v1/metrics, and keeps the spans and metric points it was sent.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export type AnyValue = {
  stringValue?: string;
  intValue?: number | string;
  doubleValue?: number;
  boolValue?: boolean;
};
interface KeyValue {
  key: string;
  value: AnyValue;
}

/** One span as received, with the service.name of its resource. */
export interface ReceivedSpan {
  service: string;
  /** Its resource's attributes (service.instance.id, cloud.region …). */
  resource: Record<string, string | number | boolean | undefined>;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  /** OTLP's SpanKind: 2 server, 3 client. */
  kind: number;
  attributes: Record<string, string | number | boolean | undefined>;
  /** OTLP's StatusCode: 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string | undefined };
  links: { traceId: string; spanId: string }[];
  /** The trace flags as received (bit 0: sampled), when the exporter sends them. */
  flags: number | undefined;
}

/** One metric as received: its name, its service, and its points' attributes. */
export interface ReceivedMetric {
  service: string;
  name: string;
  unit: string | undefined;
  kind: "histogram" | "gauge" | "sum" | "other";
  points: { attributes: Record<string, string | number | boolean | undefined>; value: number }[];
}

export const spanKind = { server: 2, client: 3 } as const;

function plainValue(value: AnyValue): string | number | boolean | undefined {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  return value.boolValue;
}

function attributesOf(list: KeyValue[] | undefined) {
  return Object.fromEntries((list ?? []).map(({ key, value }) => [key, plainValue(value)]));
}

interface Resource {
  resource?: { attributes?: KeyValue[] };
}
interface JsonSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: KeyValue[];
  status?: { code?: number; message?: string };
  links?: { traceId: string; spanId: string }[];
  flags?: number;
}
interface JsonPoint {
  attributes?: KeyValue[];
  count?: number | string;
  asInt?: number | string;
  asDouble?: number;
}
interface JsonMetric {
  name: string;
  unit?: string;
  histogram?: { dataPoints: JsonPoint[] };
  gauge?: { dataPoints: JsonPoint[] };
  sum?: { dataPoints: JsonPoint[] };
}

export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly metrics: ReceivedMetric[] = [];
  /** Requests that were not OTLP JSON, as `<content-type> <path>`. */
  readonly refused: string[] = [];
  private constructor(
    private readonly server: Server,
    readonly endpoint: string,
  ) {}

  static async start(): Promise<OtlpReceiver> {
    let receiver: OtlpReceiver | undefined;
    const server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const type = request.headers["content-type"] ?? "";
        if (request.method !== "POST" || !type.startsWith("application/json")) {
          receiver?.refused.push(`${type} ${request.url}`);
          response.writeHead(415).end();
          return;
        }
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        if (request.url === "/v1/traces") receiver?.takeSpans(body);
        else if (request.url === "/v1/metrics") receiver?.takeMetrics(body);
        else receiver?.refused.push(`${type} ${request.url}`);
        response.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    receiver = new OtlpReceiver(server, `http://127.0.0.1:${port}`);
    return receiver;
  }

  private takeSpans(body: {
    resourceSpans?: (Resource & { scopeSpans?: { spans?: JsonSpan[] }[] })[];
  }) {
    for (const resourceSpans of body.resourceSpans ?? []) {
      const resource = attributesOf(resourceSpans.resource?.attributes);
      const service = String(resource["service.name"]);
      for (const scope of resourceSpans.scopeSpans ?? []) {
        for (const span of scope.spans ?? []) {
          this.spans.push({
            service,
            resource,
            traceId: span.traceId,
            spanId: span.spanId,
            parentSpanId: span.parentSpanId || undefined,
            name: span.name,
            kind: span.kind,
            attributes: attributesOf(span.attributes),
            status: { code: span.status?.code ?? 0, message: span.status?.message },
            links: (span.links ?? []).map(({ traceId, spanId }) => ({ traceId, spanId })),
            flags: span.flags,
          });
        }
      }
    }
  }

  private takeMetrics(body: {
    resourceMetrics?: (Resource & { scopeMetrics?: { metrics?: JsonMetric[] }[] })[];
  }) {
    for (const resourceMetrics of body.resourceMetrics ?? []) {
      const service = String(attributesOf(resourceMetrics.resource?.attributes)["service.name"]);
      for (const scope of resourceMetrics.scopeMetrics ?? []) {
        for (const metric of scope.metrics ?? []) {
          const [kind, points] = metric.histogram
            ? (["histogram", metric.histogram.dataPoints] as const)
            : metric.gauge
              ? (["gauge", metric.gauge.dataPoints] as const)
              : metric.sum
                ? (["sum", metric.sum.dataPoints] as const)
                : (["other", []] as const);
          this.metrics.push({
            service,
            name: metric.name,
            unit: metric.unit,
            kind,
            points: points.map((point) => ({
              attributes: attributesOf(point.attributes),
              value: Number(point.count ?? point.asInt ?? point.asDouble ?? Number.NaN),
            })),
          });
        }
      }
    }
  }

  /** The spans of one trace received so far. */
  trace(traceId: string): ReceivedSpan[] {
    return this.spans.filter((span) => span.traceId === traceId);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}
