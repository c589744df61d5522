// The probes Cloud Run runs against an instance, over the front end's own h2c session to it:
// a gRPC one is grpc.health.v1.Health/Check for a service name, SERVING or it fails
// (https://cloud.google.com/run/docs/configuring/healthchecks: "make sure that your container
// image implements the gRPC health check protocol"); a TCP one only opens a connection. The
// request and answer are two tiny protobuf messages, written and read here by hand rather than
// through a gRPC client of its own.
import type { ClientHttp2Session } from "node:http2";
import { connect } from "node:net";

/** HealthCheckRequest { string service = 1; } in a gRPC length-prefixed frame. */
function checkRequest(service: string): Buffer {
  const name = Buffer.from(service, "utf8");
  if (name.length > 127) throw new Error("health service names over 127 bytes are not supported");
  const message =
    name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, name.length]), name]);
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

const servingStatus = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/** HealthCheckResponse { ServingStatus status = 1; } out of one frame (status < 128). */
function readStatus(body: Buffer): string {
  if (body.length < 5) return "no response message";
  const message = body.subarray(5, 5 + body.readUInt32BE(1));
  // proto3 leaves a zero enum out: an empty message is UNKNOWN.
  if (message.length === 0) return "UNKNOWN";
  if (message[0] !== 0x08 || message.length < 2) return "unreadable response";
  return servingStatus[message[1] as number] ?? `status ${message[1]}`;
}

/** "SERVING", or what was seen instead (a status, a gRPC error, a timeout, a refusal). */
export function grpcHealthCheck(
  session: ClientHttp2Session,
  service: string,
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (outcome: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const timer = setTimeout(() => {
      stream.close();
      done(`no answer within ${timeoutMs} ms`);
    }, timeoutMs);
    const stream = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Check",
      "content-type": "application/grpc",
      te: "trailers",
    });
    const chunks: Buffer[] = [];
    let grpcStatus: string | undefined;
    stream.on("response", (headers) => {
      if (headers[":status"] !== 200) done(`HTTP status ${headers[":status"]}`);
      if (headers["grpc-status"] !== undefined) grpcStatus = String(headers["grpc-status"]);
    });
    stream.on("trailers", (trailers) => {
      grpcStatus = String(trailers["grpc-status"]);
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", (error) => done(error.message));
    stream.on("close", () => {
      if (grpcStatus !== "0") done(`grpc-status ${grpcStatus ?? "missing"}`);
      else done(readStatus(Buffer.concat(chunks)));
    });
    stream.end(checkRequest(service));
  });
}

/** "SERVING" when the port accepts a TCP connection (Cloud Run's default startup probe). */
export function tcpCheck(port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(`no connection within ${timeoutMs} ms`);
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.destroy();
      resolve("SERVING");
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      resolve(error.message);
    });
  });
}
