import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StatsServiceClient, stats } from "@cloudrun-grpc/proto";
import { idempotentEventId, runInCall, silentLogger } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { type NewEvent, type ReporterOptions, StatsReporter } from "../src/stats-reporter.js";

const logger = silentLogger();
const options: ReporterOptions = {
  maxQueued: 100,
  maxBatch: 500,
  batchTimeoutMs: 1_000,
  maxBackoffMs: 20,
};

interface Call {
  events: stats.Event[];
  failed: boolean;
  /** The indices of the events the call refused (as stats does: the call itself succeeds). */
  rejected: number[];
}

/**
 * A stats client implementing only RecordEvents. Whether a call fails is decided when it is
 * made (by `failing`); the answer comes asynchronously, as from the network.
 */
class FakeStats {
  failing = false;
  /** An event from a caller starting with this is refused, as stats refuses an invalid one: in the response. */
  rejectCaller: string | undefined;
  readonly calls: Call[] = [];

  RecordEvents(
    request: stats.RecordEventsRequest,
    _metadata: grpc.Metadata,
    _options: grpc.CallOptions,
    callback: grpc.requestCallback<stats.RecordEventsResponse__Output>,
  ): void {
    const events = request.events ?? [];
    const rejected = events.flatMap((event, index) =>
      this.rejectCaller !== undefined && event.caller?.startsWith(this.rejectCaller) ? [index] : [],
    );
    const call: Call = { events, failed: this.failing, rejected };
    this.calls.push(call);
    setImmediate(() => {
      if (call.failed) {
        const error = Object.assign(new Error("14 UNAVAILABLE: stats is down"), {
          code: grpc.status.UNAVAILABLE,
          details: "stats is down",
          metadata: new grpc.Metadata(),
        });
        callback(error);
      } else {
        callback(null, {
          accepted: call.events.length - rejected.length,
          duplicates: 0,
          rejected: rejected.map((index) => ({
            index,
            field: `events[${index}].caller`,
            description: `events[${index}].caller is not allowed`,
          })),
        });
      }
    });
  }

  get client(): StatsServiceClient {
    return this as unknown as StatsServiceClient;
  }

  /**
   * The calls counted by the batches that succeeded, in the order they were sent: an event
   * that sums several calls counts as each of them (see callsOf).
   */
  get delivered(): stats.Event[] {
    return this.calls
      .filter((call) => !call.failed)
      .flatMap((call) =>
        call.events.filter((_, index) => !call.rejected.includes(index)).flatMap(callsOf),
      );
  }
}

/**
 * An event as the calls it stands for, each with the id stats counts it by: its own (call_ids)
 * or, for the others, the event's (see Event.calls in stats.proto).
 */
function callsOf(event: stats.Event): stats.Event[] {
  const { calls, callIds, ...one } = event;
  const named = callIds ?? [];
  const anonymous = Math.max(1, calls ?? 0) - named.length;
  return [
    ...named.map((id) => ({ ...one, id })),
    ...Array.from({ length: anonymous }, () => ({ ...one })),
  ];
}

/** An event told apart by its caller field. */
const event = (name: string): NewEvent => ({
  caller: name,
  featureLookedUp: { feature: { name, location: { latitude: 1, longitude: 2 } } },
});

