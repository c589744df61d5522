// Trace context as it arrives on a call and as it is passed on (first step of the
// observability work): W3C `traceparent` (00-<32 hex trace>-<16 hex span>-<2 hex flags>), or
// Google's older `x-cloud-trace-context` (<32 hex trace>/<decimal span>;o=<0|1>). Each call
// handled gets a span of its own under the incoming trace; a call without one starts a trace.
// Cloud Logging wants the span id as 16 hex digits, so the decimal form is converted.
import { randomFillSync } from "node:crypto";

export interface TraceContext {
  /** 32 lowercase hex digits, not all zero. */
  traceId: string;
  /** This call's span: 16 lowercase hex digits, not all zero. */
  spanId: string;
  /** The span of the caller, when the call came with one. */
  parentSpanId?: string;
  sampled: boolean;
}

const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const cloudTracePattern = /^([0-9a-fA-F]{32})(?:\/(\d{1,20}))?(?:;o=([01]))?$/;
const allZero = /^0+$/;

// Ids come from a pool of random bytes filled 4 KiB at a time: asking the CSPRNG for 8 bytes
// per id was a tenth of a busy gateway's CPU.
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

/** A random id of `bytes` bytes as hex, never all zero. */
function randomHex(bytes: number): string {
  for (;;) {
    if (poolOffset + bytes > pool.length) {
      randomFillSync(pool);
      poolOffset = 0;
    }
    const id = pool.toString("hex", poolOffset, poolOffset + bytes);
    poolOffset += bytes;
    if (!allZero.test(id)) return id;
  }
}

/** Reads a W3C traceparent header; undefined when absent or malformed (the spec: ignore it). */
export function parseTraceparent(
  value: string | undefined,
): Omit<TraceContext, "spanId"> | undefined {
  const match = traceparentPattern.exec(value?.trim() ?? "");
  if (!match) return undefined;
  const [, version, traceId, parentSpanId, flags, rest] = match as unknown as string[];
  // Version ff is invalid; version 00 has nothing after the flags.
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (allZero.test(traceId as string) || allZero.test(parentSpanId as string)) return undefined;
  return {
    traceId: traceId as string,
    parentSpanId: parentSpanId as string,
    sampled: (Number.parseInt(flags as string, 16) & 1) === 1,
  };
}

/** Reads X-Cloud-Trace-Context (`TRACE/SPAN;o=1`, span in decimal); undefined when malformed. */
export function parseCloudTraceContext(
  value: string | undefined,
): Omit<TraceContext, "spanId"> | undefined {
  const match = cloudTracePattern.exec(value?.trim() ?? "");
  if (!match) return undefined;
  const [, traceId, decimalSpan, option] = match;
  if (allZero.test(traceId as string)) return undefined;
  let parentSpanId: string | undefined;
  if (decimalSpan !== undefined) {
    const span = BigInt(decimalSpan);
    if (span > 0n && span < 2n ** 64n) parentSpanId = span.toString(16).padStart(16, "0");
  }
  return {
    traceId: (traceId as string).toLowerCase(),
    ...(parentSpanId ? { parentSpanId } : {}),
    sampled: option === "1",
  };
}

/**
 * The context of a call being handled: the incoming trace (traceparent first, then
 * x-cloud-trace-context) with a new span for this call, or a new trace when neither is usable.
 */
export function traceForIncomingCall(headers: {
  traceparent?: string | undefined;
  cloudTraceContext?: string | undefined;
}): TraceContext {
  const incoming =
    parseTraceparent(headers.traceparent) ?? parseCloudTraceContext(headers.cloudTraceContext);
  if (incoming) return { ...incoming, spanId: randomHex(8) };
  return { traceId: randomHex(16), spanId: randomHex(8), sampled: false };
}

/** The traceparent to send on a call made within `context` (its span is the parent). */
export function formatTraceparent(context: TraceContext): string {
  return `00-${context.traceId}-${context.spanId}-${context.sampled ? "01" : "00"}`;
}

/** A new span for a call made within `parent`, or the first span of a new trace. */
export function childSpan(parent: TraceContext | undefined): TraceContext {
  if (!parent) return { traceId: randomHex(16), spanId: randomHex(8), sampled: false };
  return {
    traceId: parent.traceId,
    spanId: randomHex(8),
    parentSpanId: parent.spanId,
    sampled: parent.sampled,
  };
}

/**
 * Whether a trace is in a sample of `rate` (0 to 1). Decided by the trace id alone, so every
 * service keeps or drops the same traces: a sampled request is logged whole on every hop.
 */
export function traceInSample(traceId: string, rate: number): boolean {
  if (rate >= 1) return true;
  if (rate <= 0) return false;
  return Number.parseInt(traceId.slice(-8), 16) / 2 ** 32 < rate;
}

/** A fresh id for one outgoing call (x-call-id): 32 hex digits, repeated by its retries. */
export function newCallId(): string {
  return randomHex(16);
}
