// The four RouteGuide calls. Each validates what it reads (grpc-js decodes missing fields
// as defaults and never rejects a message itself) and answers with a precise status.
import { endUser } from "@cloudrun-grpc/auth-client";
import { requirePoint, requireRectangle } from "@cloudrun-grpc/domain";
import {
  explicitRouteEnd,
  type RouteGuideServiceHandlers,
  routeEndHeader,
  type routeguide,
} from "@cloudrun-grpc/proto";
import {
  type CallContext,
  callContextOf,
  endWithError,
  halfCloseSettled,
  handlerStatus,
  idempotencyKeyOf,
  invalidArgument,
  type Logger,
  onCallEnd,
  StatusError,
  writeWithBackpressure,
} from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { ChatHistory } from "./chat.js";
import type { FeatureIndex } from "./features.js";
import { RouteRecorder } from "./route-summary.js";
import type { NewEvent } from "./stats-reporter.js";

export interface RouteLimits {
  /** Points accepted in one RecordRoute stream. */
  maxRoutePoints: number;
  /** Notes accepted in one RouteChat stream (each answer repeats the earlier notes). */
  maxChatNotes: number;
}

/** A note's text is kept for the whole chat: bounded, so a chat's memory is too. */
export const maxNoteBytes = 1024;

export interface RouteDependencies {
  features: FeatureIndex;
  /** Queues an event for stats; a call's idempotency key names it (counted once). */
  report: (event: NewEvent, idempotencyKey?: string) => void;
  logger: Logger;
  limits: RouteLimits;
}

export function routeGuideHandlers(deps: RouteDependencies): RouteGuideServiceHandlers {
  const { features, report, logger, limits } = deps;

  const failed = (method: string, error: unknown) => handlerStatus(logger, method, error);

  // What a call did is reported once its answer has gone out: a call its client cancelled, or
  // whose deadline passed, before the answer was sent is not counted. (A client's cancel can
  // reach a handler as a normal end of its request stream; only the status sent tells.)
  // A call with an idempotency key names its event after the key (see idempotency.ts).
  const reportWhenAnswered = (
    event: NewEvent,
    served: CallContext | undefined,
    idempotencyKey: string | undefined,
  ) => {
    const send = () => report(event, idempotencyKey);
    // Without the call observer's context nobody can tell whether the answer went out: such a
    // call is not counted (the counting rule fails closed), and that is a bug worth a line.
    if (!onCallEnd((code) => code === grpc.status.OK && send(), served)) {
      logger.error({ event: Object.keys(event) }, "a call without its context: not counted");
    }
  };

  return {
    GetFeature(call, callback) {
      try {
        const point = requirePoint(call.request.point, "point");
        const idempotencyKey = idempotencyKeyOf(call.metadata);
        const found = features.at(point);
        const feature = { name: found?.name ?? "", location: point };
        reportWhenAnswered(
          { caller: endUser(call.metadata), featureLookedUp: { feature } },
          callContextOf(call),
          idempotencyKey,
        );
        callback(null, { feature });
      } catch (error) {
        callback(failed("GetFeature", error));
      }
    },

    async ListFeatures(call) {
      try {
        const bounds = requireRectangle(call.request.rectangle);
        for (const feature of features.within(bounds)) {
          if (call.cancelled) return;
          await writeWithBackpressure(call, { feature });
        }
        call.end();
      } catch (error) {
        endWithError(call, failed("ListFeatures", error));
      }
    },

    RecordRoute(call, callback) {
      // This call's context, explicitly: stream events can fire in another call's async context.
      const served = callContextOf(call);
      const recorder = new RouteRecorder(features);
      let idempotencyKey: string | undefined;
      // With "x-route-end: explicit" only an end_of_route message makes the route complete.
      const explicitEnd = call.metadata.get(routeEndHeader)[0] === explicitRouteEnd;
      let endOfRoute = false;
      let finished = false;
      const finish = (error: unknown, summary?: routeguide.RouteSummary) => {
        if (finished) return;
        finished = true;
        if (error) {
          // Stop reading: the rest of the stream is ignored once the status is sent.
          call.removeAllListeners("data");
          call.pause();
          callback(failed("RecordRoute", error));
        } else callback(null, { summary });
      };
      try {
        idempotencyKey = idempotencyKeyOf(call.metadata);
      } catch (error) {
        finish(error);
        return;
      }
      call.on("data", (message: routeguide.RecordRouteRequest__Output) => {
        try {
          if (endOfRoute) throw invalidArgument("nothing may follow the end_of_route message");
          if (message.endOfRoute) {
            if (message.point) throw invalidArgument("the end_of_route message carries no point");
            endOfRoute = true;
            return;
          }
          if (recorder.points >= limits.maxRoutePoints) {
            throw new StatusError(
              grpc.status.RESOURCE_EXHAUSTED,
              `a route may have at most ${limits.maxRoutePoints} points`,
            );
          }
          recorder.add(requirePoint(message.point, `point #${recorder.points + 1}`));
        } catch (error) {
          finish(error);
        }
      });
      call.on("end", async () => {
        if (finished) return;
        // A half-close is a complete route only if no reset comes with it (a grpc-js client's
        // cancel sends both: end-of-input.ts).
        const complete = await halfCloseSettled(served);
        if (finished) return;
        if (!complete || call.cancelled) {
          finish(new StatusError(grpc.status.CANCELLED, "the route was cancelled: not recorded"));
          return;
        }
        // Past the deadline the client gets DEADLINE_EXCEEDED, not a summary: not a route.
        if (deadlinePassed(call.getDeadline())) {
          finish(
            new StatusError(grpc.status.DEADLINE_EXCEEDED, "the route ended after its deadline"),
          );
          return;
        }
        if (explicitEnd && !endOfRoute) {
          finish(
            invalidArgument(
              `the route ended without its end_of_route message (${routeEndHeader}: ${explicitRouteEnd}): not recorded`,
            ),
          );
          return;
        }
        const summary = recorder.summary();
        reportWhenAnswered(
          { caller: endUser(call.metadata), routeRecorded: { summary } },
          served,
          idempotencyKey,
        );
        finish(null, summary);
      });
      call.on("error", (error) => finish(error));
    },

    async RouteChat(call) {
      // One note at a time, read through the async iterator: it reads the next note only
      // after the answers to this one are written (flow control), and it ends the loop only
      // after the last note is handled. ('end' can fire while a 'data' handler still awaits.)
      // destroyOnReturn: false, or the loop's end would destroy the call before its status.
      const history = new ChatHistory();
      try {
        const notes = call.iterator({
          destroyOnReturn: false,
        }) as AsyncIterable<routeguide.RouteChatRequest__Output>;
        for await (const message of notes) {
          if (history.size >= limits.maxChatNotes) {
            throw new StatusError(
              grpc.status.RESOURCE_EXHAUSTED,
              `a chat may have at most ${limits.maxChatNotes} notes`,
            );
          }
          if (!message.note) throw invalidArgument("note is required");
          const location = requirePoint(message.note.location, "note.location");
          if (Buffer.byteLength(message.note.message) > maxNoteBytes) {
            throw invalidArgument(`note.message must be at most ${maxNoteBytes} bytes`);
          }
          for (const earlier of history.exchange({ location, message: message.note.message })) {
            await writeWithBackpressure(call, { note: earlier });
          }
        }
        call.end();
      } catch (error) {
        if (!call.cancelled) endWithError(call, failed("RouteChat", error));
      }
    },
  };
}

function deadlinePassed(deadline: grpc.Deadline): boolean {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) && at <= Date.now();
}
