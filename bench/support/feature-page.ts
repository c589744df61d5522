// The payload section's data, the same for its gRPC and JSON servers and for the bench that
// checks their answers: a catalogue of route's features (the features file, repeated with
// shifted locations), served a page of N at a time, and the bench-only contract
// bench/protos/bench/v1/feature_page.proto loaded as the services load theirs.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { protosDir } from "@cloudrun-grpc/proto";
import * as protoLoader from "@grpc/proto-loader";

export interface Feature {
  name: string;
  location: { latitude: number; longitude: number };
}

/** The largest page the servers serve: about 1.5 MiB as protobuf, past the 1 MiB step. */
export const catalogueSize = 40_000;
export const grpcService = "bench.v1.FeaturePageService";
export const grpcPath = `/${grpcService}/GetFeaturePage`;
export const jsonPath = "/v1/featurePages:get";

/**
 * `count` features: the file's, over and over, each round's locations moved 0.001° north so
 * that no two are alike (protobuf and JSON sizes stay those of real features).
 */
export function featureCatalogue(source: Feature[], count: number): Feature[] {
  return Array.from({ length: count }, (_, index) => {
    const feature = source[index % source.length] as Feature;
    const round = Math.floor(index / source.length);
    return {
      name: feature.name,
      location: {
        latitude: feature.location.latitude + round * 10_000,
        longitude: feature.location.longitude,
      },
    };
  });
}

export function loadCatalogue(): Feature[] {
  const source = JSON.parse(
    readFileSync(new URL("../../services/route/data/features.json", import.meta.url), "utf8"),
  ) as Feature[];
  return featureCatalogue(source, catalogueSize);
}

// The services' own loader options (packages/proto's loader-options.json), so that messages
// go through proto-loader and protobuf.js exactly as theirs do: fromObject, then encode.
const loaderOptions = JSON.parse(
  readFileSync(new URL("../../packages/proto/src/loader-options.json", import.meta.url), "utf8"),
) as { keepCase: boolean; defaults: boolean; oneofs: boolean };

export const packageDefinition = protoLoader.loadSync("bench/v1/feature_page.proto", {
  keepCase: loaderOptions.keepCase,
  longs: Number,
  enums: String,
  defaults: loaderOptions.defaults,
  oneofs: loaderOptions.oneofs,
  includeDirs: [protosDir, fileURLToPath(new URL("../protos/", import.meta.url))],
});

const method = (packageDefinition[grpcService] as protoLoader.ServiceDefinition)
  .GetFeaturePage as protoLoader.MethodDefinition<
  { pageSize: number },
  { features: Feature[] },
  { pageSize: number },
  { features: Feature[] }
>;

export const encodeRequest = (pageSize: number): Buffer => method.requestSerialize({ pageSize });
export const encodePage = (features: Feature[]): Buffer => method.responseSerialize({ features });
export const decodePage = (message: Buffer): { features: Feature[] } =>
  method.responseDeserialize(message);

/**
 * The page size whose encoded size (`sizeOf`, which grows with the count) is nearest to
 * `targetBytes`, between 1 and `max`: a binary search for the first count at or past the
 * target, then the nearer of it and the one before.
 */
export function pageSizeFor(
  targetBytes: number,
  sizeOf: (count: number) => number,
  max: number,
): number {
  let low = 1;
  let high = max;
  while (low < high) {
    const middle = Math.floor((low + high) / 2);
    if (sizeOf(middle) >= targetBytes) high = middle;
    else low = middle + 1;
  }
  if (low > 1 && targetBytes - sizeOf(low - 1) <= sizeOf(low) - targetBytes) return low - 1;
  return low;
}
