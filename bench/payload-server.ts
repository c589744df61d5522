// The payload section's servers (pnpm bench payload), each run as a process of its own:
//   grpc     bare grpc-js (as baseline A) serving bench.v1.FeaturePageService/GetFeaturePage
//   json-h1  the same page as JSON over HTTP/1.1 (node:http, keep-alive)
//   json-h2  the same over h2c (node:http2)
// Every call does its own work: the request decoded (protobuf, or JSON.parse), the first
// page_size features of the catalogue sliced, the answer encoded (grpc-js's serializer, that
// is protobuf.js fromObject + encode, or JSON.stringify). Nothing serialized is kept.
// Prints one JSON line {"port": n} once it listens.
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type OutgoingHttpHeaders,
} from "node:http";
import { createServer as createHttp2Server, type Http2ServerRequest } from "node:http2";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import {
  catalogueSize,
  jsonPath,
  loadCatalogue,
  packageDefinition,
} from "./support/feature-page.js";

const catalogue = loadCatalogue();

const validSize = (size: unknown): size is number =>
  Number.isInteger(size) && (size as number) >= 0 && (size as number) <= catalogueSize;

const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  bench: { v1: { FeaturePageService: grpc.ServiceClientConstructor } };
};

const handlers: grpc.UntypedServiceImplementation = {
  GetFeaturePage(
    call: grpc.ServerUnaryCall<{ pageSize: number }, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ) {
    const { pageSize } = call.request;
    if (!validSize(pageSize)) {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: `page_size 0 to ${catalogueSize}` });
      return;
    }
    callback(null, { features: catalogue.slice(0, pageSize) });
  },
};

/** What the handler uses of an HTTP/1.1 or an HTTP/2 response (as in baseline-server.ts). */
interface JsonResponse {
  writeHead(statusCode: number, headers: OutgoingHttpHeaders): unknown;
  end(body: string): unknown;
}

function jsonHandler(request: IncomingMessage | Http2ServerRequest, response: JsonResponse) {
  const chunks: Buffer[] = [];
  request.on("data", (chunk: Buffer) => chunks.push(chunk));
  request.on("end", () => {
    let pageSize: unknown;
    try {
      ({ pageSize } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { pageSize?: unknown });
    } catch {}
    if (request.url !== jsonPath || !validSize(pageSize)) {
      response.writeHead(400, { "content-type": "application/json" });
      response.end(`{"error":"POST ${jsonPath} with {\\"pageSize\\": 0 to ${catalogueSize}}"}`);
      return;
    }
    const body = JSON.stringify({ features: catalogue.slice(0, pageSize) });
    response.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
    });
    response.end(body);
  });
}

const mode = process.argv[2];
let port: number;
if (mode === "grpc") {
  // grpc-js sends messages of any size unless told otherwise: its server-side
  // DEFAULT_MAX_SEND_MESSAGE_LENGTH is -1 (src/constants.ts; checked in server-interceptors.ts),
  // so the 1 MiB page needs no option.
  const server = new grpc.Server();
  server.addService(loaded.bench.v1.FeaturePageService.service, handlers);
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
} else if (mode === "json-h1" || mode === "json-h2") {
  const server =
    mode === "json-h1"
      ? createHttpServer({ keepAliveTimeout: 60_000 }, jsonHandler)
      : createHttp2Server({ peerMaxConcurrentStreams: 1000 }, jsonHandler);
  port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
} else {
  throw new Error(`unknown mode ${mode}: grpc | json-h1 | json-h2`);
}
console.log(JSON.stringify({ port }));
process.on("SIGTERM", () => process.exit(0));
