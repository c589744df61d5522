// What the CLI can do, one function per gateway method, each printing readable results
// through `out`. The local stack's demo runs the same functions.
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import {
  explicitRouteEnd,
  type GatewayServiceClient,
  type gateway,
  idempotencyKeyHeader,
  routeEndHeader,
  type routeguide,
  type stats,
} from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";

export type Print = (line: string) => void;

/** A gateway method's name, as the contract spells it. */
export type GatewayMethod =
  | "GetFeature"
  | "ListFeatures"
  | "RecordRoute"
  | "RouteChat"
  | "GetStats"
  | "WatchStats"
  | "DescribeArea";

/** Receives each answer as it arrives: a unary call's response, each message of a stream. */
export type Answer = (method: GatewayMethod, message: object) => void;

export interface CommandContext {
  client: GatewayServiceClient;
  /** The readable lines (what a person reads). */
  out: Print;
  /** Each answer as the gateway sent it (the CLI's --json prints these). */
  answer?: Answer;
  /** Per-call deadline in milliseconds from now. */
  timeoutMs: number;
  /**
   * The idempotency key of the calls that stats counts (GetFeature, RecordRoute): running a
   * command again with the same key counts it once. Default: a new random key per call.
   */
  idempotencyKey?: string;
}

/** Metadata for a call stats counts: its idempotency key, so repeating it is safe. */
function countedCallMetadata(ctx: CommandContext): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set(idempotencyKeyHeader, ctx.idempotencyKey ?? randomUUID());
  return metadata;
}

/** Degrees (e.g. 40.9066) to the contract's E7 integers. */
export const toE7 = (degrees: number) => Math.round(degrees * 1e7);

/** The largest latitude and longitude, in degrees (each range is symmetric around 0). */
export const maxLatitude = 90;
export const maxLongitude = 180;

/** Whether `degrees` is a finite number from -limit to limit. */
export const withinDegrees = (degrees: number, limit: number) =>
  Number.isFinite(degrees) && degrees >= -limit && degrees <= limit;

/**
 * A point from degrees. Throws a RangeError for a latitude outside -90..90 or a longitude
 * outside -180..180 (or not finite): encoded as E7 integers they would not fit the contract's
 * int32 fields, and protobuf would silently wrap them to another point.
 */
export function point(latitude: number, longitude: number): routeguide.Point {
  if (!withinDegrees(latitude, maxLatitude))
    throw new RangeError(
      `latitude must be from -${maxLatitude} to ${maxLatitude} degrees, got ${latitude}`,
    );
  if (!withinDegrees(longitude, maxLongitude))
    throw new RangeError(
      `longitude must be from -${maxLongitude} to ${maxLongitude} degrees, got ${longitude}`,
    );
  return { latitude: toE7(latitude), longitude: toE7(longitude) };
}

export function formatPoint(p: routeguide.Point__Output | null | undefined): string {
  if (!p) return "(no point)";
  return `${(p.latitude / 1e7).toFixed(4)}, ${(p.longitude / 1e7).toFixed(4)}`;
}

/** A context that prints nothing: for the calls a command makes on its own behalf. */
export const quiet = (ctx: CommandContext): CommandContext => ({
  client: ctx.client,
  out: () => {},
  timeoutMs: ctx.timeoutMs,
});

const deadline = (ctx: CommandContext): grpc.CallOptions => ({
  deadline: Date.now() + ctx.timeoutMs,
});

function unary<Response>(
  start: (callback: grpc.requestCallback<Response>) => void,
): Promise<Response> {
  return new Promise((resolve, reject) =>
    start((error, response) =>
      error || response === undefined ? reject(error) : resolve(response),
    ),
  );
}

/**
 * Writes `messages` to a client stream in order, respecting flow control (when the stream's
 * buffer is full it waits for 'drain'), then ends the stream. Stops at once, without ending
 * the stream, when `stop` is aborted (the call is over: it failed, or the server answered
 * early) or the stream emits 'error' while it waits: grpc-js may never emit 'drain' after the
 * call has ended. Resolves with how many messages were written; rejects only if writing
 * itself throws.
 */
async function writeAll<Message>(
  stream: grpc.ClientWritableStream<Message> | grpc.ClientDuplexStream<Message, unknown>,
  messages: readonly Message[],
  stop: AbortSignal,
  onWritten: (index: number) => void = () => {},
): Promise<number> {
  for (const [index, message] of messages.entries()) {
    if (stop.aborted) return index;
    const more = stream.write(message);
    onWritten(index);
    if (!more) {
      try {
        await once(stream, "drain", { signal: stop });
      } catch {
        // Aborted (the call is over) or the stream failed: the call reports why.
        return index + 1;
      }
    }
  }
  if (!stop.aborted) stream.end();
  return messages.length;
}

export async function getFeature(ctx: CommandContext, at: routeguide.Point) {
  const response = await unary<gateway.GetFeatureResponse__Output>((done) =>
    ctx.client.GetFeature({ point: at }, countedCallMetadata(ctx), deadline(ctx), done),
  );
  ctx.answer?.("GetFeature", response);
  const { feature } = response;
  ctx.out(
    feature?.name
      ? `Feature at ${formatPoint(feature.location)}: ${feature.name}`
      : `No named feature at ${formatPoint(feature?.location)}`,
  );
  return feature;
}

