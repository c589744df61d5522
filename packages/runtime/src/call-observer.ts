// The call observer: the first server interceptor of every service (server.ts installs it,
// always, whatever logging is configured) and the only code that reads grpc-js's internals of
// a call (the one other read of grpc-js internals is server.ts's fallback for unknown methods,
// on the Server itself; call-observer.test.ts checks both are where they are read). For each
// call it
//   - makes the call's context (call-context.ts): its trace, the caller's x-call-id, and how to
//     ask whether the client reset the stream or what the client sent before a PING ack;
//   - runs every event of the call inside that context: grpc-js runs handlers outside an
//     interceptor's async context (unary handlers start from the half-close event, streaming
//     ones from the metadata event, stream callbacks from later events);
//   - learns how the call ended as its client saw it: the status grpc-js actually sent, or
//     CANCELLED / DEADLINE_EXCEEDED when the client reset the stream first;
//   - tells the call's own end listeners (onCallEnd: route counts answered calls there) and
//     then the server's subscriber (`onEnd`: the call log line);
//   - keeps the server's open calls (open-calls.ts), which a drain ends when its grace is over.
//
// What it reads of grpc-js (1.14, pinned exactly; call-observer.test.ts fails with a clear
// message if an upgrade moves any of it): the base server call's `stream` (the
// ServerHttp2Stream: `closed`, `destroyed`, `rstCode`, `session`), and its `sendStatus`, which
// every status passes, grpc-js's own included (deadline, oversized or undecodable message).
import type * as http2 from "node:http2";
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { type CallContext, runInCall } from "./call-context.js";
import { clientReadBarrier } from "./client-read-barrier.js";
import type { Logger } from "./logger.js";
import type { OpenCalls } from "./open-calls.js";
import { sampleTrace } from "./telemetry.js";
import { traceForIncomingCall } from "./trace.js";

/** How a call ended, for the server's subscriber. */
export interface EndedCall {
  /** The call's context; undefined only for a call that ended before its metadata. */
  context: CallContext | undefined;
  /** The full method path. */
  method: string;
  /** Whether the client streams its request (a route being recorded). */
  requestStream: boolean;
  /** Whether the server streams its answer (a watch, a listing). */
  responseStream: boolean;
  /** The status its client was sent: CANCELLED or DEADLINE_EXCEEDED when it reset first. */
  code: grpc.status;
  /** The status details sent, when the call did not end OK. */
  details: string | undefined;
  durationMs: number;
  /** The call's metadata as the handlers saw it (the verified caller included). */
  metadata: grpc.Metadata | undefined;
  /** The client's address, taken when the call started. */
  peer: string;
  /** Messages received from and sent to the client. */
  received: number;
  sent: number;
}

export interface CallObserverOptions {
  /** For a failing end listener (a bug): logged, and the others still run. */
  logger: Logger;
  /** Called once per call when it has ended, after the call's own end listeners. */
  onEnd?: (ended: EndedCall) => void;
  /** The server's open calls, for its drain: each call is in it from its start to its end. */
  openCalls?: OpenCalls;
}

/**
 * Each outgoing call carries an id of its own, which grpc-js's retries of it resend unchanged:
 * the callee names what the call causes after it (route's reports), so a retried call counts
 * once. Trace context cannot serve: a front end (Cloud Run's) may give every attempt its own
 * span. Sent by outgoing-calls.ts.
 */
export const callIdKey = "x-call-id";
const callIdPattern = /^[0-9a-f]{32}$/;

/** How far our view of a call's deadline may trail its client's (transit, queueing). */
const deadlineSkewMs = 100;

/** The grpc-js internals read here: the HTTP/2 stream under a server call. */
interface BaseStream {
  destroyed?: boolean;
  closed?: boolean;
  rstCode?: number;
  session?: http2.Http2Session;
}

