// Steady, bounded load through the gateway for the reliability tests: a few workers, each
// calling GetFeature and now and then RecordRoute (a short route over features of the data
// set) with a deadline on every call, until told to stop or a fixed number of calls is made.
// It keeps what it sent and what came back, so stats' totals can be checked against it.
import { readFileSync } from "node:fs";
import type { GatewayServiceClient, gateway } from "@cloudrun-grpc/proto";
import { deadline, eventually, unary } from "./grpc.js";

interface Point {
  latitude: number;
  longitude: number;
}
const featurePoints: Point[] = (
  JSON.parse(
    readFileSync(new URL("../../services/route/data/features.json", import.meta.url), "utf8"),
  ) as { location: Point }[]
).map(({ location }) => location);

/** What route must have reported to stats for the calls that succeeded. */
export interface Sent {
  featureLookups: number;
  routesRecorded: number;
  pointsRecorded: number;
  distanceMeters: number;
  featuresPassed: number;
  elapsedSeconds: number;
}

export interface LoadOptions {
  workers: number;
  /** No more calls than this in all. */
  maxCalls: number;
  /** Every nth call is a RecordRoute, the others GetFeature. */
  routeEvery: number;
  /** Each call's deadline. */
  deadlineMs: number;
  /** A worker's pause between its calls (keeps the load modest). */
  pauseMs: number;
}

/** The fault tests' steady load: four workers, a RecordRoute every fourth call, 3 s deadlines. */
export const steadyLoad: LoadOptions = {
  workers: 4,
  maxCalls: 3_000,
  routeEvery: 4,
  deadlineMs: 3_000,
  pauseMs: 40,
};

export class Load {
  readonly sent: Sent = {
    featureLookups: 0,
    routesRecorded: 0,
    pointsRecorded: 0,
    distanceMeters: 0,
    featuresPassed: 0,
    elapsedSeconds: 0,
  };
  /** Calls started so far. */
  calls = 0;
  /** Every call that failed, with its error (the tests expect none). */
  readonly failures: { method: string; error: Error }[] = [];
  private stopping = false;
  private readonly done: Promise<void>;

  constructor(
    private readonly client: GatewayServiceClient,
    private readonly options: LoadOptions,
  ) {
    this.done = Promise.all(
      Array.from({ length: options.workers }, (_, worker) => this.work(worker)),
    ).then(() => {});
  }

  /** Stops starting calls; resolves when the calls in flight have ended. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.done;
  }

  /** Resolves once `count` calls have been started (or the load has stopped). */
  async started(count: number): Promise<void> {
    while (this.calls < count && !this.stopping && this.calls < this.options.maxCalls) {
      await sleep(20);
    }
  }

  /**
   * One more GetFeature after the load has stopped, counted in `sent`. route sends its reports
   * in order, each batch retried until acknowledged before the next, so once stats has counted
   * this one it has seen every report before it: totals equal to `sent` then are final.
   */
  async marker(): Promise<void> {
    await this.getFeature(0);
  }

  private async work(worker: number): Promise<void> {
    while (!this.stopping && this.calls < this.options.maxCalls) {
      this.calls += 1;
      const call = this.calls;
      const route = call % this.options.routeEvery === 0;
      try {
        if (route) await this.recordRoute(call);
        else await this.getFeature(call);
      } catch (error) {
        this.failures.push({ method: route ? "RecordRoute" : "GetFeature", error: error as Error });
      }
      await sleep(this.options.pauseMs + worker);
    }
  }

  private async getFeature(call: number): Promise<void> {
    const point = pointAt(call);
    await unary<gateway.GetFeatureResponse__Output>((done) =>
      this.client.GetFeature({ point }, deadline(this.options.deadlineMs), done),
    );
    this.sent.featureLookups += 1;
  }

  private async recordRoute(call: number): Promise<void> {
    const points = Array.from({ length: 1 + (call % 7) }, (_, index) => pointAt(call + index));
    const { summary } = await unary<gateway.RecordRouteResponse__Output>((done) => {
      const stream = this.client.RecordRoute(deadline(this.options.deadlineMs), done);
      for (const point of points) stream.write({ point });
      stream.end();
    });
    if (!summary) throw new Error("RecordRoute answered without a summary");
    this.sent.routesRecorded += 1;
    this.sent.pointsRecorded += summary.pointCount;
    this.sent.distanceMeters += Number(summary.distanceMeters);
    this.sent.featuresPassed += summary.featureCount;
    this.sent.elapsedSeconds += Number(summary.elapsedSeconds);
  }
}

/** Stats' totals, read through the gateway (zeros when the read fails: stats may be down). */
export async function readTotals(client: GatewayServiceClient): Promise<Sent> {
  const { snapshot } = await unary<gateway.GetStatsResponse__Output>((done) =>
    client.GetStats({ topN: 1 }, deadline(5_000), done),
  ).catch(() => ({ snapshot: null }));
  return totalsOf(snapshot);
}

/**
 * Reads stats' totals until they have caught up with `sent` (every look-up and route counted
 * at least once) or `timeoutMs` passes, and returns the last read.
 */
export function totalsOnceCaughtUp(
  client: GatewayServiceClient,
  sent: Sent,
  timeoutMs: number,
): Promise<Sent> {
  return eventually(
    () => readTotals(client),
    (totals) =>
      totals.featureLookups >= sent.featureLookups && totals.routesRecorded >= sent.routesRecorded,
    timeoutMs,
  );
}

/** A feature's location, picked by the call's number (so look-ups repeat over locations). */
function pointAt(call: number): Point {
  return featurePoints[call % 50] as Point;
}

/** The totals of a stats snapshot, in the shape of `Sent`. */
export function totalsOf(snapshot: gateway.GetStatsResponse__Output["snapshot"]): Sent {
  return {
    featureLookups: Number(snapshot?.featureLookups ?? 0),
    routesRecorded: Number(snapshot?.routesRecorded ?? 0),
    pointsRecorded: Number(snapshot?.pointsRecorded ?? 0),
    distanceMeters: Number(snapshot?.distanceMeters ?? 0),
    featuresPassed: Number(snapshot?.featuresPassed ?? 0),
    elapsedSeconds: Number(snapshot?.elapsedSeconds ?? 0),
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