export async function listFeatures(ctx: CommandContext, rectangle: routeguide.Rectangle) {
  const stream = ctx.client.ListFeatures({ rectangle }, deadline(ctx));
  const features: routeguide.Feature__Output[] = [];
  for await (const message of stream as AsyncIterable<gateway.ListFeaturesResponse__Output>) {
    ctx.answer?.("ListFeatures", message);
    if (!message.feature) continue;
    features.push(message.feature);
    ctx.out(
      `  ${String(features.length).padStart(4)}. ${message.feature.name} (${formatPoint(message.feature.location)})`,
    );
  }
  ctx.out(`${features.length} features in the rectangle`);
  return features;
}

export async function recordRoute(ctx: CommandContext, points: routeguide.Point[]) {
  const progressEvery = Math.max(1, Math.floor(points.length / 10));
  // Aborted when the call ends, so that the writer stops at once if it ends early (failed).
  const callEnded = new AbortController();
  let settle!: grpc.requestCallback<gateway.RecordRouteResponse__Output>;
  const result = unary<gateway.RecordRouteResponse__Output>((done) => {
    settle = done;
  });
  // Explicit ends: a cancel of this call (grpc-js sends a half-close, then a reset) can never
  // be taken for a complete route, which ends with end_of_route.
  const metadata = countedCallMetadata(ctx);
  metadata.set(routeEndHeader, explicitRouteEnd);
  const stream = ctx.client.RecordRoute(metadata, deadline(ctx), (error, response) => {
    callEnded.abort();
    settle(error, response);
  });
  const writing = writeAll(
    stream,
    [...points.map((p): gateway.RecordRouteRequest => ({ point: p })), { endOfRoute: true }],
    callEnded.signal,
    (index) => {
      if (index < points.length && (index + 1) % progressEvery === 0)
        ctx.out(`  sent ${index + 1}/${points.length} points`);
    },
  );
  // Both awaited at once: the call's error rejects this function as soon as it arrives.
  const [response] = await Promise.all([result, guardWriter(writing, stream)]);
  ctx.answer?.("RecordRoute", response);
  const { summary } = response;
  ctx.out(
    `Route: ${summary?.pointCount} points, ${summary?.featureCount} features passed, ` +
      `${summary?.distanceMeters} m, ${summary?.elapsedSeconds} s`,
  );
  return summary;
}

/** If writing throws, cancels the call (so it ends now, not at its deadline) and rethrows. */
async function guardWriter(writing: Promise<number>, call: { cancel(): void }): Promise<number> {
  try {
    return await writing;
  } catch (error) {
    call.cancel();
    throw error;
  }
}

export async function routeChat(ctx: CommandContext, notes: routeguide.RouteNote[]) {
  const stream = ctx.client.RouteChat(deadline(ctx));
  const received: routeguide.RouteNote__Output[] = [];
  // Aborted when the response stream is over (ended or failed): the writer stops at once.
  const callEnded = new AbortController();
  const reading = (async () => {
    try {
      for await (const message of stream as AsyncIterable<gateway.RouteChatResponse__Output>) {
        ctx.answer?.("RouteChat", message);
        if (!message.note) continue;
        received.push(message.note);
        ctx.out(`  earlier note at ${formatPoint(message.note.location)}: ${message.note.message}`);
      }
    } finally {
      callEnded.abort();
    }
  })();
  const writing = writeAll(
    stream,
    notes.map((note) => ({ note })),
    callEnded.signal,
    (index) => {
      const note = notes[index] as routeguide.RouteNote;
      ctx.out(`  > ${note.message} (at ${formatPoint(note.location as routeguide.Point__Output)})`);
    },
  );
  // Both awaited at once: the call's error rejects this function as soon as it arrives.
  const [, sent] = await Promise.all([reading, guardWriter(writing, stream)]);
  ctx.out(`Chat: sent ${sent} notes, received ${received.length} earlier notes`);
  return received;
}

export function formatSnapshot(snapshot: stats.StatsSnapshot__Output | null, out: Print): void {
  if (!snapshot) {
    out("(no statistics)");
    return;
  }
  out(
    `Routes recorded: ${snapshot.routesRecorded} (${snapshot.pointsRecorded} points, ` +
      `${snapshot.distanceMeters} m, ${snapshot.featuresPassed} features passed, ${snapshot.elapsedSeconds} s)`,
  );
  out(`Feature look-ups: ${snapshot.featureLookups}`);
  for (const entry of snapshot.topFeatures) {
    out(
      `  ${String(entry.lookups).padStart(6)} × ${entry.name || "(unnamed)"} at ${formatPoint(entry.location)}`,
    );
  }
  // Per end client, as the gateway saw it ("anonymous": a public gateway's caller without a
  // token; "" only from a stack running with AUTH_MODE=off, which verifies nobody).
  for (const caller of snapshot.callers) {
    out(
      `  caller ${caller.caller || "(none)"}: ${caller.routesRecorded} routes, ` +
        `${caller.featureLookups} look-ups`,
    );
  }
}

