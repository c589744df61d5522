// What stats reads from the wire, checked. grpc-js decodes anything that parses as protobuf,
// with defaults for missing fields, so every field is checked here before it is counted.

import { requirePoint, requireRectangle, requireTopN } from "@cloudrun-grpc/domain";
import type { stats } from "@cloudrun-grpc/proto";
import { invalidArgument, StatusError } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import type { SnapshotQuery, StatsEvent } from "./store.js";

export const maxEventsPerBatch = 1000;
/** Each call id is a ledger row in the batch's one statement: bounded like the events. */
export const maxCallIdsPerBatch = 10_000;
/** An event stands for at most this many calls (route sends at most 500 in a batch). */
export const maxCallsPerEvent = 1000;
const maxIdLength = 128;
const maxCallerLength = 320;
const maxNameLength = 200;

// The 64-bit counts of a route are decoded as JS numbers and added to 64-bit totals, so each is
// bounded here: past these a value is nonsense, and big enough ones would overflow a total (the
// batch failing with INTERNAL, and every later one too).
/** A leg of a route (great-circle) is at most half the Earth's equatorial circumference. */
const maxLegMeters = 20_037_509;
/** One RecordRoute call's duration: 2^31 - 1 s (68 years) is past any call's deadline. */
const maxElapsedSeconds = 2 ** 31 - 1;

function requireCount(value: number, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < 0) {
    throw invalidArgument(`${what} must be a whole number ≥ 0, got ${value}`, what);
  }
  if (value > max) throw invalidArgument(`${what} must be at most ${max}, got ${value}`, what);
  return value;
}

/** PostgreSQL text cannot hold U+0000: refused here rather than failing the batch as INTERNAL. */
function requireText(value: string, what: string, maxLength: number, minLength = 0): string {
  if (value.length < minLength || value.length > maxLength) {
    throw invalidArgument(
      minLength > 0
        ? `${what} must have ${minLength} to ${maxLength} characters`
        : `${what} must have at most ${maxLength} characters`,
      what,
    );
  }
  if (value.includes("\0")) throw invalidArgument(`${what} must not contain U+0000 (NUL)`, what);
  return value;
}

/** How many calls an event stands for (0 on the wire is 1), and the ids it names. */
function requireCalls(
  event: stats.Event__Output,
  at: string,
): { calls: number; callIds: string[] } {
  const calls = event.calls === 0 ? 1 : requireCount(event.calls, `${at}.calls`, maxCallsPerEvent);
  if (event.callIds.length > calls) {
    throw invalidArgument(
      `${at}.call_ids must name at most ${at}.calls (${calls}) calls, got ${event.callIds.length}`,
      `${at}.call_ids`,
    );
  }
  const callIds = event.callIds.map((id, position) =>
    requireText(id, `${at}.call_ids[${position}]`, maxIdLength, 1),
  );
  return { calls, callIds };
}

export function requireEvent(event: stats.Event__Output, index: number): StatsEvent {
  const at = `events[${index}]`;
  const id = requireText(event.id, `${at}.id`, maxIdLength, 1);
  const caller = requireText(event.caller, `${at}.caller`, maxCallerLength);
  const { calls, callIds } = requireCalls(event, at);
  // An event of one call stays as events always were.
  const several = calls > 1 || callIds.length > 0 ? { calls, callIds } : {};
  if (event.kind === "routeRecorded") {
    // A route's summary is its own: summed with others, a repeat of one of them could not be
    // told apart from the rest (see Event.calls in stats.proto).
    if (calls !== 1) {
      throw invalidArgument(
        `${at}.calls must be 1 for a route_recorded event (a route's summary is its own), got ${calls}`,
        `${at}.calls`,
      );
    }
    const summary = event.routeRecorded?.summary;
    if (!summary) {
      throw invalidArgument(
        `${at}.route_recorded.summary is required`,
        `${at}.route_recorded.summary`,
      );
    }
    const field = (name: string) => `${at}.route_recorded.summary.${name}`;
    const pointCount = requireCount(summary.pointCount, field("point_count"));
    const legs = Math.max(0, pointCount - 1);
    const distanceMeters = requireCount(summary.distanceMeters, field("distance_meters"));
    if (distanceMeters > legs * maxLegMeters) {
      throw invalidArgument(
        `${field("distance_meters")} must be at most ${legs * maxLegMeters} for ${pointCount} ` +
          `point(s) (${maxLegMeters} m a leg, half the Earth's circumference), got ${distanceMeters}`,
        field("distance_meters"),
      );
    }
    return {
      id,
      caller,
      ...several,
      kind: "routeRecorded",
      summary: {
        pointCount,
        featureCount: requireCount(summary.featureCount, field("feature_count")),
        distanceMeters,
        elapsedSeconds: requireCount(
          summary.elapsedSeconds,
          field("elapsed_seconds"),
          maxElapsedSeconds,
        ),
      },
    };
  }
  if (event.kind === "featureLookedUp") {
    const feature = event.featureLookedUp?.feature;
    if (!feature) {
      throw invalidArgument(
        `${at}.feature_looked_up.feature is required`,
        `${at}.feature_looked_up.feature`,
      );
    }
    const location = requirePoint(feature.location, `${at}.feature_looked_up.feature.location`);
    const name = requireText(feature.name, `${at}.feature_looked_up.feature.name`, maxNameLength);
    return { id, caller, ...several, kind: "featureLookedUp", name, location };
  }
  // `kind` is the oneof's name in the contract: a valid event sets one of its fields.
  throw invalidArgument(
    `${at}.kind must be route_recorded or feature_looked_up (the event has neither)`,
    `${at}.kind`,
  );
}

export interface CheckedEvents {
  /** The valid events, in the order of the request. */
  valid: StatsEvent[];
  /** The same events as received (their traceparent, for the log). */
  validReceived: stats.Event__Output[];
  /** The invalid ones, as RecordEventsResponse.rejected lists them. */
  rejected: stats.RejectedEvent[];
}

/**
 * Checks a batch event by event (the contract answers each event, see stats.proto): throws
 * INVALID_ARGUMENT only for a fault of the batch as a whole.
 */
export function checkEvents(request: stats.RecordEventsRequest__Output): CheckedEvents {
  if (request.events.length === 0) throw invalidArgument("events must not be empty", "events");
  if (request.events.length > maxEventsPerBatch) {
    throw invalidArgument(
      `at most ${maxEventsPerBatch} events per request, got ${request.events.length}`,
      "events",
    );
  }
  let callIds = 0;
  for (const event of request.events) callIds += event.callIds.length;
  if (callIds > maxCallIdsPerBatch) {
    throw invalidArgument(
      `at most ${maxCallIdsPerBatch} call ids per request, got ${callIds}`,
      "events",
    );
  }
  const checked: CheckedEvents = { valid: [], validReceived: [], rejected: [] };
  request.events.forEach((event, index) => {
    try {
      checked.valid.push(requireEvent(event, index));
      checked.validReceived.push(event);
    } catch (error) {
      if (!(error instanceof StatusError) || error.code !== grpc.status.INVALID_ARGUMENT) {
        throw error;
      }
      checked.rejected.push({
        index,
        field: error.field ?? `events[${index}]`,
        description: error.details,
      });
    }
  });
  return checked;
}

export function requireSnapshotQuery(request: stats.GetStatsRequest__Output): SnapshotQuery {
  const topN = requireTopN(request.topN);
  const namedOnly = request.namedOnly;
  return request.within
    ? { topN, namedOnly, within: requireRectangle(request.within, "within") }
    : { topN, namedOnly };
}
