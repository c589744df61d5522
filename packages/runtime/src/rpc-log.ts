// One log line per finished call, on both sides, in the trace of the request:
//
// - Server: `logIncomingCalls` is the first interceptor of every server. It reads the trace
//   context the call came with (or starts one), makes it the current call for everything the
//   handler does (its logs, the calls it makes), and when the call ends logs method, status,
//   duration, caller, peer and message counts.
// - Client: `logOutgoingCalls` is the first interceptor of every peer client. It sends the
//   current call's trace on (a new span under it) and logs the outgoing call's status and
//   latency.
//
// Under load the OK lines can be sampled down (LOG_RPC_SAMPLE_RATE); lines for calls that
// failed are always written. Health checks (probes) are logged at debug.
//
// grpc-js runs handlers outside an interceptor's async context (unary handlers start from
// the half-close event, streaming ones from the metadata event, stream callbacks from later
// events), so every event this interceptor passes on is passed inside the call's context.
import type * as http2 from "node:http2";
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { type CallContext, currentCall, runInCall, traceFields } from "./call-context.js";
import { clientReadBarrier } from "./client-read-barrier.js";
import type { Logger } from "./logger.js";
import type { TraceContext } from "./trace.js";
import {
  childSpan,
  formatTraceparent,
  newCallId,
  traceForIncomingCall,
  traceInSample,
} from "./trace.js";

export interface RpcLogOptions {
  logger: Logger;
  /** Share of OK calls logged, 0 to 1, decided per trace; failed calls are always logged. */
  sampleRate: number;
}

export interface IncomingRpcLogOptions extends RpcLogOptions {
  /** Who made the call, once the auth check has passed (e.g. the verified email). */
  callerOf?: (metadata: grpc.Metadata) => string | undefined;
}

/** How far our view of a call's deadline may trail its client's (transit, queueing). */
const deadlineSkewMs = 100;

const quietPaths = /^\/grpc\.(health\.v1\.Health|reflection\.v1(alpha)?\.ServerReflection)\//;

function firstString(metadata: grpc.Metadata, key: string): string | undefined {
  const [value] = metadata.get(key);
  return typeof value === "string" ? value : undefined;
}

function logLevelFor(path: string, code: grpc.status): "debug" | "info" | "warn" {
  if (code !== grpc.status.OK) return "warn";
  return quietPaths.test(path) ? "debug" : "info";
}

/**
 * The HTTP/2 stream under a server call. grpc-js has no public way to ask about it, so this
 * reads its base call's `stream`; without one (another grpc-js layout) the checks below answer
 * false, the old behaviour, and rpc-log.test.ts fails on its cancelled-call cases.
 */
interface BaseStream {
  destroyed?: boolean;
  closed?: boolean;
  rstCode?: number;
  session?: http2.Http2Session;
}

function baseStream(call: grpc.ServerInterceptingCallInterface): BaseStream | undefined {
  return (call as { stream?: BaseStream }).stream;
}

/** The client-read barrier of the call's connection; false when grpc-js hides the session. */
function readBarrier(call: grpc.ServerInterceptingCallInterface): Promise<boolean> {
  const session = baseStream(call)?.session;
  return session ? clientReadBarrier(session) : Promise.resolve(false);
}

/** Whether the stream is already closed (the client reset it), as grpc-js checks before a status. */
function streamClosed(call: grpc.ServerInterceptingCallInterface): boolean {
  const stream = baseStream(call);
  return Boolean(stream?.destroyed || stream?.closed);
}

/** Whether the client reset the stream (RST_STREAM with an error code), e.g. cancelled it. */
function streamResetByClient(call: grpc.ServerInterceptingCallInterface): boolean {
  return (baseStream(call)?.rstCode ?? 0) !== 0;
}

/**
 * Each outgoing call carries an id of its own, which grpc-js's retries of it resend unchanged:
 * the callee names what the call causes after it (route's reports), so a retried call counts
 * once. Trace context cannot serve: a front end (Cloud Run's) may give every attempt its own
 * span.
 */
export const callIdKey = "x-call-id";
const callIdPattern = /^[0-9a-f]{32}$/;

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