export async function getStats(ctx: CommandContext, topN: number) {
  const response = await unary<gateway.GetStatsResponse__Output>((done) =>
    ctx.client.GetStats({ topN }, deadline(ctx), done),
  );
  ctx.answer?.("GetStats", response);
  const { snapshot } = response;
  formatSnapshot(snapshot, ctx.out);
  return snapshot;
}

/**
 * Prints each update: the first is the statistics as they are, each later one a change. Stops
 * after `updates` of them (0: no limit), after `forMs` (0: no limit), when the stream ends, or
 * at Ctrl-C. Resolves with how many updates came.
 */
export async function watchStats(ctx: CommandContext, topN: number, updates: number, forMs = 0) {
  // A watch is long-lived: no deadline.
  const stream = ctx.client.WatchStats({ topN });
  let seen = 0;
  let timeUp = false;
  const timer =
    forMs > 0
      ? setTimeout(() => {
          timeUp = true;
          stream.cancel();
        }, forMs)
      : undefined;
  try {
    for await (const message of stream as AsyncIterable<gateway.WatchStatsResponse__Output>) {
      seen += 1;
      ctx.answer?.("WatchStats", message);
      ctx.out(`-- update ${seen} (version ${message.snapshot?.version})`);
      formatSnapshot(message.snapshot, ctx.out);
      if (updates > 0 && seen >= updates) break;
    }
  } catch (error) {
    // Our own cancel when the time is up ends the watch as asked, not as a failure.
    if (!(timeUp && (error as Partial<grpc.ServiceError>).code === grpc.status.CANCELLED))
      throw error;
  } finally {
    clearTimeout(timer);
    stream.cancel();
  }
  return seen;
}

export async function describeArea(
  ctx: CommandContext,
  rectangle: routeguide.Rectangle,
  topN: number,
) {
  const answer = await unary<gateway.DescribeAreaResponse__Output>((done) =>
    ctx.client.DescribeArea({ rectangle, topN }, deadline(ctx), done),
  );
  ctx.answer?.("DescribeArea", answer);
  ctx.out(`Area: ${answer.featureCount} named features, ${answer.lookupsInArea} look-ups inside`);
  for (const entry of answer.mostLookedUp) {
    ctx.out(
      `  ${String(entry.lookups).padStart(6)} × ${entry.feature?.name} at ${formatPoint(entry.feature?.location)}`,
    );
  }
  return answer;
}

/** The region of route's bundled data set, in degrees (see services/route/scripts). */
export const demoRegion = { lo: point(40, -75), hi: point(41, -74) };

/** A route of `count` points that passes a named feature every tenth point. */
export function makeRoute(
  features: routeguide.Feature__Output[],
  count: number,
): routeguide.Point[] {
  const points: routeguide.Point[] = [];
  for (let index = 0; index < count; index += 1) {
    const feature = features[index % Math.max(1, features.length)];
    if (index % 10 === 0 && feature?.location) points.push({ ...feature.location });
    else points.push(point(40 + Math.random(), -75 + Math.random()));
  }
  return points;
}

/** Calls every gateway method once, as a first look at a running system. */
export async function demo(ctx: CommandContext) {
  ctx.out("== ListFeatures (server streaming) over the whole region");
  // Its lines are left out (three of them follow), its answers are not.
  const features = await listFeatures({ ...ctx, out: () => {} }, demoRegion);
  ctx.out(`${features.length} features; the first three:`);
  for (const feature of features.slice(0, 3))
    ctx.out(`  ${feature.name} (${formatPoint(feature.location)})`);
  const first = features[0]?.location;
  if (!first) throw new Error("the gateway returned no features: is route's data set empty?");
  ctx.out("== GetFeature (unary)");
  await getFeature(ctx, first);
  await getFeature(ctx, point(0, 0));
  const before = await getStats(quiet(ctx), 1);
  ctx.out("== RecordRoute (client streaming), 1000 points");
  await recordRoute(ctx, makeRoute(features, 1000));
  ctx.out("== RouteChat (bidi streaming)");
  await routeChat(ctx, [
    { location: first, message: "first visit" },
    { location: point(40.5, -74.5), message: "somewhere else" },
    { location: first, message: "back again" },
  ]);
  ctx.out("== DescribeArea (gateway asks route and stats at once)");
  await describeArea(ctx, demoRegion, 3);
  ctx.out("== GetStats (unary)");
  // route reports to stats off the client's path: wait (a little) until the route shows.
  const recorded = (before?.routesRecorded ?? 0) + 1;
  for (let tries = 0; tries < 50; tries += 1) {
    const now = await getStats(quiet(ctx), 1);
    if ((now?.routesRecorded ?? 0) >= recorded) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await getStats(ctx, 3);
  ctx.out("== WatchStats (server streaming), first update");
  await watchStats(ctx, 3, 1);
}
