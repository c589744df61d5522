import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  formatTraceparent,
  parseCloudTraceContext,
  parseTraceparent,
  traceForIncomingCall,
} from "../src/trace.js";

const trace = "4bf92f3577b34da6a3ce929d0e0e4736";
const span = "00f067aa0ba902b7";

describe("traceparent", () => {
  test("reads trace, parent span and the sampled flag", () => {
    assert.deepEqual(parseTraceparent(`00-${trace}-${span}-01`), {
      traceId: trace,
      parentSpanId: span,
      sampled: true,
    });
    assert.equal(parseTraceparent(`00-${trace}-${span}-00`)?.sampled, false);
    assert.equal(parseTraceparent(`00-${trace}-${span}-03`)?.sampled, true, "bit 0 only");
  });

  test("ignores what the spec says to ignore", () => {
    for (const bad of [
      undefined,
      "",
      `ff-${trace}-${span}-01`,
      `00-${"0".repeat(32)}-${span}-01`,
      `00-${trace}-${"0".repeat(16)}-01`,
      `00-${trace.toUpperCase()}-${span}-01`,
      `00-${trace}-${span}-01-extra`,
      `00-${trace.slice(1)}-${span}-01`,
    ]) {
      assert.equal(parseTraceparent(bad), undefined, String(bad));
    }
    // A later version may carry more fields.
    assert.equal(parseTraceparent(`01-${trace}-${span}-01-more`)?.traceId, trace);
  });
});

describe("X-Cloud-Trace-Context", () => {
  test("reads trace, the decimal span as 16 hex digits, and o=1", () => {
    assert.deepEqual(parseCloudTraceContext(`${trace}/74;o=1`), {
      traceId: trace,
      parentSpanId: "000000000000004a",
      sampled: true,
    });
    assert.deepEqual(parseCloudTraceContext(`${trace.toUpperCase()}`), {
      traceId: trace,
      sampled: false,
    });
    assert.equal(
      parseCloudTraceContext(`${trace}/18446744073709551615;o=0`)?.parentSpanId,
      "ffffffffffffffff",
    );
  });

  test("a span out of range is dropped, a malformed header ignored", () => {
    assert.equal(parseCloudTraceContext(`${trace}/18446744073709551616`)?.parentSpanId, undefined);
    assert.equal(parseCloudTraceContext(`${trace}/0;o=1`)?.parentSpanId, undefined);
    for (const bad of ["", "xyz/1;o=1", `${"0".repeat(32)}/5;o=1`, `${trace}/-1`, `${trace};o=2`]) {
      assert.equal(parseCloudTraceContext(bad), undefined, bad);
    }
  });
});

describe("a call's trace context", () => {
  test("keeps the incoming trace, prefers traceparent, and gets a span of its own", () => {
    const context = traceForIncomingCall({
      traceparent: `00-${trace}-${span}-01`,
      cloudTraceContext: `${"a".repeat(32)}/5;o=0`,
    });
    assert.equal(context.traceId, trace);
    assert.equal(context.parentSpanId, span);
    assert.equal(context.sampled, true);
    assert.match(context.spanId, /^[0-9a-f]{16}$/);
    assert.notEqual(context.spanId, span);
  });

  test("falls back to X-Cloud-Trace-Context, then starts a new trace", () => {
    assert.equal(
      traceForIncomingCall({ traceparent: "garbage", cloudTraceContext: `${trace}/5;o=1` }).traceId,
      trace,
    );
    const fresh = traceForIncomingCall({});
    assert.match(fresh.traceId, /^[0-9a-f]{32}$/);
    assert.equal(fresh.parentSpanId, undefined);
    assert.notEqual(traceForIncomingCall({}).traceId, fresh.traceId);
  });

  test("what is passed on reads back as the same trace with this call's span as parent", () => {
    const context = traceForIncomingCall({ traceparent: `00-${trace}-${span}-01` });
    assert.deepEqual(parseTraceparent(formatTraceparent(context)), {
      traceId: trace,
      parentSpanId: context.spanId,
      sampled: true,
    });
    assert.deepEqual(parseCloudTraceContext(`${trace}/${BigInt(`0x${context.spanId}`)};o=1`), {
      traceId: trace,
      parentSpanId: context.spanId,
      sampled: true,
    });
  });
});
