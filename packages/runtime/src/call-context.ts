// The call being handled, visible anywhere in its handler's work (AsyncLocalStorage): its
// trace context, so log lines carry the trace without passing it around, and outgoing calls
// continue the same trace. The server's call observer (rpc-log.ts) sets it for every call.
import { AsyncLocalStorage } from "node:async_hooks";
import type { TraceContext } from "./trace.js";

export interface CallContext {
  /** The full method path, e.g. /routeguide.v1.RouteGuideService/GetFeature. */
  method: string;
  trace: TraceContext;
  /** Called once when the call has ended, with the status code its client was sent. */
  readonly endListeners: ((code: number) => void)[];
  /** The code the call ended with, once it has. */
  endedWith?: number;
  /** Whether the client has reset the call's stream (cancelled it, or its deadline passed). */
  readonly reset?: () => boolean;
  /**
   * Resolves once everything the client sent before acknowledging a PING sent now has been
   * read (client-read-barrier.ts); false when no PING could be acknowledged.
   */
  readonly readBarrier?: () => Promise<boolean>;
  /**
   * The caller's id for this call (x-call-id): the same on every retry of one call, so work a
   * call causes can be named after it and counted once.
   */
  readonly callId?: string;
}

const storage = new AsyncLocalStorage<CallContext>();

/** The call whose work is running now; undefined outside any call (start-up, timers). */
export function currentCall(): CallContext | undefined {
  return storage.getStore();
}

/** Runs `work` as part of `call`: its logs and outgoing calls belong to that call's trace. */
export function runInCall<T>(call: CallContext, work: () => T): T {
  return storage.run(call, work);
}

/**
 * Runs `listener` (in the call's context) once `call` (by default the current one) has ended,
 * with the status code actually sent: OK only if the answer went out, not when the client had
 * cancelled or the deadline had passed first; at once if it has already ended. False outside
 * any call (the listener is not kept). Handlers pass the context they captured when they
 * started: a stream event can fire in another call's async context.
 */
export function onCallEnd(
  listener: (code: number) => void,
  call: CallContext | undefined = storage.getStore(),
): boolean {
  if (!call) return false;
  if (call.endedWith !== undefined) storage.run(call, () => listener(call.endedWith as number));
  else call.endListeners.push(listener);
  return true;
}

/**
 * Whether the client has reset the stream of `call` (by default the current one). Node reports
 * a reset stream to grpc-js as the end of the request stream first and as a cancellation only
 * after, so a handler that sees the end of a client stream asks this before taking it as
 * complete, with the context it captured when it started.
 */
export function callWasReset(call: CallContext | undefined = storage.getStore()): boolean {
  return call?.reset?.() ?? false;
}

/** Runs `work` as no call's work: background work serving many calls starts its own trace. */
export function outsideAnyCall<T>(work: () => T): T {
  return storage.exit(work);
}

/**
 * The fields the logger turns into Cloud Logging's trace fields (OpenTelemetry's names, as
 * Google's own pino configuration reads them): pass them in a log object to log a line for a
 * trace other than the current call's.
 */
export interface TraceFields {
  trace_id: string;
  span_id: string;
  trace_flags: "01" | "00";
}

export function traceFields(trace: TraceContext): TraceFields {
  return {
    trace_id: trace.traceId,
    span_id: trace.spanId,
    trace_flags: trace.sampled ? "01" : "00",
  };
}
