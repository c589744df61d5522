// infra/topology.json is the one source of the call graph: it must allow exactly the calls
// the code makes. Each service's config names the peers it calls (`<PEER>_URL`; the AUTH_*
// settings and stats' STATS_DATABASE_URL are not peers).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadTopology, topologyEdges } from "@cloudrun-grpc/auth-client/topology";
import { gatewayConfigSchema } from "../services/gateway/src/config.js";
import { routeConfigSchema } from "../services/route/src/config.js";
import { statsConfigSchema } from "../services/stats/src/config.js";

const configs = {
  gateway: gatewayConfigSchema,
  route: routeConfigSchema,
  stats: statsConfigSchema,
};
const codeEdges = Object.entries(configs)
  .flatMap(([caller, schema]) =>
    Object.keys(schema.shape)
      .filter((key) => /^[A-Z]+_URL$/.test(key) && !key.startsWith("AUTH_"))
      .map((key) => `${caller}→${key.slice(0, -"_URL".length).toLowerCase()}`),
  )
  .sort();

describe("infra/topology.json against the code", () => {
  test("allows exactly the calls the code makes: every edge used, no edge unused", () => {
    assert.deepEqual(codeEdges, ["gateway→route", "gateway→stats", "route→stats"]);
    assert.deepEqual(topologyEdges(loadTopology()), codeEdges);
  });

  test("names every service of the code, and nothing else", () => {
    assert.deepEqual(Object.keys(loadTopology().services).sort(), Object.keys(configs).sort());
  });
});
