// One log line per finished call, on both sides, in the trace of the request:
//
// - Server: `logCallEnds` subscribes to the call observer (call-observer.ts), which tells it
//   how each call ended as its client saw it: method, status, duration, caller, peer and
//   message counts.
// - Client: `outgoingCallLines` writes the line of each peer call, for the one interceptor of
//   peer calls (outgoing-calls.ts): the outgoing call's status and latency, in the span it sent.
//
// Under load the OK lines can be sampled down (LOG_RPC_SAMPLE_RATE); lines for calls that
// failed are always written. Health checks (probes) are logged at debug.
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { traceFields } from "./call-context.js";
import type { EndedCall } from "./call-observer.js";
import type { ServerEnv } from "./config.js";
import type { Logger } from "./logger.js";
import { type TraceContext, traceInSample } from "./trace.js";

export interface RpcLogOptions {
  logger: Logger;
  /**
   * Share of traces whose OK calls get a line, 0 to 1, decided per trace. Failed calls, slow
   * unary calls and calls in a trace whose caller sampled it are always logged.
   */
  sampleRate: number;
  /** A unary call that took this long or longer is logged whatever the sample (default 500). */
  slowMs?: number;
}

/** LOG_RPC_SLOW_MS's default. */
export const defaultSlowCallMs = 500;

/** A service's call-line options, from its config (the server's lines and its peers'). */
export function rpcLogOptions(
  config: Pick<ServerEnv, "LOG_RPC_SAMPLE_RATE" | "LOG_RPC_SLOW_MS">,
  logger: Logger,
): RpcLogOptions {
  return { logger, sampleRate: config.LOG_RPC_SAMPLE_RATE, slowMs: config.LOG_RPC_SLOW_MS };
}

export interface IncomingRpcLogOptions extends RpcLogOptions {
  /** Who made the call, once the auth check has passed (e.g. the verified email). */
  callerOf?: (metadata: grpc.Metadata) => string | undefined;
}

const quietPaths = /^\/grpc\.(health\.v1\.Health|reflection\.v1(alpha)?\.ServerReflection)\//;
const healthPaths = /^\/grpc\.health\.v1\.Health\//;

/**
 * Failed calls are warnings, with two exceptions that are how things normally go: health
 * checks (probes, NOT_FOUND for a name not served included: debug, like their OK), and a
 * client cancelling a stream it was reading (a watch ends that way: info).
 */
function logLevelFor(
  path: string,
  code: grpc.status,
  responseStream: boolean,
): "debug" | "info" | "warn" {
  if (healthPaths.test(path)) return "debug";
  if (code === grpc.status.CANCELLED && responseStream) return "info";
  if (code !== grpc.status.OK) return "warn";
  return quietPaths.test(path) ? "debug" : "info";
}

/**
 * Whether an OK call (or a quiet failure: a cancelled watch, a probe) gets its line. Cloud Run
 * already writes a request log entry for every request to a service, with its latency and
 * HTTP status (https://cloud.google.com/run/docs/logging, "Request logs"), so a line for
 * every OK call repeats it at about 40 µs of the gateway's CPU per call (bench/PERFORMANCE.md).
 * The lines kept are the ones that say more: the calls of a trace its caller sampled (Cloud
 * Trace shows it; its lines link to it), a share of the other traces, decided by the trace id
 * so a kept request is logged whole on every hop, and every unary call slower than `slowMs`.
 */
function keepOkLine(
  trace: TraceContext | undefined,
  options: RpcLogOptions,
  unary: boolean,
  durationMs: number,
): boolean {
  if (!trace || trace.sampled || traceInSample(trace.traceId, options.sampleRate)) return true;
  return unary && durationMs >= (options.slowMs ?? defaultSlowCallMs);
}

/** Writes one call line: the call's trace, and what `rpc` says of the call. */
function writeCallLine(
  logger: Logger,
  level: "debug" | "info" | "warn",
  trace: TraceContext | undefined,
  rpc: Record<string, unknown>,
  message: string,
): void {
  const parent = trace?.parentSpanId ? { parentSpanId: trace.parentSpanId } : {};
  logger[level]({ ...(trace ? traceFields(trace) : {}), rpc: { ...rpc, ...parent } }, message);
}

/** Milliseconds since `startedAt` (performance.now()), to the microsecond. */
function elapsedMs(startedAt: number): number {
  return Math.round((performance.now() - startedAt) * 1000) / 1000;
}

/**
 * The logger for the call lines: they hold only what this file puts in them (method, status,
 * timings, the verified caller's email, the peer's address), never a secret, so they skip the
 * redaction pass, which was half the cost of a line.
 */
function callLineLogger(logger: Logger): Logger {
  return logger.child({}, { redact: { paths: [] } });
}

/** The server's call lines: a subscriber for the call observer's `onEnd`. */
export function logCallEnds(options: IncomingRpcLogOptions): (ended: EndedCall) => void {
  const logger = callLineLogger(options.logger);
  return (ended) => {
    const { code, method } = ended;
    const level = logLevelFor(method, code, ended.responseStream);
    const trace = ended.context?.trace;
    const unary = !ended.requestStream && !ended.responseStream;
    if (code === grpc.status.OK && !keepOkLine(trace, options, unary, ended.durationMs)) return;
    if (!logger.isLevelEnabled(level)) return;
    writeCallLine(
      logger,
      level,
      trace,
      {
        side: "server",
        method,
        code: grpc.status[code],
        ...(code !== grpc.status.OK ? { details: ended.details } : {}),
        durationMs: ended.durationMs,
        caller: (ended.metadata && options.callerOf?.(ended.metadata)) || undefined,
        peer: ended.peer,
        received: ended.received,
        sent: ended.sent,
      },
      `${method} ${grpc.status[code]}`,
    );
  };
}

export interface OutgoingCallEnd {
  /** The outgoing call's own span, as sent in its traceparent. */
  trace: TraceContext;
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  status: grpc.StatusObject;
  /** performance.now() when the call was made. */
  startedAt: number;
  received: number;
  sent: number;
}

/**
 * The client lines of the calls to `peer` (a name for the logs, e.g. "route"), for
 * outgoing-calls.ts, which calls the writer once per call when its status arrives.
 */
export function outgoingCallLines(
  peer: string,
  options: RpcLogOptions,
): (ended: OutgoingCallEnd) => void {
  const logger = callLineLogger(options.logger);
  return ({ trace, path, requestStream, responseStream, status, startedAt, received, sent }) => {
    const ok = status.code === grpc.status.OK;
    const level = ok ? "info" : logLevelFor(path, status.code, responseStream);
    if (!logger.isLevelEnabled(level)) return;
    const durationMs = elapsedMs(startedAt);
    const unary = !requestStream && !responseStream;
    if (level !== "warn" && !keepOkLine(trace, options, unary, durationMs)) return;
    writeCallLine(
      logger,
      level,
      trace,
      {
        side: "client",
        peer,
        method: path,
        code: grpc.status[status.code],
        ...(ok ? {} : { details: status.details }),
        durationMs,
        received,
        sent,
      },
      `→ ${peer} ${path} ${grpc.status[status.code]}`,
    );
  };
}
