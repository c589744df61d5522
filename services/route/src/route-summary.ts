// RecordRoute's arithmetic, apart from the stream plumbing so it can be tested directly.

import { distanceMeters, type Point, pointKey } from "@cloudrun-grpc/domain";
import type { FeatureIndex } from "./features.js";

export interface RouteSummary {
  pointCount: number;
  featureCount: number;
  distanceMeters: number;
  elapsedSeconds: number;
}

export class RouteRecorder {
  private pointCount = 0;
  private meters = 0;
  private previous: Point | undefined;
  private firstPointAt: number | undefined;
  private readonly featuresPassed = new Set<string>();

  constructor(
    private readonly features: FeatureIndex,
    private readonly now: () => number = Date.now,
  ) {}

  get points(): number {
    return this.pointCount;
  }

  add(point: Point): void {
    this.firstPointAt ??= this.now();
    this.pointCount += 1;
    if (this.previous) this.meters += distanceMeters(this.previous, point);
    if (this.features.at(point)) this.featuresPassed.add(pointKey(point));
    this.previous = point;
  }

  /** The summary when the stream ends: distance rounded to whole metres, time to whole seconds. */
  summary(): RouteSummary {
    const elapsedMs = this.firstPointAt === undefined ? 0 : this.now() - this.firstPointAt;
    return {
      pointCount: this.pointCount,
      featureCount: this.featuresPassed.size,
      distanceMeters: Math.round(this.meters),
      elapsedSeconds: Math.floor(elapsedMs / 1000),
    };
  }
}
