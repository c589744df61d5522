import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { allowedInvokerEmails, loadTopology } from "../src/topology.js";

function topologyFile(content: unknown): string {
  const path = join(mkdtempSync(join(tmpdir(), "topology-")), "topology.json");
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

const service = (invokedBy: string[], id: string) => ({
  service_account_id: id,
  invoked_by: invokedBy,
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
    assert.deepEqual(allowedInvokerEmails(loadTopology(path), "gateway", "p"), [
      "ana@example.com",
      "ci@p.iam.gserviceaccount.com",
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
});
