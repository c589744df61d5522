// A gRPC call on a bare node:http2 stream, for tests that need to control exactly what the
// client reads and writes (a grpc-js client buffers on its own side, so it cannot play a
// reader that never reads). Messages are hand-encoded protobuf: only what the tests send.
import { readFileSync } from "node:fs";
import http2 from "node:http2";

/** A non-negative varint, or a negative int32 as protobuf writes it (10 bytes, two's complement). */
function varint(value: number): number[] {
  let rest = BigInt.asUintN(64, BigInt(value));
  const bytes: number[] = [];
  while (rest >= 0x80n) {
    bytes.push(Number((rest & 0x7fn) | 0x80n));
    rest >>= 7n;
  }
  bytes.push(Number(rest));
  return bytes;
}

/** A length-delimited field (wire type 2). */
function lengthDelimited(field: number, payload: Uint8Array): Buffer {
  return Buffer.concat([
    Buffer.from([...varint((field << 3) | 2), ...varint(payload.length)]),
    payload,
  ]);
}

/** An int32 field (wire type 0); zero is left out, as proto3 does. */
function int32Field(field: number, value: number): Buffer {
  return value === 0 ? Buffer.alloc(0) : Buffer.from([...varint(field << 3), ...varint(value)]);
}

/**
 * gateway.v1.RouteChatRequest { note: routeguide.v1.RouteNote { location: Point, message } }
 * as protobuf bytes. Point is E7 integers.
 */
export function encodeRouteChatRequest(
  location: { latitude: number; longitude: number },
  message: string,
): Buffer {
  const point = Buffer.concat([
    int32Field(1, location.latitude),
    int32Field(2, location.longitude),
  ]);
  const note = Buffer.concat([lengthDelimited(1, point), lengthDelimited(2, Buffer.from(message))]);
  return lengthDelimited(1, note);
}

/** routeguide.v1.RecordRouteRequest (and gateway.v1's, the same layout) { point: Point }. */
export function encodeRecordRouteRequest(point: { latitude: number; longitude: number }): Buffer {
  return lengthDelimited(
    1,
    Buffer.concat([int32Field(1, point.latitude), int32Field(2, point.longitude)]),
  );
}

/** One gRPC length-prefixed message: flag 0 (not compressed), 4-byte big-endian length, bytes. */
export function grpcFrame(message: Uint8Array): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt8(0, 0);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

/** Counts the gRPC messages in a response body as its chunks arrive. */
export class GrpcMessageCounter {
  count = 0;
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let offset = 0;
    while (this.pending.length - offset >= 5) {
      const length = this.pending.readUInt32BE(offset + 1);
      if (this.pending.length - offset < 5 + length) break;
      offset += 5 + length;
      this.count += 1;
    }
    this.pending = this.pending.subarray(offset);
  }

  /** Bytes of an unfinished message (0 once the body is complete). */
  get leftover(): number {
    return this.pending.length;
  }
}

export interface RawCall {
  session: http2.ClientHttp2Session;
  stream: http2.ClientHttp2Stream;
  /** Cancels the stream (RST_STREAM CANCEL) and closes the session. */
  cancel(): Promise<void>;
}

/**
 * Opens `path` (e.g. /gateway.v1.GatewayService/RouteChat) on an h2c gRPC server. The
 * response stream is left paused: nothing is read until the caller resumes it (a 'data'
 * listener alone does not, once a stream is paused).
 */
export function openRawCall(url: string, path: string, token?: string): RawCall {
  const session = http2.connect(url);
  session.on("error", () => {});
  const stream = session.request({
    ":method": "POST",
    ":path": path,
    "content-type": "application/grpc",
    te: "trailers",
    ...(token ? { authorization: `Bearer ${token}` } : {}),
  });
  stream.on("error", () => {});
  stream.pause();
  return {
    session,
    stream,
    async cancel() {
      if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
      // A session the server dropped is destroyed without being closed; close() would never
      // call back then. One that does not close in time is destroyed.
      if (session.destroyed) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => session.destroy(), 5000);
        session.once("close", () => {
          clearTimeout(timer);
          resolve();
        });
        session.close();
      });
    },
  };
}

/** /proc/<pid>/<file>, or an error that says the process is gone. */
function procFile(pid: number, file: string): string {
  try {
    return readFileSync(`/proc/${pid}/${file}`, "utf8");
  } catch (error) {
    throw new Error(`process ${pid} is gone (no /proc/${pid}/${file})`, { cause: error });
  }
}

/** A process's resident memory (VmRSS) in bytes, from /proc (Linux). */
export function residentBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(procFile(pid, "status"));
  if (!match) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}

/**
 * The CPU time a process has used so far (user + system), in seconds, from /proc (Linux;
 * /proc counts in USER_HZ, which is 100 on every Linux this runs on).
 */
export function cpuSeconds(pid: number): number {
  const stat = procFile(pid, "stat");
  // Fields after the command name (which may hold spaces), which ends at the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
