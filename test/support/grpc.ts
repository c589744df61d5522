// Small promise helpers over grpc-js for the tests.
import { createRequire } from "node:module";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { connectGateway } from "@cloudrun-grpc/cli";
import type { Stack } from "@cloudrun-grpc/local-stack";
import type { GatewayServiceClient } from "@cloudrun-grpc/proto";
import type { ClientFactory } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { service as healthServiceDefinition } from "grpc-health-check";

export { collect, deadline, failure, unary } from "@cloudrun-grpc/test-support";

import { collect, deadline, unary } from "@cloudrun-grpc/test-support";

/**
 * How a helper below reaches a server: a `host:port` (h2c, no token, as on loopback), or a
 * function that makes the client itself (e.g. a test target's, with TLS and an ID token).
 */
export type Connect = <Client extends grpc.Client>(factory: ClientFactory<Client>) => Client;

function connectWith(where: string | Connect): Connect {
  if (typeof where !== "string") return where;
  return (factory) => factory(where, grpc.credentials.createInsecure());
}

const HealthClient = grpc.makeGenericClientConstructor(
  healthServiceDefinition as unknown as grpc.ServiceDefinition,
  "Health",
);
type HealthClient = grpc.Client & {
  Check: (
    request: { service: string },
    options: grpc.CallOptions,
    callback: grpc.requestCallback<{ status: string }>,
  ) => void;
};

/** grpc.health.v1.Health/Check, as Cloud Run's probe asks it. */
export async function healthStatus(where: string | Connect, service: string): Promise<string> {
  const client = connectWith(where)(
    (target, credentials, options) =>
      new HealthClient(target, credentials, options) as unknown as HealthClient,
  );
  try {
    const response = await unary<{ status: string }>((done) =>
      client.Check({ service }, deadline(), done),
    );
    return response.status;
  } finally {
    client.close();
  }
}

/** Polls `read` until `done(value)` holds or `timeoutMs` passes; returns the last value. */
export async function eventually<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs = 10_000,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  let value = await read();
  while (!done(value) && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    value = await read();
  }
  return value;
}

/** The target (host:port) of an http:// URL. */
export const targetOf = (url: string) => new URL(url).host;

const require = createRequire(import.meta.url);
const reflectionProto = join(
  dirname(require.resolve("@grpc/reflection/package.json")),
  "build/proto/grpc/reflection/v1/reflection.proto",
);

type ReflectionClient = grpc.Client & {
  ServerReflectionInfo: (
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
  ) => grpc.ClientDuplexStream<object, ReflectionResponse>;
};

/** The services a server lists through grpc.reflection.v1 (what grpcurl asks). */
export async function reflectedServices(
  where: string | Connect,
  metadata = new grpc.Metadata(),
): Promise<string[]> {
  const definition = loadSync(reflectionProto, { keepCase: true });
  const ServerReflection = grpc.makeGenericClientConstructor(
    definition["grpc.reflection.v1.ServerReflection"] as grpc.ServiceDefinition,
    "ServerReflection",
  );
  const client = connectWith(where)(
    (target, credentials, options) =>
      new ServerReflection(target, credentials, options) as unknown as ReflectionClient,
  );
  try {
    const stream = client.ServerReflectionInfo(metadata, deadline());
    stream.write({ list_services: "" });
    stream.end();
    const [response] = await collect(stream);
    return (response?.list_services_response?.service ?? []).map((service) => service.name);
  } finally {
    client.close();
  }
}

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
}

/** The error code of a TCP connection to 127.0.0.1:`port` (undefined: it connected). */
export function connectError(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code));
  });
}

/** A gateway client of a stack started with auth: the local client identity's ID token. */
export async function stackGatewayClient(stack: Stack): Promise<GatewayServiceClient> {
  if (!stack.auth) return connectGateway(stack.gateway.url, { kind: "none" });
  const token = await stack.auth.tokenFor("client", stack.gateway.url);
  return connectGateway(stack.gateway.url, { kind: "token", token });
}
