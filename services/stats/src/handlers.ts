import { requireTopN } from "@cloudrun-grpc/domain";
import type { StatsServiceHandlers, stats } from "@cloudrun-grpc/proto";
import {
  endWithError,
  handlerStatus,
  type Logger,
  OpenStreams,
  parseTraceparent,
  traceFields,
  traceInSample,
  writeAndWait,
} from "@cloudrun-grpc/runtime";
import { SharedSnapshots } from "./shared-snapshots.js";
import type { StatsStore } from "./store.js";
import { checkEvents, requireSnapshotQuery } from "./validate.js";

export interface StatsDependencies {
  store: StatsStore;
  logger: Logger;
  /** A burst of changes within this window becomes one Watch update. */
  watchCoalesceMs: number;
  /** LOG_RPC_SAMPLE_RATE: the share of traces whose recorded events get a line. */
  logSampleRate?: number;
}

export interface StatsHandlers {
  handlers: StatsServiceHandlers;
  /** Ends every open Watch with UNAVAILABLE so its client reconnects to another instance. */
  endWatches(): void;
}

export function statsHandlers({
  store,
  logger,
  watchCoalesceMs,
  logSampleRate = 1,
}: StatsDependencies): StatsHandlers {
  const watches = new OpenStreams();
  const watchSnapshots = new SharedSnapshots(store);
  const failed = (method: string, error: unknown) => handlerStatus(logger, method, error);

  // One line per event in the trace of the call that caused it, so a request's lines on
  // gateway and route are found with stats' too (a batch's own call has a trace of its own).
  // An event that sums several calls carries its first call's trace, and says how many.
  const logRecordedEvents = (events: readonly stats.Event__Output[]) => {
    if (!logger.isLevelEnabled("info")) return;
    for (const event of events) {
      const trace = parseTraceparent(event.traceparent);
      if (!trace?.parentSpanId) continue;
      // As the call lines (runtime's rpc-log.ts): a trace its caller sampled, or in the share.
      if (!trace.sampled && !traceInSample(trace.traceId, logSampleRate)) continue;
      logger.info(
        {
          ...traceFields({ ...trace, spanId: trace.parentSpanId }),
          event: {
            id: event.id,
            kind: event.kind,
            caller: event.caller || undefined,
            ...(event.calls > 1 ? { calls: event.calls } : {}),
          },
        },
        "event recorded",
      );
    }
  };

  const handlers: StatsServiceHandlers = {
    async RecordEvents(call, callback) {
      try {
        const { valid, validReceived, rejected } = checkEvents(call.request);
        // The valid events count even when others are refused: the answer names each refused
        // one, so the reporter drops exactly those (see RecordEvents in stats.proto).
        const result = await store.record(valid);
        if (rejected.length > 0) {
          logger.warn(
            {
              events: call.request.events.length,
              ...result,
              rejected: rejected.length,
              firstRejected: rejected.slice(0, 5),
            },
            `refused ${rejected.length} invalid event(s) of a batch; recorded the others`,
          );
        }
        logRecordedEvents(validReceived);
        callback(null, { ...result, rejected });
      } catch (error) {
        callback(failed("RecordEvents", error));
      }
    },

    async GetStats(call, callback) {
      try {
        const { snapshot, lookupsWithin } = await store.snapshot(
          requireSnapshotQuery(call.request),
        );
        callback(null, { snapshot, lookupsWithin });
      } catch (error) {
        callback(failed("GetStats", error));
      }
    },

    async WatchStats(call) {
      let topN: number;
      try {
        topN = requireTopN(call.request.topN);
      } catch (error) {
        endWithError(call, failed("WatchStats", error));
        return;
      }
      // At most one update in flight (sent to HTTP/2, not just buffered). Changes during a
      // send or within the coalescing window mark the view dirty; one update with the
      // latest aggregates follows. A slow reader gets fewer, newer updates, not a backlog.
      let dirty = true;
      let sending = false;
      let timer: NodeJS.Timeout | undefined;
      const sendLatest = async () => {
        timer = undefined;
        if (sending || !dirty || call.cancelled) return;
        sending = true;
        dirty = false;
        try {
          const snapshot = await watchSnapshots.latest(topN);
          await writeAndWait(call, { snapshot });
        } catch (error) {
          stop();
          endWithError(call, failed("WatchStats", error));
          return;
        } finally {
          sending = false;
        }
        if (dirty) schedule();
      };
      const schedule = () => {
        dirty = true;
        timer ??= setTimeout(sendLatest, watchCoalesceMs);
      };
      const unsubscribe = store.onChange(schedule);
      const stop = () => {
        unsubscribe();
        if (timer) clearTimeout(timer);
      };
      watches.add(call, stop);
      call.on("close", stop);
      await sendLatest();
    },
  };

  return {
    handlers,
    endWatches: () => watches.endAll("stats instance is shutting down; watch again"),
  };
}
