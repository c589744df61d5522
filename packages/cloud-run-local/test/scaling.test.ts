// Instances as Cloud Run runs them, with small numbers: at most max_instance_request_concurrency
// streams per instance, more load starts instances up to the maximum, waiting requests queue for
// a bounded time, idle instances are scaled in (SIGTERM) but never below the minimum, an
// instance takes traffic only once its startup probe passes, and a failed liveness probe
// restarts it.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "@cloudrun-grpc/local-authority";
import * as grpc from "@grpc/grpc-js";
import { type CloudRunLocal, startCloudRunLocal } from "../src/index.js";
import {
  collectingLogger,
  type EchoClient,
  echoClient,
  fixture,
  holdOpen,
  identities,
  makeTestInfra,
  quickProbes,
  tokenFor,
  waitFor,
} from "./support.js";

const idleMs = 300;
const pendingMs = 1_000;
// The contract's grace is 10 s; shorter here, so a test can watch SIGKILL follow it.
const shutdownGraceMs = 1_500;

describe("cloud-run-local: instances and autoscaling", () => {
  let infra: ReturnType<typeof makeTestInfra>;
  let authority: LocalTokenAuthority;
  let local: CloudRunLocal;
  const log = collectingLogger();
  const printed: { instance: string; line: string }[] = [];
  const clients: EchoClient[] = [];
  const auth: Record<string, Record<string, string>> = {};

  const client = (service: string) => {
    const made = echoClient(local.services[service]?.url as string, local.caPem);
    clients.push(made);
    return made;
  };
  const pidsOf = (service: string) =>
    (local.services[service]?.instances() ?? []).map((instance) => instance.pid);

  before(async () => {
    infra = makeTestInfra();
    authority = await startLocalTokenAuthority({ identities });
    local = await startCloudRunLocal({
      infraDir: infra.dir,
      variables: { project_id: "test-project" },
      services: {
        scaled: {
          entry: fixture,
          ...quickProbes,
          livenessProbe: { periodSeconds: 0.1, failureThreshold: 2 },
        },
        // Listening at once, but not SERVING under its name for 400 ms; deaf to SIGTERM.
        late: {
          entry: fixture,
          ...quickProbes,
          env: { FIXTURE_READY_AFTER_MS: "400", FIXTURE_IGNORE_SIGTERM: "1" },
        },
      },
      authority,
      // Terraform says 50 per instance; two streams fill one here.
      overrides: { scaled: { maxConcurrency: 2 } },
      scaling: { idleMs, pendingMs, shutdownGraceMs },
      logger: log.logger,
      onLine: (_, instance, line) => printed.push({ instance, line }),
    });
    for (const service of ["scaled", "late"]) {
      const token = await tokenFor(authority, "tester", local.services[service]?.url as string);
      auth[service] = { authorization: `Bearer ${token}` };
    }
  });
  after(async () => {
    for (const made of clients) made.close();
    await local?.stop();
    await authority?.close();
    infra?.remove();
  });

  test("takes two streams per instance, scales out to the maximum, queues, then refuses", async () => {
    const scaled = client("scaled");
    const headers = auth.scaled as Record<string, string>;
    assert.equal(pidsOf("scaled").length, 1, "the minimum of one instance at start");

    const first = await holdOpen(scaled, headers);
    const second = await holdOpen(scaled, headers);
    assert.equal(await second.pid, await first.pid, "two streams share one instance");

    // A third stream does not fit: a second instance starts for it.
    const third = await holdOpen(scaled, headers);
    const fourth = await holdOpen(scaled, headers);
    assert.notEqual(await third.pid, await first.pid);
    assert.equal(await fourth.pid, await third.pid);
    assert.equal(pidsOf("scaled").length, 2);
    const started = log.lines.filter(
      (line) => line.event === "instance started" && line.service === "scaled",
    );
    assert.equal(started.length, 2);
    assert.match(String(started[1]?.reason), /1 requests waiting/);

    // At the maximum (2 instances × 2): a fifth waits until a stream ends, then takes its slot.
    assert.deepEqual(
      local.services.scaled?.instances().map((instance) => instance.active),
      [2, 2],
    );
    const fifth = await holdOpen(scaled, headers);
    first.stream.end();
    assert.equal((await first.ended).code, grpc.status.OK);
    assert.equal(await fifth.pid, await first.pid);
    assert.equal(pidsOf("scaled").length, 2, "no instance beyond the maximum");

    // A sixth finds every slot taken for longer than it may wait: refused.
    const began = Date.now();
    const sixth = await holdOpen(scaled, headers);
    const status = await sixth.ended;
    assert.equal(status.code, grpc.status.UNAVAILABLE);
    assert.equal(status.details, "Received HTTP status code 429");
    assert.ok(Date.now() - began >= pendingMs - 50, `refused after ${Date.now() - began} ms`);
    assert.ok(log.lines.some((line) => line.event === "request refused" && line.status === 429));

    for (const open of [second, third, fourth, fifth]) open.stream.end();
    for (const open of [second, third, fourth, fifth])
      assert.equal((await open.ended).code, grpc.status.OK);
  });

  test("scales idle instances in with SIGTERM, never below the minimum", async () => {
    await waitFor(() => pidsOf("scaled").length === 1, "the idle instance above the minimum to go");
    const scaledIn = log.lines.filter(
      (line) => line.event === "instance scaled in" && line.service === "scaled",
    );
    assert.equal(scaledIn.length, 1);
    const stopped = log.lines.find(
      (line) => line.event === "instance stopped" && line.instance === scaledIn[0]?.instance,
    );
    assert.equal(stopped?.exit, 0, "it ended on SIGTERM, within the grace");
    assert.ok(
      printed.some(
        ({ instance, line }) =>
          instance === scaledIn[0]?.instance && line.includes('"event":"sigterm"'),
      ),
    );
    // The last one stays, however long it idles.
    const [remaining] = local.services.scaled?.instances() ?? [];
    await waitFor(
      () => Date.now() - (remaining?.idleSince ?? 0) > 3 * idleMs,
      "three idle periods",
    );
    assert.deepEqual(pidsOf("scaled"), [remaining?.pid]);
  });

  test("kills an instance that ignores SIGTERM once the grace has passed", async () => {
    // late's minimum is 0: its first instance scales in, and it does not stop on SIGTERM.
    await waitFor(() => pidsOf("late").length === 0, "late to scale to zero");
    const scaledIn = log.lines.find(
      (line) => line.event === "instance scaled in" && line.service === "late",
    );
    const stopped = log.lines.find(
      (line) => line.event === "instance stopped" && line.service === "late",
    );
    assert.equal(stopped?.exit, "SIGKILL");
    assert.ok(
      printed.some(
        ({ instance, line }) =>
          instance === stopped?.instance && line.includes('"event":"sigterm"'),
      ),
    );
    assert.ok(Number(stopped?.at) - Number(scaledIn?.at) >= shutdownGraceMs);
  });

  test("routes a request only once the startup probe passes (a cold start from zero)", async () => {
    const began = Date.now();
    const answer = await client("late").call("Echo", {}, auth.late);
    assert.equal(answer.ready, true, "the instance answered before it was SERVING");
    assert.ok(Date.now() - began >= 400, `answered after ${Date.now() - began} ms`);
    const ready = log.lines.findLast(
      (line) => line.event === "instance ready" && line.service === "late",
    );
    assert.ok(Number(ready?.startupMs) >= 400);
  });

  test("restarts an instance whose liveness probe fails", async () => {
    const scaled = client("scaled");
    const headers = auth.scaled as Record<string, string>;
    const sick = await scaled.call("Sicken", {}, headers);
    await waitFor(
      () =>
        log.lines.some((line) => line.event === "instance restarted" && line.service === "scaled"),
      "the liveness probe to fail",
    );
    await waitFor(() => {
      const instances = local.services.scaled?.instances() ?? [];
      return (
        instances.length === 1 && instances[0]?.state === "ready" && instances[0].pid !== sick.pid
      );
    }, "a new instance in the sick one's place");
    const answer = await scaled.call("Echo", {}, headers);
    assert.notEqual(answer.pid, sick.pid);
  });
});
