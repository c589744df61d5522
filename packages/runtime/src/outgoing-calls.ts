// Every peer call a service makes passes one client interceptor, this one, which does in a
// single pass over the call what the call needs:
//   - the trace: `traceparent` with a new span under the current call's;
//   - an id of its own (`x-call-id`), which grpc-js's retries of the call resend unchanged, so
//     the callee can name what the call causes after it and count a retried call once
//     (call-observer.ts reads it on the other side);
//   - the service's own headers (the gateway names its end user) and the peer's ID token;
//   - the call's client line (rpc-log.ts): its status and latency, in the span it sent;
//   - its span and duration metric (telemetry.ts), when telemetry is on.
// These were four interceptors, each a grpc-js InterceptingCall layer per call (a listener
// object, closures, the metadata and every message handed down once more), and the call line
// parsed back the traceparent the layer above had just formatted (issue 17: one pass per call
// per hop).
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { currentCall } from "./call-context.js";
import { callIdKey } from "./call-observer.js";
import { outgoingCallLines, type RpcLogOptions } from "./rpc-log.js";
import { observeOutgoingCall, sampleTrace } from "./telemetry.js";
import { childSpan, formatTraceparent, newCallId } from "./trace.js";

/** The ID token a peer's calls carry (auth-client's `peerToken`). */
export interface PeerCallToken {
  /**
   * For a call made now: what sets the token's headers, when a valid token is at hand (the
   * usual case, no promise and no timer); undefined when the call has to wait for one.
   */
  ready(): ((metadata: grpc.Metadata) => void) | undefined;
  /** For a call made with no token at hand: an interceptor that waits for one, within the call's deadline. */
  waiting: grpc.Interceptor;
}

export interface OutgoingCallOptions {
  /** The peer's name in the call lines, e.g. "route". */
  peer: string;
  rpcLog: RpcLogOptions;
  /** Headers of the service's own, set after the trace and before the token (the end user). */
  headers?: (metadata: grpc.Metadata, callOptions: grpc.InterceptorOptions) => void;
  /** The peer's ID token; none with AUTH_MODE=off. */
  token?: PeerCallToken;
}

export function outgoingCalls(options: OutgoingCallOptions): grpc.Interceptor {
  const { headers, token } = options;
  const writeLine = outgoingCallLines(options.peer, options.rpcLog);
  return (callOptions, nextCall) => {
    // Runs synchronously where the call is made, so the caller's call context is current.
    // A new trace is sampled (or not) here, so the traceparent sent carries the decision.
    const trace = sampleTrace(childSpan(currentCall()?.trace));
    const { path, requestStream, responseStream } = callOptions.method_definition;
    // The call's span and duration (telemetry.ts), when there is something to record.
    const recordEnd = observeOutgoingCall(trace, path);
    const startedAt = performance.now();
    const attachToken = token?.ready();
    // Without a token at hand, the token's own interceptor runs under this one and waits.
    const inner =
      token && !attachToken ? token.waiting(callOptions, nextCall) : nextCall(callOptions);
    let received = 0;
    let sent = 0;
    return new grpc.InterceptingCall(inner, {
      start(metadata, _listener, next) {
        metadata.set("traceparent", formatTraceparent(trace));
        metadata.set(callIdKey, newCallId());
        headers?.(metadata, callOptions);
        attachToken?.(metadata);
        next(metadata, {
          onReceiveMessage(message, pass) {
            received += 1;
            pass(message);
          },
          onReceiveStatus(status, pass) {
            writeLine({
              trace,
              path,
              requestStream,
              responseStream,
              status,
              startedAt,
              received,
              sent,
            });
            recordEnd?.(status);
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
