import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { type Bounds, pointKey, requirePoint } from "@cloudrun-grpc/domain";
import { bundledFeaturesPath, type Feature, FeatureIndex } from "../src/features.js";

// The generator is plain JavaScript without type declarations: import it by URL and type it here.
const generatorUrl = new URL("../scripts/generate-features.mjs", import.meta.url).href;
const { generateFeatures } = (await import(generatorUrl)) as {
  generateFeatures: () => Feature[];
};

describe("the bundled features file", () => {
  const index = FeatureIndex.load();
  const { features } = index;

  test("has at least 100 features", () => {
    assert.ok(features.length >= 100, `only ${features.length}`);
  });

  test("names are non-empty and unique", () => {
    for (const feature of features) assert.notEqual(feature.name.trim(), "");
    assert.equal(new Set(features.map((feature) => feature.name)).size, features.length);
  });

  test("locations are valid E7 points and unique", () => {
    for (const feature of features) {
      assert.doesNotThrow(() => requirePoint(feature.location, feature.name));
    }
    assert.equal(
      new Set(features.map((feature) => pointKey(feature.location))).size,
      features.length,
    );
  });

  test("is exactly what scripts/generate-features.mjs generates", () => {
    const generated = generateFeatures();
    assert.deepEqual(features, generated);
    assert.equal(
      readFileSync(bundledFeaturesPath, "utf8"),
      `${JSON.stringify(generated, null, 1)}\n`,
    );
  });
});

describe("FeatureIndex", () => {
  const index = FeatureIndex.load();
  const [first, second] = index.features;
  assert.ok(first && second);

  test("at() finds a feature by its exact point", () => {
    assert.deepEqual(index.at({ ...first.location }), first);
    assert.deepEqual(index.at({ ...second.location }), second);
  });

  test("at() misses a point one unit off", () => {
    const { latitude, longitude } = first.location;
    assert.equal(index.at({ latitude: latitude + 1, longitude }), undefined);
    assert.equal(index.at({ latitude, longitude: longitude - 1 }), undefined);
  });

  test("within() yields exactly the features inside the rectangle, edges included", () => {
    const bounds: Bounds = {
      minLatitude: 404_000_000,
      maxLatitude: 406_000_000,
      minLongitude: -748_000_000,
      maxLongitude: -745_000_000,
    };
    const expected = index.features.filter(
      ({ location }) =>
        location.latitude >= 404_000_000 &&
        location.latitude <= 406_000_000 &&
        location.longitude >= -748_000_000 &&
        location.longitude <= -745_000_000,
    );
    assert.ok(expected.length > 0 && expected.length < index.features.length);
    assert.deepEqual([...index.within(bounds)], expected);
  });

  test("within() a rectangle that is one feature's point yields that feature", () => {
    const { latitude, longitude } = first.location;
    const bounds: Bounds = {
      minLatitude: latitude,
      maxLatitude: latitude,
      minLongitude: longitude,
      maxLongitude: longitude,
    };
    assert.deepEqual([...index.within(bounds)], [first]);
  });

  test("within() a rectangle outside the region yields nothing", () => {
    const bounds: Bounds = { minLatitude: 0, maxLatitude: 10, minLongitude: 0, maxLongitude: 10 };
    assert.deepEqual([...index.within(bounds)], []);
  });

  /** Writes `content` to a temporary features file and returns what load() throws for it. */
  function loadError(content: string): { path: string; error: unknown } {
    const dir = mkdtempSync(join(tmpdir(), "features-test-"));
    const path = join(dir, "bad-features.json");
    try {
      writeFileSync(path, content);
      FeatureIndex.load(path);
      return { path, error: undefined };
    } catch (error) {
      return { path, error };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test("load() of a file that is not a features file throws an error naming the file", () => {
    const { path, error } = loadError('[{"name": ""}]');
    assert.ok(error instanceof Error, "load() did not throw");
    assert.ok(error.message.startsWith(`${path}: not a features file: `), error.message);
  });

  test("load() of a file that is not JSON throws an error naming the file", () => {
    const { path, error } = loadError('[{"name": "Old Mill",');
    assert.ok(error instanceof Error, "load() did not throw");
    assert.ok(error.message.includes(path), error.message);
  });
});
