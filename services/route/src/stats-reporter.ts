// Route tells stats what happened, off the client's path: handlers hand an event to
// `report()` and return at once; events go out in batches, one batch in flight at a time.
//
// Look-ups alike (same caller, location and name) are summed while they wait: one event per
// aggregate, with how many calls it stands for and the id of each call that has one (stats
// counts every call once by that id, so a retried call still counts once whichever event
// carries it; see Event.calls in stats.proto). stats then does one update per aggregate, not
// per call. An aggregate is sealed when it first goes out: a retry sends it unchanged, under
// the same id. A route is always an event of its own (its summary is its own). An event of one
// call goes out as events always have: named after its call, without `calls`.
//
// When stats is slow or down the client's call still succeeds. The events wait in a bounded
// queue and the batch is retried with backoff; every event carries an id, so stats counts a
// retried batch once. When the queue is full the oldest events are dropped (and counted in
// a warning): memory stays bounded if stats stays down. At shutdown the queue is flushed for
// as long as the grace period allows; what is still unsent then is logged as lost.
// stats answers a batch event by event (RecordEvents in stats.proto): the valid events are
// counted and the invalid ones come back in the response's `rejected` list, each by its index
// in the batch. The whole batch is then done: the rejected events are dropped with an error
// log (sending one again would be refused again), and one bad event never holds up the others.
// A call that fails, INVALID_ARGUMENT included (a fault of the batch as a whole), is retried.
// Each event carries the trace of the call that caused it (stats logs it in that trace); a
// batch call itself belongs to no one call and starts a trace of its own, whose span links to
// the spans of the sampled calls it counts (and is sampled when one of them is).
import { randomUUID } from "node:crypto";
import type { StatsServiceClient, stats } from "@cloudrun-grpc/proto";
import {
  currentCall,
  formatTraceparent,
  idempotentEventId,
  type Logger,
  outsideAnyCall,
  serviceMeter,
  withLinkedCalls,
} from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";

export interface ReporterOptions {
  maxQueued: number;
  maxBatch: number;
  batchTimeoutMs: number;
  maxBackoffMs: number;
  /**
   * A batch smaller than maxBatch waits until this long after the last one was sent, so a busy
   * route sends at most 1000 / lingerMs batches a second (each a call stats must answer, with
   * a transaction) instead of one per handful of events. 0: send at once. A flush never waits.
   */
  lingerMs?: number;
}

export const defaultReporterOptions: ReporterOptions = {
  maxQueued: 50_000,
  maxBatch: 500,
  batchTimeoutMs: 5_000,
  // Held reports must reach stats soon after it serves again (within 2 s): a retry at most
  // every half second is one small call, even through a long outage.
  maxBackoffMs: 500,
  // With look-ups summed, stats' cost is per batch (its statement and commit) plus a ledger row
  // per named call: at 20 ms a busy route sent 20 to 50 batches a second and stats spent 94 to
  // 105 µs per GetFeature (pnpm bench, c = 64, embedded PGlite); at 100 ms, 39 to 55 µs.
  // Stats sees a look-up at most this much later.
  lingerMs: 100,
};

/**
 * The reporter's channel to stats reconnects at most half a second after stats listens again:
 * grpc-js's default reconnect backoff grows to 120 s (1 s × 1.6 per attempt), which after a
 * few seconds' outage left held reports waiting 7 to 13 s. Batches also wait for the channel
 * to be ready (waitForReady) within their deadline instead of failing at once while it
 * reconnects, so a batch goes out as soon as the connection is back.
 */
export const reporterChannelOptions = {
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 500,
} as const;

export type NewEvent = Omit<stats.Event, "id" | "kind" | "calls" | "callIds">;

/** Calls waiting for stats as one event: the look-ups of one key, or one route. */
interface Pending {
  /** What the calls did (all alike). */
  event: NewEvent;
  /** The event's own id: it stands for the calls that have no id of their own. */
  id: string;
  /** The first call's trace. */
  traceparent: string | undefined;
  calls: number;
  /** The ids of the calls that have one, in the order reported. */
  callIds: string[];
  /** Look-ups: the key under which more calls may join while it is open. */
  key: string | undefined;
  /** Sent at least once: never changed again. */
  sealed: boolean;
  /** The traceparents of the sampled calls among them, for the batch span's links (a few). */
  sampledCalls: string[];
}

/** Links kept per aggregate: its batch's span links to at most this many of its calls. */
const maxLinkedCallsPerEvent = 8;

