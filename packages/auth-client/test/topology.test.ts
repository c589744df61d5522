import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  allowedInvokerEmails,
  allowedInvokers,
  loadTopology,
  topologyMethodEdges,
} from "../src/topology.js";

function topologyFile(content: unknown): string {
  const path = join(mkdtempSync(join(tmpdir(), "topology-")), "topology.json");
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

const service = (invokedBy: string[], id: string, methods = ["Call"]) => ({
  service_account_id: id,
  invoked_by: Object.fromEntries(invokedBy.map((caller) => [caller, methods])),
  external_invokers: [],
});

describe("topology", () => {
  test("allowed invokers are the callers' service account emails in the project", () => {
    const topology = loadTopology();
    assert.deepEqual(allowedInvokerEmails(topology, "stats", "my-project"), [
      `${topology.services.gateway?.service_account_id}@my-project.iam.gserviceaccount.com`,
      `${topology.services.route?.service_account_id}@my-project.iam.gserviceaccount.com`,
    ]);
    assert.deepEqual(allowedInvokerEmails(topology, "gateway", "my-project"), []);
    assert.deepEqual(allowedInvokers(topology, "stats", "p"), [
      { email: "gateway-svc@p.iam.gserviceaccount.com", methods: ["GetStats", "WatchStats"] },
      { email: "route-svc@p.iam.gserviceaccount.com", methods: ["RecordEvents"] },
    ]);
    assert.throws(() => allowedInvokerEmails(topology, "nope", "my-project"), /no service "nope"/);
  });

  test("external invokers are allowed by their email; groups and domains are refused", () => {
    const path = topologyFile({
      services: {
        gateway: {
          ...service([], "gateway-svc"),
          external_invokers: [
            "user:ana@example.com",
            "serviceAccount:ci@p.iam.gserviceaccount.com",
          ],
        },
      },
    });
    assert.deepEqual(allowedInvokers(loadTopology(path), "gateway", "p"), [
      { email: "ana@example.com" },
      { email: "ci@p.iam.gserviceaccount.com" },
    ]);
    const group = topologyFile({
      services: {
        gateway: { ...service([], "gateway-svc"), external_invokers: ["group:devs@example.com"] },
      },
    });
    assert.throws(
      () => loadTopology(group),
      /groups and domains cannot be checked in the container/,
    );
  });

  test("a bad topology is refused with the file and the field named", () => {
    const cases: [unknown, RegExp][] = [
      [
        { services: { a: service(["ghost"], "a-service") } },
        /services\.a\.invoked_by: unknown service "ghost"/,
      ],
      [
        { services: { a: service(["a"], "a-service") } },
        /services\.a\.invoked_by: a service does not invoke itself/,
      ],
      [
        { services: { a: service([], "a-service"), b: service(["a"], "b-service", []) } },
        /services\.b\.invoked_by\.a: names the methods the caller may call/,
      ],
      [
        {
          services: {
            a: service([], "a-service"),
            b: service(["a"], "b-service", ["getStats"]),
          },
        },
        /services\.b\.invoked_by\.a\.0: must be a method name/,
      ],
      [
        { services: { a: { ...service([], "a-service"), invoked_by: ["b"] } } },
        /services\.a\.invoked_by: /,
      ],
      [
        { services: { a: service([], "A") } },
        /services\.a\.service_account_id: must be a valid service account id/,
      ],
      [
        {
          services: { a: { ...service([], "a-service"), external_invokers: ["ana@example.com"] } },
        },
        /external_invokers\.0: must be user:<email> or serviceAccount:<email>/,
      ],
    ];
    for (const [content, message] of cases) {
      const path = topologyFile(content);
      assert.throws(
        () => loadTopology(path),
        (error: Error) => {
          assert.ok(error.message.startsWith(path), error.message);
          assert.match(error.message, message);
          return true;
        },
      );
    }
    assert.throws(() => loadTopology(topologyFile("{")), /cannot read the topology/);
  });

  test("each edge names its methods: the gateway reads stats, route writes to it", () => {
    assert.deepEqual(topologyMethodEdges(loadTopology()), [
      "gateway→route/GetFeature",
      "gateway→route/ListFeatures",
      "gateway→route/RecordRoute",
      "gateway→route/RouteChat",
      "gateway→stats/GetStats",
      "gateway→stats/WatchStats",
      "route→stats/RecordEvents",
    ]);
  });
});