function baseStream(call: grpc.ServerInterceptingCallInterface): BaseStream | undefined {
  return (call as { stream?: BaseStream }).stream;
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

/** The client-read barrier of the call's connection; false when grpc-js hides the session. */
function readBarrier(call: grpc.ServerInterceptingCallInterface): Promise<boolean> {
  const session = baseStream(call)?.session;
  return session ? clientReadBarrier(session) : Promise.resolve(false);
}

function firstString(metadata: grpc.Metadata, key: string): string | undefined {
  const [value] = metadata.get(key);
  return typeof value === "string" ? value : undefined;
}

// The context of each call, by the metadata object its handler receives (`call.metadata`):
// grpc-js passes the object the interceptors passed on, so a handler can ask for its own
// call's context explicitly (callContextOf) instead of reading ambient state.
const contexts = new WeakMap<grpc.Metadata, CallContext>();

/** The context of the call a handler serves (`callContextOf(call)`); undefined outside one. */
export function callContextOf(call: { metadata: grpc.Metadata }): CallContext | undefined {
  return contexts.get(call.metadata);
}

export function observeCalls(options: CallObserverOptions): grpc.ServerInterceptor {
  return (method, call) => {
    const startedAt = performance.now();
    const peer = call.getPeer();
    let context: CallContext | undefined;
    let metadata: grpc.Metadata | undefined;
    let received = 0;
    let sent = 0;
    let status: Parameters<grpc.ServerInterceptingCallInterface["sendStatus"]>[0] | undefined;
    let ended = false;

    // Every status this call ends with passes here: the handler's (through the interceptors
    // above this one) and the ones grpc-js sends itself, which no interceptor's sendStatus sees.
    // grpc-js drops a status sent after the client has reset the stream: not the end then.
    const sendStatus = call.sendStatus.bind(call);
    call.sendStatus = (final) => {
      if (status === undefined && !streamClosed(call)) status = final;
      sendStatus(final);
    };

    // grpc-js reports onCancel after every call, finished or not: the one place it ends.
    const finish = () => {
      if (ended) return;
      ended = true;
      options.openCalls?.delete(intercepting);
      const deadline = call.getDeadline();
      const deadlineAt = deadline instanceof Date ? deadline.getTime() : deadline;
      // No status sent: the client reset the stream. Its deadline passing does that too, and
      // our deadline (from grpc-timeout, on receipt) runs a little behind the client's clock.
      const timedOut = Number.isFinite(deadlineAt) && Date.now() >= deadlineAt - deadlineSkewMs;
      const noStatusCode = timedOut ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED;
      // A status taken by grpc-js can still be cut off: after response messages its trailers
      // wait for the data before them, and a reset meanwhile means the client never saw it.
      const answered = status !== undefined && !streamResetByClient(call);
      const code = answered ? (status?.code ?? grpc.status.OK) : noStatusCode;
      if (context) {
        context.endedWith = code;
        const { endListeners } = context;
        if (endListeners.length > 0) {
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
      }
      options.onEnd?.({
        context,
        method: method.path,
        requestStream: method.requestStream,
        responseStream: method.responseStream,
        code,
        details:
          code === grpc.status.OK
            ? undefined
            : answered
              ? status?.details
              : "the client cancelled or the deadline passed",
        durationMs: Math.round((performance.now() - startedAt) * 1000) / 1000,
        metadata,
        peer,
        received,
        sent,
      });
    };

    const inCall = (work: () => void) => (context ? runInCall(context, work) : work());
    const intercepting: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start(next) {
        options.openCalls?.add(intercepting);
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
              // Telemetry hook (issue 18): the sampling decision, before anything is sent on.
              trace: sampleTrace(
                traceForIncomingCall({
                  traceparent: firstString(incoming, "traceparent"),
                  cloudTraceContext: firstString(incoming, "x-cloud-trace-context"),
                }),
              ),
            };
            contexts.set(incoming, context);
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
    return intercepting;
  };
}