export function logIncomingCalls(options: IncomingRpcLogOptions): grpc.ServerInterceptor {
  const logger = callLineLogger(options.logger);
  return (method, call) => {
    const startedAt = performance.now();
    let context: CallContext | undefined;
    let metadata: grpc.Metadata | undefined;
    let received = 0;
    let sent = 0;
    let status: Parameters<grpc.ServerInterceptingCallInterface["sendStatus"]>[0] | undefined;
    let ended = false;

    // Every status this call ends with passes here: the handler's (through the interceptors
    // above this one) and the ones grpc-js sends itself (deadline, oversized or undecodable
    // message), which no interceptor's sendStatus sees.
    // grpc-js drops a status sent after the client has reset the stream: not the end then.
    const sendStatus = call.sendStatus.bind(call);
    call.sendStatus = (final) => {
      if (status === undefined && !streamClosed(call)) status = final;
      sendStatus(final);
    };

    // grpc-js reports onCancel after every call, finished or not: the one place to log.
    const finish = () => {
      if (ended) return;
      ended = true;
      const deadline = call.getDeadline();
      const deadlineAt = deadline instanceof Date ? deadline.getTime() : deadline;
      // No status sent: the client reset the stream. Its deadline passing does that too, and
      // our deadline (from grpc-timeout, on receipt) runs a little behind the client's clock.
      const timedOut = Number.isFinite(deadlineAt) && Date.now() >= deadlineAt - deadlineSkewMs;
      const noStatusCode = timedOut ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED;
      // A status taken by grpc-js can still be cut off: after response messages its trailers
      // wait for the data before them, and a reset meanwhile means the client never saw it.
      const code = status && !streamResetByClient(call) ? status.code : noStatusCode;
      if (context) context.endedWith = code;
      if (context && context.endListeners.length > 0) {
        const { endListeners } = context;
        runInCall(context, () => {
          for (const listener of endListeners) {
            try {
              listener(code);
            } catch (error) {
              options.logger.error(
                { err: error, method: method.path },
                "a call's end listener failed",
              );
            }
          }
        });
      }
      const level = logLevelFor(method.path, code);
      const trace = context?.trace;
      const sampledOut = trace && !traceInSample(trace.traceId, options.sampleRate);
      if (code === grpc.status.OK && sampledOut) return;
      if (!logger.isLevelEnabled(level)) return;
      writeCallLine(
        logger,
        level,
        trace,
        {
          side: "server",
          method: method.path,
          code: grpc.status[code],
          ...(code !== grpc.status.OK
            ? { details: status?.details ?? "the client cancelled or the deadline passed" }
            : {}),
          durationMs: elapsedMs(startedAt),
          caller: (metadata && options.callerOf?.(metadata)) || undefined,
          peer: call.getPeer(),
          received,
          sent,
        },
        `${method.path} ${grpc.status[code]}`,
      );
    };

    const inCall = (work: () => void) => (context ? runInCall(context, work) : work());
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(incoming, pass) {
            metadata = incoming;
            const callId = firstString(incoming, callIdKey);
            context = {
              endListeners: [],
              reset: () => streamClosed(call),
              readBarrier: () => readBarrier(call),
              ...(callId && callIdPattern.test(callId) ? { callId } : {}),
              method: method.path,
              trace: traceForIncomingCall({
                traceparent: firstString(incoming, "traceparent"),
                cloudTraceContext: firstString(incoming, "x-cloud-trace-context"),
              }),
            };
            inCall(() => pass(incoming));
          },
          onReceiveMessage(message, pass) {
            received += 1;
            inCall(() => pass(message));
          },
          onReceiveHalfClose(pass) {
            inCall(pass);
          },
          onCancel() {
            finish();
          },
        });
      },
      sendMessage(message, pass) {
        sent += 1;
        pass(message);
      },
    });
  };
}

/** For the client of `peer` (a name for the logs, e.g. "route"). */
export function logOutgoingCalls(peer: string, options: RpcLogOptions): grpc.Interceptor {
  const logger = callLineLogger(options.logger);
  return (callOptions, nextCall) => {
    // Runs synchronously where the call is made, so the caller's call context is current.
    const trace = childSpan(currentCall()?.trace);
    const method = callOptions.method_definition.path;
    const startedAt = performance.now();
    let received = 0;
    let sent = 0;
    return new grpc.InterceptingCall(nextCall(callOptions), {
      start(metadata, _listener, next) {
        metadata.set("traceparent", formatTraceparent(trace));
        metadata.set(callIdKey, newCallId());
        next(metadata, {
          onReceiveMessage(message, pass) {
            received += 1;
            pass(message);
          },
          onReceiveStatus(status, pass) {
            const ok = status.code === grpc.status.OK;
            const level = ok ? "info" : "warn";
            if (
              (ok && !traceInSample(trace.traceId, options.sampleRate)) ||
              !logger.isLevelEnabled(level)
            ) {
              pass(status);
              return;
            }
            writeCallLine(
              logger,
              level,
              trace,
              {
                side: "client",
                peer,
                method,
                code: grpc.status[status.code],
                ...(ok ? {} : { details: status.details }),
                durationMs: elapsedMs(startedAt),
                received,
                sent,
              },
              `→ ${peer} ${method} ${grpc.status[status.code]}`,
            );
            pass(status);
          },
        });
      },
      sendMessage(message, pass) {
        sent += 1;
        pass(message);
      },
    });
  };
}