/** Waits (bounded) until `condition` holds. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const giveUpAt = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > giveUpAt) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe("StatsReporter", () => {
  test("sends every event once, in order, each with its own id", async () => {
    const fake = new FakeStats();
    const reporter = new StatsReporter(fake.client, logger, options);
    const names = Array.from({ length: 20 }, (_, i) => `e${i}`);
    for (const name of names) reporter.report(event(name));

    assert.equal(await reporter.flush(5_000), 0);
    assert.equal(reporter.pending, 0);
    const delivered = fake.delivered;
    assert.deepEqual(
      delivered.map((sent) => sent.caller),
      names,
    );
    assert.deepEqual(delivered[0]?.featureLookedUp, event("e0").featureLookedUp);
    const ids = delivered.map((sent) => sent.id);
    for (const id of ids) assert.ok(typeof id === "string" && id.length > 0);
    assert.equal(new Set(ids).size, names.length);
  });

  test("batches hold at most maxBatch events", async () => {
    const fake = new FakeStats();
    const reporter = new StatsReporter(fake.client, logger, { ...options, maxBatch: 3 });
    const names = Array.from({ length: 11 }, (_, i) => `e${i}`);
    for (const name of names) reporter.report(event(name));

    assert.equal(await reporter.flush(5_000), 0);
    const sizes = fake.calls.map((call) => call.events.length);
    assert.ok(
      sizes.every((size) => size >= 1 && size <= 3),
      `batch sizes ${sizes}`,
    );
    // Events reported while a batch was in flight went out together, not one by one.
    assert.ok(sizes.includes(3), `batch sizes ${sizes}`);
    assert.deepEqual(
      fake.delivered.map((sent) => sent.caller),
      names,
    );
  });

  test("each call carries a deadline of batchTimeoutMs and waits for the channel", async () => {
    const deadlines: number[] = [];
    const waitsForReady: boolean[] = [];
    const fake = new FakeStats();
    const client = {
      RecordEvents: (
        request: stats.RecordEventsRequest,
        metadata: grpc.Metadata,
        callOptions: grpc.CallOptions,
        callback: grpc.requestCallback<stats.RecordEventsResponse__Output>,
      ) => {
        deadlines.push(Number(callOptions.deadline) - Date.now());
        // Batches wait for the channel to be ready rather than failing while it reconnects.
        waitsForReady.push(metadata.getOptions().waitForReady === true);
        fake.RecordEvents(request, metadata, callOptions, callback);
      },
    } as unknown as StatsServiceClient;
    const reporter = new StatsReporter(client, logger, options);
    reporter.report(event("e0"));
    assert.equal(await reporter.flush(5_000), 0);
    assert.equal(deadlines.length, 1);
    assert.ok(
      (deadlines[0] ?? 0) > 0 && (deadlines[0] ?? 0) <= options.batchTimeoutMs,
      `${deadlines}`,
    );
  });

  test("on a failing client events stay queued and are retried with the same ids", async () => {
    const fake = new FakeStats();
    fake.failing = true;
    const reporter = new StatsReporter(fake.client, logger, options);
    for (const name of ["a", "b", "c"]) reporter.report(event(name));

    await until(() => fake.calls.length >= 2, "the first batch was retried");
    assert.equal(reporter.pending, 3);
    fake.failing = false;
    await until(() => reporter.pending === 0, "the queue drained");

    const failedIds = fake.calls.filter((call) => call.failed).flatMap((call) => call.events);
    const delivered = fake.delivered;
    assert.deepEqual(
      delivered.map((sent) => sent.caller),
      ["a", "b", "c"],
    );
    // Every failed event went out again under the id it had before.
    const deliveredIdByCaller = new Map(delivered.map((sent) => [sent.caller, sent.id]));
    assert.ok(failedIds.length >= 2);
    for (const failed of failedIds) assert.equal(failed.id, deliveredIdByCaller.get(failed.caller));
  });

  test("when the queue is full the oldest events are dropped", async () => {
    const fake = new FakeStats();
    fake.failing = true;
    const reporter = new StatsReporter(fake.client, logger, { ...options, maxQueued: 3 });
    for (const name of ["e1", "e2", "e3", "e4", "e5"]) reporter.report(event(name));
    assert.equal(reporter.pending, 3);

    fake.failing = false;
    assert.equal(await reporter.flush(5_000), 0);
    assert.deepEqual(
      fake.delivered.map((sent) => sent.caller),
      ["e3", "e4", "e5"],
    );
  });

  test("flush resolves with 0 at once when nothing is queued", async () => {
    const fake = new FakeStats();
    const reporter = new StatsReporter(fake.client, logger, options);
    assert.equal(await reporter.flush(60_000), 0);
    assert.equal(fake.calls.length, 0);
  });

  test("flush resolves with the count still queued when the client keeps failing", async () => {
    const fake = new FakeStats();
    fake.failing = true;
    const reporter = new StatsReporter(fake.client, logger, options);
    for (const name of ["a", "b", "c", "d"]) reporter.report(event(name));

    assert.equal(await reporter.flush(100), 4);
    assert.equal(reporter.pending, 4);
    assert.equal(fake.delivered.length, 0);

    // Once stats answers again, a flush sends them all (and stops the retry timer).
    fake.failing = false;
    assert.equal(await reporter.flush(5_000), 0);
    assert.equal(fake.delivered.length, 4);
  });

  test("events stats rejects as invalid are dropped with their batch, never sent again; the others all arrive", async () => {
    const fake = new FakeStats();
    fake.rejectCaller = "bad";
    const reporter = new StatsReporter(fake.client, logger, { ...options, maxBatch: 8 });
    // Two bad reports that differ (alike, they would be one event: see the aggregation tests).
    const names = Array.from({ length: 20 }, (_, i) => (i === 3 || i === 13 ? `bad${i}` : `e${i}`));
    for (const name of names) reporter.report(event(name));
    assert.equal(await reporter.flush(5_000), 0);
    assert.deepEqual(
      fake.delivered.map((delivered) => delivered.caller),
      names.filter((name) => !name.startsWith("bad")),
    );
    // Each event went out once: a rejection needs no second call.
    const sent = fake.calls.flatMap((call) => call.events.flatMap(callsOf));
    assert.equal(sent.length, names.length);
    assert.equal(fake.calls.filter((call) => call.rejected.length > 0).length, 2);
  });

  test("an INVALID_ARGUMENT for the whole batch is retried like any failure, nothing dropped", async () => {
    let vagueRejections = 2;
    const calls: stats.Event[][] = [];
    const client = {
      RecordEvents(
        request: stats.RecordEventsRequest,
        _metadata: grpc.Metadata,
        _options: grpc.CallOptions,
        callback: grpc.requestCallback<stats.RecordEventsResponse__Output>,
      ) {
        calls.push(request.events ?? []);
        setImmediate(() => {
          if (vagueRejections-- > 0) {
            callback(
              Object.assign(new Error("3 INVALID_ARGUMENT: nope"), {
                code: grpc.status.INVALID_ARGUMENT,
                details: "nope",
                metadata: new grpc.Metadata(),
              }),
            );
          } else {
            callback(null, { accepted: request.events?.length ?? 0, duplicates: 0, rejected: [] });
          }
        });
      },
    } as unknown as StatsServiceClient;
    const reporter = new StatsReporter(client, logger, options);
    for (const name of ["a", "b", "c"]) reporter.report(event(name));
    assert.equal(await reporter.flush(5_000), 0);
    assert.deepEqual(
      calls.at(-1)?.map((sent) => sent.caller),
      ["a", "b", "c"],
    );
    assert.equal(calls.length, 3);
  });

  test("an event reported for a call is named after the caller's call id and its kind: a retried call's event has the same id, and carries its trace", async () => {
    const fake = new FakeStats();
    const reporter = new StatsReporter(fake.client, logger, options);
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const callA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    // Two attempts of one call (a retry resends its x-call-id; a front end may give each its
    // own span), each served by route with a span of its own; then another call; then a route
    // recorded under the first call's id (another kind); then no call at all.
    const attempt = (spanId: string, callId: string, reported: NewEvent) =>
      runInCall(
        {
          method: "/x/GetFeature",
          trace: { traceId, spanId, parentSpanId: spanId, sampled: true },
          endListeners: [],
          callId,
        },
        () => reporter.report(reported),
      );
    attempt("1111111111111111", callA, event("x"));
    assert.equal(await reporter.flush(5_000), 0);
    attempt("2222222222222222", callA, event("x"));
    assert.equal(await reporter.flush(5_000), 0);
    attempt("3333333333333333", "b".repeat(32), event("x"));
    attempt("4444444444444444", callA, {
      caller: "x",
      routeRecorded: {
        summary: { pointCount: 1, featureCount: 0, distanceMeters: 0, elapsedSeconds: 0 },
      },
    });
    reporter.report(event("y"));
    assert.equal(await reporter.flush(5_000), 0);
    const [first, retry, other, route, outside] = fake.delivered;
    assert.equal(first?.id, `${callA}:lookup`);
    assert.equal(retry?.id, first?.id);
    assert.equal(other?.id, `${"b".repeat(32)}:lookup`);
    assert.equal(route?.id, `${callA}:route`);
    assert.match(String(outside?.id), /^[0-9a-f-]{36}$/);
    assert.equal(first?.traceparent, `00-${traceId}-1111111111111111-01`);
    assert.equal(outside?.traceparent, undefined);
  });

  test("an event with an idempotency key is named after the key, its caller and its kind, whatever the call", async () => {
    const fake = new FakeStats();
    const reporter = new StatsReporter(fake.client, logger, options);
    const inCall = (callId: string, work: () => void) =>
      runInCall(
        {
          method: "/x/GetFeature",
          trace: { traceId: "1".repeat(32), spanId: "2".repeat(16), sampled: true },
          endListeners: [],
          callId,
        },
        work,
      );
    // The same key in two calls (a client's repeat), in another caller's call, and another key.
    inCall("a".repeat(32), () => reporter.report(event("ana"), "order-1"));
    inCall("b".repeat(32), () => reporter.report(event("ana"), "order-1"));
    inCall("c".repeat(32), () => reporter.report(event("bob"), "order-1"));
    inCall("d".repeat(32), () => reporter.report(event("ana"), "order-2"));
    assert.equal(await reporter.flush(5_000), 0);
    const idsOf = (caller: string) =>
      fake.delivered.filter((sent) => sent.caller === caller).map((sent) => sent.id);
    const [first, repeat, otherKey] = idsOf("ana");
    const [otherCaller] = idsOf("bob");
    assert.match(String(first), /^key:[0-9a-f]{64}$/);
    assert.equal(repeat, first, "a repeat with the same key has the same id");
    assert.notEqual(otherCaller, first, "another caller's key is another call");
    assert.notEqual(otherKey, first);
  });

  test("events reported just after a batch went out wait for the linger and go out together", async () => {
    const fake = new FakeStats();
    const reporter = new StatsReporter(fake.client, logger, { ...options, lingerMs: 1_000 });
    reporter.report(event("first"));
    await until(() => fake.delivered.length === 1, "the first event went out at once");
    for (const name of ["a", "b", "c", "d"]) reporter.report(event(name));
    // Within the linger nothing more is sent...
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(fake.calls.length, 1);
    // ...then one batch with all four.
    await until(() => fake.calls.length === 2, "the lingering batch went out");
    assert.deepEqual(
      fake.calls[1]?.events.map((sent) => sent.caller),
      ["a", "b", "c", "d"],
    );
    // A flush does not wait for the linger.
    reporter.report(event("e"));
    assert.equal(await reporter.flush(5_000), 0);
    assert.equal(fake.calls.length, 3);
  });

  describe("look-ups alike are summed", () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const inCall = (spanId: string, callId: string | undefined, work: () => void) =>
      runInCall(
        {
          method: "/x/GetFeature",
          trace: { traceId, spanId, parentSpanId: spanId, sampled: true },
          endListeners: [],
          ...(callId ? { callId } : {}),
        },
        work,
      );

    test("into one event per caller, location and name: how many calls, the id of each call that has one, the first call's trace", async () => {
      const fake = new FakeStats();
      const reporter = new StatsReporter(fake.client, logger, options);
      // The first report goes out alone; the next ones wait for its answer and are summed.
      reporter.report(event("first"));
      inCall("1111111111111111", "a".repeat(32), () => reporter.report(event("ana")));
      inCall("2222222222222222", undefined, () => reporter.report(event("ana")));
      inCall("3333333333333333", "b".repeat(32), () => reporter.report(event("ana"), "order-7"));
      inCall("4444444444444444", "c".repeat(32), () => reporter.report(event("ana")));
      // Another name, another location, another caller: events of their own.
      reporter.report({
        caller: "ana",
        featureLookedUp: { feature: { name: "other", location: { latitude: 1, longitude: 2 } } },
      });
      reporter.report({
        caller: "ana",
        featureLookedUp: { feature: { name: "ana", location: { latitude: 1, longitude: 3 } } },
      });
      reporter.report(event("bob"));
      assert.equal(reporter.pending, 8);
      assert.equal(await reporter.flush(5_000), 0);

      assert.equal(fake.calls.length, 2);
      const [summed, ...others] = fake.calls[1]?.events ?? [];
      assert.equal(summed?.calls, 4);
      assert.deepEqual(summed?.callIds, [
        `${"a".repeat(32)}:lookup`,
        idempotentEventId("ana", "lookup", "order-7"),
        `${"c".repeat(32)}:lookup`,
      ]);
      assert.match(String(summed?.id), /^[0-9a-f-]{36}$/, "its own id, for the call without one");
      assert.equal(summed?.traceparent, `00-${traceId}-1111111111111111-01`);
      assert.deepEqual(summed?.featureLookedUp, event("ana").featureLookedUp);
      // Events of one call go out as they always have: no `calls`, named after the call.
      assert.deepEqual(
        others.map((sent) => [sent.caller, sent.calls, sent.callIds]),
        [
          ["ana", undefined, undefined],
          ["ana", undefined, undefined],
          ["bob", undefined, undefined],
        ],
      );
      assert.equal(fake.delivered.length, 8, "every call counted");
    });

    test("an aggregate is sealed once sent: retried unchanged under its id, later calls go in another", async () => {
      const fake = new FakeStats();
      fake.failing = true;
      const reporter = new StatsReporter(fake.client, logger, options);
      reporter.report(event("first"));
      for (let i = 0; i < 3; i += 1) reporter.report(event("ana"));
      await until(() => fake.calls.length >= 3, "the summed event was sent and failed");
      reporter.report(event("ana"));
      fake.failing = false;
      assert.equal(await reporter.flush(5_000), 0);

      const sentAna = fake.calls.flatMap((call) =>
        call.events.filter((sent) => sent.caller === "ana"),
      );
      const [firstTry] = sentAna;
      assert.equal(firstTry?.calls, 3);
      const tries = sentAna.filter((sent) => sent.id === firstTry?.id);
      assert.ok(tries.length >= 2, "sent again after failing");
      for (const again of tries) assert.deepEqual(again, firstTry, "unchanged");
      const later = sentAna.filter((sent) => sent.id !== firstTry?.id);
      assert.equal(later.length, 1);
      assert.equal(later[0]?.calls, undefined, "the call reported later is an event of its own");
      assert.equal(fake.delivered.filter((sent) => sent.caller === "ana").length, 4);
    });

    test("an aggregate holds at most maxBatch calls", async () => {
      const fake = new FakeStats();
      const reporter = new StatsReporter(fake.client, logger, { ...options, maxBatch: 3 });
      reporter.report(event("first"));
      for (let i = 0; i < 7; i += 1) reporter.report(event("ana"));
      assert.equal(await reporter.flush(5_000), 0);
      const sizes = fake.calls.map((call) =>
        call.events.reduce((sum, sent) => sum + (sent.calls ?? 1), 0),
      );
      assert.ok(
        sizes.every((size) => size <= 3),
        `calls per batch ${sizes}`,
      );
      assert.equal(fake.delivered.filter((sent) => sent.caller === "ana").length, 7);
    });

    test("a full queue drops the oldest call: one call of an aggregate not sent yet, a sealed one whole", async () => {
      const fake = new FakeStats();
      fake.failing = true;
      const reporter = new StatsReporter(fake.client, logger, { ...options, maxQueued: 3 });
      // "first" is sent at once (sealed); "ana" × 4 wait, summed.
      reporter.report(event("first"));
      for (let i = 0; i < 4; i += 1) reporter.report(event("ana"));
      assert.equal(reporter.pending, 3);
      fake.failing = false;
      assert.equal(await reporter.flush(5_000), 0);
      assert.deepEqual(
        fake.delivered.map((sent) => sent.caller),
        ["ana", "ana", "ana"],
      );
    });
  });
});
