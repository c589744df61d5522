// What every outgoing peer call carries of the call it is made for: the trace (traceparent,
// with a new span under the current call's), and an id of its own (x-call-id), which grpc-js
// resends unchanged on every retry of the call, so the callee can name what the call causes
// after it and count a retried call once (call-observer.ts reads it on the other side).
// The first client interceptor of every peer channel; logging comes after it and reads the
// span it sent.
import * as grpc from "@grpc/grpc-js";
import { currentCall } from "./call-context.js";
import { callIdKey } from "./call-observer.js";
import { observeOutgoingCall, sampleTrace } from "./telemetry.js";
import { childSpan, formatTraceparent, newCallId } from "./trace.js";

export function propagateCallContext(): grpc.Interceptor {
  return (callOptions, nextCall) => {
    // Runs synchronously where the call is made, so the caller's call context is current.
    const trace = childSpan(currentCall()?.trace);
    // Telemetry hook (issue 18): the sampling decision of a new trace, and the listener that
    // records this call's span and duration at its status (undefined: nothing to record).
    const observer = observeOutgoingCall(sampleTrace(trace), callOptions.method_definition.path);
    return new grpc.InterceptingCall(nextCall(callOptions), {
      start(metadata, listener, next) {
        metadata.set("traceparent", formatTraceparent(trace));
        metadata.set(callIdKey, newCallId());
        next(metadata, observer ?? listener);
      },
    });
  };
}
