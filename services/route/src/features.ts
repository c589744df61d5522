// The feature data set shipped with this package (data/features.json, made by
// scripts/generate-features.mjs), loaded once at start and indexed by location.
import { readFileSync } from "node:fs";
import { type Bounds, contains, type Point, pointKey } from "@cloudrun-grpc/domain";
import { z } from "zod";

export interface Feature {
  name: string;
  location: Point;
}

const featureFile = z.array(
  z.object({
    name: z.string().min(1),
    location: z.object({ latitude: z.number().int(), longitude: z.number().int() }),
  }),
);

export const bundledFeaturesPath = new URL("../data/features.json", import.meta.url);

export class FeatureIndex {
  private readonly byLocation = new Map<string, Feature>();

  constructor(readonly features: readonly Feature[]) {
    for (const feature of features) this.byLocation.set(pointKey(feature.location), feature);
  }

  /** Reads and checks a features file; throws with the file name and the first problem. */
  static load(path: string | URL = bundledFeaturesPath): FeatureIndex {
    let content: unknown;
    try {
      content = JSON.parse(readFileSync(path, "utf8"));
    } catch (error) {
      throw new Error(`${String(path)}: cannot read features: ${(error as Error).message}`);
    }
    const parsed = featureFile.safeParse(content);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue?.path.length ? `[${issue.path.join("].[")}]` : "the file";
      throw new Error(`${String(path)}: not a features file: ${where}: ${issue?.message}`);
    }
    return new FeatureIndex(parsed.data);
  }

  /** The named feature at exactly this point, if any. */
  at(point: Point): Feature | undefined {
    return this.byLocation.get(pointKey(point));
  }

  *within(bounds: Bounds): Generator<Feature> {
    for (const feature of this.features) if (contains(bounds, feature.location)) yield feature;
  }
}
