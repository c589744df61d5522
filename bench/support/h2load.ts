// Load from h2load (Debian's nghttp2-client), a C load generator that costs a fraction of the
// CPU of a Node client: gRPC over h2c is a POST with a body of 5-byte-prefixed messages and
// `content-type: application/grpc`, `te: trailers`, which h2load sends as it is. Its
// per-request log (--log-file) gives the latencies; bash's `times` its own CPU.
// HTTP status is all h2load sees (a gRPC error is a 200 with grpc-status in the trailers), so
// callers check gRPC outcomes elsewhere (the services' own logs of failed calls).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, constants as h2 } from "node:http2";
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
}

/**
 * Runs h2load for `seconds` at `concurrency` requests in flight: over h2c one connection with
 * that many streams (as a gRPC channel multiplexes), over HTTP/1.1 that many connections.
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
        : ["-c", "1", "-m", String(concurrency)]),
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
    const latencies = readFileSync(logFile, "utf8")
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => {
        const [, status, duration] = line.split("\t");
        return status?.startsWith("2") ? Number(duration) : Number.NaN;
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
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * One call made by hand over h2c the way h2load makes it, to check an answer before measuring:
 * its HTTP status, its gRPC status (headers or trailers; empty for a plain HTTP answer), the
 * number of 5-byte-prefixed messages its body holds, and the body.
 */
export async function checkOnce(
  target: H2loadTarget,
): Promise<{ httpStatus: number; grpcStatus: string; messages: number; body: Buffer }> {
  const url = new URL(target.url);
  const session = connect(url.origin);
  try {
    return await new Promise((resolve, reject) => {
      const request = session.request({
        [h2.HTTP2_HEADER_METHOD]: "POST",
        [h2.HTTP2_HEADER_PATH]: url.pathname,
        ...target.headers,
      });
      const chunks: Buffer[] = [];
      let httpStatus = 0;
      let grpcStatus = "";
      request.on("response", (headers) => {
        httpStatus = Number(headers[h2.HTTP2_HEADER_STATUS]);
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
        for (let at = 0; at + 5 <= body.length; at += 5 + body.readUInt32BE(at + 1)) messages += 1;
        resolve({ httpStatus, grpcStatus, messages, body });
      });
      request.end(target.body);
    });
  } finally {
    session.close();
  }
}
