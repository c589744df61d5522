// infra/topology.json is the one source of the call graph: it must allow exactly the calls
// the code makes, method by method. Each service's config names the peers it calls
// (`<PEER>_URL`; the AUTH_* settings and stats' STATS_DATABASE_URL are not peers), and its
// sources name the methods it calls on each (`<client>.<Method>(`, or `peerPath("<Method>")` for
// the gateway's pass-through methods, a method of the peer's
// service in the .proto contracts).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  loadTopology,
  topologyEdges,
  topologyMethodEdges,
} from "@cloudrun-grpc/auth-client/topology";
import { gatewayConfigSchema } from "@cloudrun-grpc/gateway/config";
import { packageDefinition, passThroughMethods, serviceNames } from "@cloudrun-grpc/proto";
import { routeConfigSchema } from "@cloudrun-grpc/route/config";
import { statsConfigSchema } from "@cloudrun-grpc/stats/config";

const configs = {
  gateway: gatewayConfigSchema,
  route: routeConfigSchema,
  stats: statsConfigSchema,
};
const contracts: Record<string, string> = {
  gateway: serviceNames.gateway,
  route: serviceNames.routeGuide,
  stats: serviceNames.stats,
};
const peersOf = (caller: keyof typeof configs) =>
  Object.keys(configs[caller].shape)
    .filter((key) => /^[A-Z]+_URL$/.test(key) && !key.startsWith("AUTH_"))
    .map((key) => key.slice(0, -"_URL".length).toLowerCase());
const codeEdges = Object.keys(configs)
  .flatMap((caller) =>
    peersOf(caller as keyof typeof configs).map((callee) => `${caller}→${callee}`),
  )
  .sort();

/** The methods of `callee`'s contract that `caller`'s sources call, as "caller→callee/Method". */
function calledMethods(caller: string, callee: string): string[] {
  const contract = contracts[callee];
  assert.ok(contract, `no contract for ${callee}`);
  const methods = Object.values(
    packageDefinition[contract] as Record<string, { path: string }>,
  ).map((method) => method.path.split("/")[2] as string);
  const dir = fileURLToPath(new URL(`../services/${caller}/src`, import.meta.url));
  const sources = readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith(".ts"))
    .map((file) =>
      readFileSync(join(dir, file), "utf8")
        .replace(/\/\*[\s\S]*?\*\//g, "")
        .replace(/\/\/.*$/gm, ""),
    )
    .join("\n");
  // The gateway's pass-through methods call the peer by path: `peerPath("WatchStats")`.
  const byPath = Object.entries(passThroughMethods)
    .filter(([ours]) => new RegExp(`peerPath\\("${ours}"\\)`).test(sources))
    .filter(([, peer]) => peer.service === contract)
    .map(([, peer]) => peer.method as string);
  return methods
    .filter((method) => new RegExp(`\\.${method}\\(`).test(sources) || byPath.includes(method))
    .map((method) => `${caller}→${callee}/${method}`);
}

describe("infra/topology.json against the code", () => {
  test("allows exactly the calls the code makes: every edge used, no edge unused", () => {
    assert.deepEqual(codeEdges, ["gateway→route", "gateway→stats", "route→stats"]);
    assert.deepEqual(topologyEdges(loadTopology()), codeEdges);
  });

  test("grants each caller exactly the methods its code calls on each peer", () => {
    const called = codeEdges
      .flatMap((edge) => {
        const [caller, callee] = edge.split("→") as [string, string];
        return calledMethods(caller, callee);
      })
      .sort();
    // The rule of the issue, spelled out: the gateway only reads stats; only route writes.
    assert.deepEqual(
      called.filter((edge) => edge.includes("→stats/")),
      ["gateway→stats/GetStats", "gateway→stats/WatchStats", "route→stats/RecordEvents"],
    );
    assert.deepEqual(topologyMethodEdges(loadTopology()), called);
  });

  test("names every service of the code, and nothing else", () => {
    assert.deepEqual(Object.keys(loadTopology().services).sort(), Object.keys(configs).sort());
  });
});
