// Generates this service's own feature data set (data/features.json): named places in a
// made-up region, from a fixed seed, so the file is reproducible and test/features.test.ts
// can check that it is exactly what this script makes.
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const featureSeed = 20261125;
export const featureCount = 150;

// The region: a 1° × 1° box (E7 units), wide enough for routes of many kilometres.
const region = { latitude: 400_000_000, longitude: -750_000_000, size: 10_000_000 };

const adjectives = [
  "Quiet",
  "Old",
  "Windy",
  "Red",
  "Lone",
  "High",
  "Hidden",
  "Silver",
  "Cedar",
  "Stony",
  "Misty",
  "Golden",
];
const nouns = [
  "Harbor",
  "Mill",
  "Ridge",
  "Creek",
  "Orchard",
  "Meadow",
  "Quarry",
  "Pine",
  "Heron",
  "Fox",
  "Lantern",
  "Bell",
];
const kinds = [
  "Bridge",
  "Lookout",
  "Crossing",
  "Station",
  "Chapel",
  "Pier",
  "Tower",
  "Market",
  "Gate",
  "Well",
];

// mulberry32: a tiny, well-known seeded PRNG; good enough for test data.
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function generateFeatures(seed = featureSeed, count = featureCount) {
  const next = random(seed);
  const pick = (list) => list[Math.floor(next() * list.length)];
  const names = new Set();
  const locations = new Set();
  const features = [];
  while (features.length < count) {
    const name = `${pick(adjectives)} ${pick(nouns)} ${pick(kinds)}`;
    // Round to 1e-4 degrees (about 11 m) so points are easy to type in the CLI.
    const latitude = region.latitude + Math.floor(next() * (region.size / 1000)) * 1000;
    const longitude = region.longitude + Math.floor(next() * (region.size / 1000)) * 1000;
    const key = `${latitude},${longitude}`;
    if (names.has(name) || locations.has(key)) continue;
    names.add(name);
    locations.add(key);
    features.push({ name, location: { latitude, longitude } });
  }
  return features;
}

const isMain = process.argv[1] === fileURLToPath(import.meta.url);
if (isMain) {
  const target = join(dirname(fileURLToPath(import.meta.url)), "..", "data", "features.json");
  writeFileSync(target, `${JSON.stringify(generateFeatures(), null, 1)}\n`);
  console.log(`wrote ${featureCount} features to ${target}`);
}
