// Load from h2load (Debian's nghttp2-client), a C load generator that costs a fraction of the
// CPU of a Node client: gRPC over h2c is a POST with a body of 5-byte-prefixed messages and
// `content-type: application/grpc`, `te: trailers`, which h2load sends as it is. Its
// per-request log (--log-file) gives the latencies; bash's `times` its own CPU.
// HTTP status is all h2load sees (a gRPC error is a 200 with grpc-status in the trailers), so
// callers check gRPC outcomes elsewhere (the services' own logs of failed calls).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, constants as h2, type SecureClientSessionOptions } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function requireH2load(): void {
  const found = spawnSync("h2load", ["--version"], { encoding: "utf8" });
  if (found.error || found.status !== 0) {
    console.error(
      "h2load is missing: install it with `apt-get install nghttp2-client` (Debian/Ubuntu), then run pnpm bench again",
    );
    process.exit(2);
  }
}

/** A gRPC body: each message with its 5-byte prefix (not compressed, 4-byte big-endian length). */
export function grpcBody(messages: Buffer[]): Buffer {
  return Buffer.concat(
    messages.flatMap((message) => {
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(message.length, 1);
      return [prefix, message];
    }),
  );
}

export interface H2loadTarget {
  url: string;
  body: Buffer;
  headers: Record<string, string>;
  /** HTTP/1.1 (one request at a time per connection) instead of h2c. */
  http1?: boolean;
  /** HTTP/2 connections the calls in flight are split over evenly (default 1). */
  connections?: number;
}

export interface H2loadResult {
  requests: number;
  succeeded: number;
  failed: number;
  seconds: number;
  requestsPerSecond: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  /** h2load's own CPU (user + system) for the run, µs. */
  generatorCpuUs: number;
  /** Requests by HTTP status that was not 2xx (from the log; e.g. a front end's 429s). */
  failedStatuses: Record<string, number>;
}

/**
 * Runs h2load for `seconds` at `concurrency` requests in flight: over HTTP/2 (h2c, or h2 over
 * TLS for an https:// URL) one connection with that many streams (as a gRPC channel
 * multiplexes) unless told more, over HTTP/1.1 that many connections.
 */
export async function h2load(
  target: H2loadTarget,
  concurrency: number,
  seconds: number,
): Promise<H2loadResult> {
  const dir = mkdtempSync(join(tmpdir(), "bench-h2load-"));
  try {
    const bodyFile = join(dir, "body");
    const logFile = join(dir, "log");
    writeFileSync(bodyFile, target.body);
    const args = [
      "-t",
      "1",
      ...(target.http1
        ? ["--h1", "-c", String(concurrency), "-m", "1"]
        : [
            "-c",
            String(target.connections ?? 1),
            "-m",
            String(Math.ceil(concurrency / (target.connections ?? 1))),
          ]),
      "-D",
      String(seconds),
      "-d",
      bodyFile,
      "--log-file",
      logFile,
      ...Object.entries(target.headers).flatMap(([name, value]) => ["-H", `${name}: ${value}`]),
      target.url,
    ];
    // `times` prints the shell's and then its children's user and system time.
    const child = spawn(
      "bash",
      ["-c", 'h2load "$@"; code=$?; times; exit $code', "h2load", ...args],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
    });
    child.stderr.on("data", (chunk) => {
      err += chunk;
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    if (code !== 0) throw new Error(`h2load failed (${code}): ${err}\n${out}`);
    const finished = /finished in ([\d.]+)(m?s)/.exec(out);
    const counts =
      /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(out);
    if (!finished || !counts) throw new Error(`cannot read h2load's output:\n${out}`);
    const seconds_ = Number(finished[1]) / (finished[2] === "ms" ? 1000 : 1);
    const succeeded = Number(counts[4]);
    const failed = Number(counts[5]);
    const timeLines = out.trim().split("\n").slice(-1)[0] ?? "";
    const cpu = [...timeLines.matchAll(/(\d+)m([\d.]+)s/g)].reduce(
      (sum, [, minutes, secs]) => sum + (Number(minutes) * 60 + Number(secs)) * 1e6,
      0,
    );
    // Columns: start (µs since the epoch), HTTP status, µs until the end of the response.
    const failedStatuses: Record<string, number> = {};
    const latencies = readFileSync(logFile, "utf8")
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => {
        const [, status = "?", duration] = line.split("\t");
        if (status.startsWith("2")) return Number(duration);
        failedStatuses[status] = (failedStatuses[status] ?? 0) + 1;
        return Number.NaN;
      })
      .filter((value) => Number.isFinite(value))
      .sort((a, b) => a - b);
    const at = (q: number) =>
      Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0);
    return {
      requests: Number(counts[1]),
      succeeded,
      failed,
      seconds: seconds_,
      requestsPerSecond: Math.round(succeeded / seconds_),
      p50Us: at(0.5),
      p90Us: at(0.9),
      p99Us: at(0.99),
      generatorCpuUs: Math.round(cpu),
      failedStatuses,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface CheckedCall {
  /** The HTTP status (a Cloud Run front end refuses a call with 401, 403, 404, 429 …). */
  httpStatus: number;
  grpcStatus: string;
  messages: number;
  body: Buffer;
}

/**
 * One call made by hand the way h2load makes it: its HTTP and gRPC status and message count.
 * `tls`: options for an https:// target (node verifies the certificate by default); a call
 * with no answer within `timeoutMs` fails.
 */
export async function checkOnce(
  target: H2loadTarget,
  options: { tls?: SecureClientSessionOptions; timeoutMs?: number } = {},
): Promise<CheckedCall> {
  const url = new URL(target.url);
  const session = connect(url.origin, options.tls ?? {});
  const timeoutMs = options.timeoutMs ?? 30_000;
  const timer = setTimeout(
    () => session.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)),
    timeoutMs,
  );
  try {
    return await new Promise((resolve, reject) => {
      // A connection or TLS failure is the session's error (the request may never start).
      session.once("error", reject);
      const request = session.request({
        [h2.HTTP2_HEADER_METHOD]: "POST",
        [h2.HTTP2_HEADER_PATH]: url.pathname,
        ...target.headers,
      });
      const chunks: Buffer[] = [];
      let httpStatus = 0;
      let grpcStatus = "";
      request.on("response", (headers) => {
        httpStatus = Number(headers[h2.HTTP2_HEADER_STATUS] ?? 0);
        grpcStatus = String(headers["grpc-status"] ?? "");
      });
      request.on("trailers", (trailers) => {
        grpcStatus = `${trailers["grpc-status"]} ${trailers["grpc-message"] ?? ""}`.trim();
      });
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("error", reject);
      request.on("end", () => {
        const body = Buffer.concat(chunks);
        let messages = 0;
        if (httpStatus === 200) {
          for (let at = 0; at + 5 <= body.length; at += 5 + body.readUInt32BE(at + 1)) {
            messages += 1;
          }
        }
        resolve({ httpStatus, grpcStatus, messages, body });
      });
      request.end(target.body);
    });
  } finally {
    clearTimeout(timer);
    session.close();
  }
}
