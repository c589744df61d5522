// The export path Cloud Run runs (TELEMETRY_EXPORT=google-cloud), short of Google's URL: OTLP
// over HTTP as protobuf, with an OAuth token of the process's Application Default Credentials
// fetched from the metadata server (as on Cloud Run) and the quota project named. A stand-in
// metadata server and an OTLP receiver run in this process on loopback; the exporters are the
// ones createExporters makes for Google, pointed at the receiver.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import { createExporters } from "../src/telemetry-export.js";

interface Received {
  path: string;
  headers: IncomingMessage["headers"];
  bytes: number;
}
const received: Received[] = [];
const tokenRequests: string[] = [];

// What the metadata server answers google-auth-library (gcp-metadata checks the
// Metadata-Flavor header of every answer).
const metadata = createServer((request, response) => {
  const url = new URL(request.url ?? "/", "http://metadata");
  response.setHeader("Metadata-Flavor", "Google");
  if (url.pathname === "/computeMetadata/v1/instance/service-accounts/default/token") {
    tokenRequests.push(url.search);
    response.setHeader("content-type", "application/json");
    response.end(
      JSON.stringify({ access_token: "test-access-token", expires_in: 3599, token_type: "Bearer" }),
    );
    return;
  }
  if (url.pathname === "/computeMetadata/v1/project/project-id") {
    response.end("metadata-project");
    return;
  }
  response.statusCode = 404;
  response.end();
});

// An OTLP/HTTP receiver that takes anything and answers an empty (valid) protobuf response.
const receiver = createServer((request, response) => {
  let bytes = 0;
  request.on("data", (chunk: Buffer) => {
    bytes += chunk.length;
  });
  request.on("end", () => {
    received.push({ path: request.url ?? "", headers: request.headers, bytes });
    response.writeHead(200, { "content-type": "application/x-protobuf" }).end();
  });
});

const listen = async (server: ReturnType<typeof createServer>) => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
};

let endpoint = "";
before(async () => {
  const metadataPort = await listen(metadata);
  endpoint = `http://127.0.0.1:${await listen(receiver)}`;
  // Application Default Credentials as on Cloud Run: no key file, no gcloud login (a home of
  // its own), the metadata server at hand.
  delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
  delete process.env.CLOUDSDK_CONFIG;
  process.env.HOME = mkdtempSync(join(tmpdir(), "telemetry-google-home-"));
  process.env.GCE_METADATA_HOST = `127.0.0.1:${metadataPort}`;
  process.env.METADATA_SERVER_DETECTION = "assume-present";
});
after(() => {
  metadata.close();
  receiver.close();
});

test("spans and metrics go as OTLP protobuf with the metadata server's OAuth token and the quota project", async () => {
  const exporters = await createExporters(
    { endpoint, protocol: "http/protobuf", google: { project: "quota-project" } },
    true,
  );
  assert.ok(exporters.metrics, "a metrics exporter");

  const tracerProvider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter: exporters.spans })],
  });
  tracerProvider.getTracer("test").startSpan("a span").end();
  await tracerProvider.forceFlush();

  const meterProvider = new MeterProvider({
    readers: [
      new PeriodicExportingMetricReader({
        exporter: exporters.metrics,
        exportIntervalMillis: 60_000,
      }),
    ],
  });
  meterProvider.getMeter("test").createHistogram("rpc.server.duration").record(1.5);
  await meterProvider.forceFlush();

  await tracerProvider.shutdown();
  await meterProvider.shutdown();

  const byPath = (path: string) => received.find((request) => request.path === path);
  for (const path of ["/v1/traces", "/v1/metrics"]) {
    const request = byPath(path);
    assert.ok(request, `${path} was posted: ${JSON.stringify(received.map((r) => r.path))}`);
    assert.equal(request.headers["content-type"], "application/x-protobuf", path);
    assert.equal(request.headers.authorization, "Bearer test-access-token", path);
    assert.equal(request.headers["x-goog-user-project"], "quota-project", path);
    assert.ok(request.bytes > 0, `${path} carried a body`);
  }
  assert.ok(tokenRequests.length > 0, "the token came from the metadata server");
});