export class StatsReporter {
  private queue: Pending[] = [];
  /** The look-up aggregates still taking calls, by key. */
  private readonly open = new Map<string, Pending>();
  /** The calls in `queue`. */
  private queuedCalls = 0;
  private sending = false;
  private failures = 0;
  /** The next send is waiting: a linger for a fuller batch, or a backoff after a failure. */
  private waitTimer: NodeJS.Timeout | undefined;
  private lastSentAt = Number.NEGATIVE_INFINITY;
  private flushing = 0;
  private dropped = 0;
  private rejected = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly client: StatsServiceClient,
    private readonly logger: Logger,
    private readonly options: ReporterOptions = defaultReporterOptions,
  ) {
    // Telemetry (issue 18): how many calls wait to be counted, read at each metric export.
    serviceMeter()
      .createObservableGauge("stats_reporter.queued_calls", {
        description: "Calls route holds for stats, sent or not yet acknowledged",
        unit: "{call}",
      })
      .addCallback((result) => result.observe(this.queuedCalls));
  }

  /**
   * Queues an event; never throws, never waits. Its call is named so that stats counts a
   * repeated call once: with the client's idempotency key, after the key (scoped by the event's
   * caller and kind: a repeat is a new call, from the same client); otherwise after the
   * caller's id for the call (x-call-id, which gRPC retries resend unchanged) and the kind. A
   * call with neither has no name of its own: the id of the event it joins counts it.
   */
  report(event: NewEvent, idempotencyKey?: string): void {
    if (this.queuedCalls >= this.options.maxQueued) this.dropOldestCall();
    const call = currentCall();
    const kind = event.routeRecorded ? "route" : "lookup";
    const callId = idempotencyKey
      ? idempotentEventId(event.caller ?? "", kind, idempotencyKey)
      : call?.callId
        ? `${call.callId}:${kind}`
        : undefined;
    const key = event.featureLookedUp ? lookupKey(event) : undefined;
    let pending = key === undefined ? undefined : this.open.get(key);
    if (!pending) {
      pending = {
        event,
        id: randomUUID(),
        traceparent: call ? formatTraceparent(call.trace) : undefined,
        calls: 0,
        callIds: [],
        key,
        sealed: false,
        sampledCalls: [],
      };
      this.queue.push(pending);
      if (key !== undefined) this.open.set(key, pending);
    }
    // A sampled call's trace wins over an unsampled one: the event is logged, and the batch's
    // span linked, in a trace that is kept.
    if (call?.trace.sampled && !pending.sealed) {
      const traceparent = formatTraceparent(call.trace);
      if (pending.traceparent?.endsWith("-00")) pending.traceparent = traceparent;
      if (pending.sampledCalls.length < maxLinkedCallsPerEvent) {
        pending.sampledCalls.push(traceparent);
      }
    }
    pending.calls += 1;
    if (callId) pending.callIds.push(callId);
    this.queuedCalls += 1;
    // An aggregate fits in one batch; the next call of its key opens another.
    if (pending.calls >= this.options.maxBatch) this.close(pending);
    this.sendNext();
  }

  /** The calls waiting to be counted (sent or not). */
  get pending(): number {
    return this.queuedCalls;
  }

  /** Resolves when the queue is empty, or after `timeoutMs` with the number of calls left. */
  async flush(timeoutMs: number): Promise<number> {
    if (this.queue.length === 0 && !this.sending) return 0;
    this.flushing += 1;
    try {
      // A flush waits for neither a linger nor a backoff.
      if (this.waitTimer) {
        clearTimeout(this.waitTimer);
        this.waitTimer = undefined;
        this.sendNext();
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    } finally {
      this.flushing -= 1;
    }
    return this.queuedCalls;
  }

  private sendNext(): void {
    if (this.sending || this.waitTimer) return;
    if (this.queue.length === 0) {
      for (const wake of this.idleWaiters.splice(0)) wake();
      return;
    }
    const lingerMs = this.options.lingerMs ?? 0;
    const waitMs = this.lastSentAt + lingerMs - performance.now();
    if (waitMs > 0 && this.queuedCalls < this.options.maxBatch && this.flushing === 0) {
      this.sendAfter(waitMs);
      return;
    }
    this.lastSentAt = performance.now();
    const batch = this.takeBatch();
    const events = batch.map(toEvent);
    this.sending = true;
    try {
      // Telemetry (issue 18): the batch's span links to the spans of the sampled calls it
      // counts (every one of an aggregate's, up to a few).
      outsideAnyCall(() =>
        withLinkedCalls(
          batch.flatMap((pending) => pending.sampledCalls),
          () =>
            this.client.RecordEvents(
              { events },
              new grpc.Metadata({ waitForReady: true }),
              { deadline: Date.now() + this.options.batchTimeoutMs },
              (error, response) => this.sent(batch, error, response),
            ),
        ),
      );
    } catch (error) {
      // grpc-js throws at once when the channel is already closed: a failed attempt too.
      this.sent(batch, error as Error, undefined);
    }
  }

  /** The first aggregates of the queue, at most maxBatch calls in all, sealed from now on. */
  private takeBatch(): Pending[] {
    const batch: Pending[] = [];
    let calls = 0;
    for (const pending of this.queue) {
      if (batch.length > 0 && calls + pending.calls > this.options.maxBatch) break;
      calls += pending.calls;
      this.close(pending);
      pending.sealed = true;
      batch.push(pending);
    }
    return batch;
  }

  /** No more calls join `pending`. */
  private close(pending: Pending): void {
    if (pending.key !== undefined && this.open.get(pending.key) === pending) {
      this.open.delete(pending.key);
    }
  }

  /**
   * The queue is full: the oldest call goes. From an aggregate not sent yet, one call; a sealed
   * one (in flight or to be sent again unchanged) goes whole.
   */
  private dropOldestCall(): void {
    const oldest = this.queue[0];
    if (!oldest) return;
    let dropped = oldest.calls;
    if (!oldest.sealed && oldest.calls > 1) {
      oldest.calls -= 1;
      // The calls without an id of their own go first; then the oldest named one.
      if (oldest.callIds.length > oldest.calls) oldest.callIds.shift();
      dropped = 1;
    } else {
      this.queue.shift();
      this.close(oldest);
    }
    this.queuedCalls -= dropped;
    const before = this.dropped;
    this.dropped += dropped;
    if (before === 0 || Math.floor(before / 1000) !== Math.floor(this.dropped / 1000)) {
      this.logger.warn({ dropped: this.dropped }, "stats queue full: dropping the oldest events");
    }
  }

  private sendAfter(ms: number): void {
    this.waitTimer = setTimeout(() => {
      this.waitTimer = undefined;
      this.sendNext();
    }, ms);
    this.waitTimer.unref();
  }

  private sent(
    batch: Pending[],
    error: Error | null,
    response: stats.RecordEventsResponse__Output | undefined,
  ): void {
    this.sending = false;
    if (error) {
      this.failures += 1;
      const backoffMs = Math.min(this.options.maxBackoffMs, 100 * 2 ** (this.failures - 1));
      if (this.failures === 1 || this.failures % 10 === 0) {
        this.logger.warn(
          { err: error, queued: this.queuedCalls, failures: this.failures, backoffMs },
          "stats unreachable: keeping events queued and retrying",
        );
      }
      this.sendAfter(backoffMs);
      return;
    }
    if (this.failures > 0) this.logger.info({ after: this.failures }, "stats reachable again");
    this.failures = 0;
    this.removeSent(batch);
    if (response?.rejected.length) this.logRejected(batch, response.rejected);
    this.sendNext();
  }

  /**
   * Removes a delivered batch from the queue. Aggregates queued meanwhile stay behind it; the
   * batch may have lost its oldest aggregates to a full queue meanwhile (dropped from the
   * front), so what is left of it is the queue's first entries: removed in one splice, not by a
   * pass over the whole queue. Anything else (not expected) falls back to removing by identity.
   */
  private removeSent(batch: Pending[]): void {
    const first = this.queue[0];
    const from = first === undefined ? -1 : batch.indexOf(first);
    // The queue's first entry is not of the batch: all of the batch was dropped meanwhile.
    if (from < 0) return;
    const left = batch.length - from;
    let prefix = true;
    for (let i = 0; i < left && prefix; i += 1) prefix = this.queue[i] === batch[from + i];
    if (prefix) {
      for (const pending of this.queue.splice(0, left)) this.queuedCalls -= pending.calls;
      return;
    }
    const sent = new Set(batch);
    this.queue = this.queue.filter((pending) => {
      if (!sent.has(pending)) return true;
      this.queuedCalls -= pending.calls;
      return false;
    });
  }

  /**
   * The events stats refused are gone with their batch (nothing to resend: they would be
   * refused again). Logged as errors, since route made them: the first batch with any, then
   * each batch that takes the count past another hundred, so a steady fault cannot flood the
   * log.
   */
  private logRejected(batch: Pending[], rejected: stats.RejectedEvent__Output[]): void {
    const before = this.rejected;
    this.rejected += rejected.length;
    if (before > 0 && Math.floor(before / 100) === Math.floor(this.rejected / 100)) return;
    const calls = rejected.reduce((sum, { index }) => sum + (batch[index]?.calls ?? 0), 0);
    this.logger.error(
      {
        rejectedInAll: this.rejected,
        calls,
        events: rejected.slice(0, 10).map(({ index, field, description }) => {
          const pending = batch[index];
          return { id: pending && eventId(pending), field, description };
        }),
      },
      `stats rejected ${rejected.length} report(s) of a batch as invalid: dropped them`,
    );
  }
}

/** Look-ups that count alike: one caller, one location, one name (JSON: parts cannot blur). */
function lookupKey(event: NewEvent): string {
  const feature = event.featureLookedUp?.feature;
  return JSON.stringify([
    event.caller ?? "",
    feature?.location?.latitude ?? 0,
    feature?.location?.longitude ?? 0,
    feature?.name ?? "",
  ]);
}

/** An event of one call is named after its call (or its own id when the call has none). */
function eventId(pending: Pending): string {
  return pending.calls === 1 ? (pending.callIds[0] ?? pending.id) : pending.id;
}

/** The event as stats.proto has it: of one call as events always were, or with `calls`. */
function toEvent(pending: Pending): stats.Event {
  const event: stats.Event = { id: eventId(pending), ...pending.event };
  if (pending.traceparent) event.traceparent = pending.traceparent;
  if (pending.calls > 1) {
    event.calls = pending.calls;
    event.callIds = pending.callIds;
  }
  return event;
}
