// Route tells stats what happened, off the client's path: handlers hand an event to
// `report()` and return at once; events go out in batches, one batch in flight at a time.
//
// When stats is slow or down the client's call still succeeds. The events wait in a bounded
// queue and the batch is retried with backoff; every event carries an id, so stats counts a
// retried batch once. When the queue is full the oldest events are dropped (and counted in
// a warning): memory stays bounded if stats stays down. At shutdown the queue is flushed for
// as long as the grace period allows; what is still unsent then is logged as lost.
// A batch that stats rejects as INVALID_ARGUMENT is not retried as it is: it is halved until
// the bad event is alone, and that one event is dropped with an error log, so one bad event
// never holds up the others.
import { randomUUID } from "node:crypto";
import type { StatsServiceClient, stats } from "@cloudrun-grpc/proto";
import type { Logger } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";

export interface ReporterOptions {
  maxQueued: number;
  maxBatch: number;
  batchTimeoutMs: number;
  maxBackoffMs: number;
}

export const defaultReporterOptions: ReporterOptions = {
  maxQueued: 50_000,
  maxBatch: 500,
  batchTimeoutMs: 5_000,
  maxBackoffMs: 5_000,
};

export type NewEvent = Omit<stats.Event, "id" | "kind">;

export class StatsReporter {
  private queue: stats.Event[] = [];
  private sending = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private dropped = 0;
  // Shrinks while isolating an event stats rejects; back to maxBatch after a success.
  private batchLimit: number;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly client: StatsServiceClient,
    private readonly logger: Logger,
    private readonly options: ReporterOptions = defaultReporterOptions,
  ) {
    this.batchLimit = options.maxBatch;
  }

  /** Queues an event with a fresh id; never throws, never waits. */
  report(event: NewEvent): void {
    if (this.queue.length >= this.options.maxQueued) {
      this.queue.shift();
      this.dropped += 1;
      if (this.dropped === 1 || this.dropped % 1000 === 0) {
        this.logger.warn({ dropped: this.dropped }, "stats queue full: dropping the oldest events");
      }
    }
    this.queue.push({ id: randomUUID(), ...event });
    this.sendNext();
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Resolves when the queue is empty, or after `timeoutMs` with the number of events left. */
  async flush(timeoutMs: number): Promise<number> {
    if (this.queue.length === 0 && !this.sending) return 0;
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.sendNext();
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.queue.length;
  }

  private sendNext(): void {
    if (this.sending || this.retryTimer) return;
    if (this.queue.length === 0) {
      for (const wake of this.idleWaiters.splice(0)) wake();
      return;
    }
    const batch = this.queue.slice(0, this.batchLimit);
    this.sending = true;
    try {
      this.client.RecordEvents(
        { events: batch },
        { deadline: Date.now() + this.options.batchTimeoutMs },
        (error) => this.sent(batch, error),
      );
    } catch (error) {
      // grpc-js throws at once when the channel is already closed: a failed attempt too.
      this.sent(batch, error as Error);
    }
  }

  private sent(batch: stats.Event[], error: Error | null): void {
    this.sending = false;
    if (error && (error as Partial<grpc.ServiceError>).code === grpc.status.INVALID_ARGUMENT) {
      this.isolateRejected(batch, error);
      return;
    }
    if (error) {
      this.failures += 1;
      const backoffMs = Math.min(this.options.maxBackoffMs, 100 * 2 ** (this.failures - 1));
      if (this.failures === 1 || this.failures % 10 === 0) {
        this.logger.warn(
          { err: error, queued: this.queue.length, failures: this.failures, backoffMs },
          "stats unreachable: keeping events queued and retrying",
        );
      }
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.sendNext();
      }, backoffMs);
      this.retryTimer.unref();
      return;
    }
    if (this.failures > 0) this.logger.info({ after: this.failures }, "stats reachable again");
    this.failures = 0;
    this.batchLimit = this.options.maxBatch;
    // Events queued meanwhile stay behind the batch. The batch may have lost its oldest
    // events to a full queue meanwhile, so remove what is left of it by id.
    const sentIds = new Set(batch.map((event) => event.id));
    this.queue = this.queue.filter((event) => !sentIds.has(event.id as string));
    this.sendNext();
  }

  private isolateRejected(batch: stats.Event[], error: Error): void {
    if (batch.length > 1) {
      this.batchLimit = Math.ceil(batch.length / 2);
    } else {
      const [rejected] = batch;
      this.queue = this.queue.filter((event) => event !== rejected);
      this.logger.error(
        { err: error, eventId: rejected?.id },
        "stats rejected a report as invalid: dropping it",
      );
    }
    this.sendNext();
  }
}
