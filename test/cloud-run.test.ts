// The system as Cloud Run serves it, on this machine: gateway, route and stats each behind its
// local Cloud Run front end (packages/cloud-run-local), configured from infra/ itself, with
// tokens exactly as in the cloud: the client's ID token comes from the metadata server through
// google-auth-library and travels in both headers; the edge checks X-Serverless-Authorization
// (its signature is then removed) and the container verifies the untouched Authorization.
//
// Small numbers make Cloud Run's autoscaling show in seconds: route and stats at a concurrency
// of 4, the gateway at 8 (Terraform: 100), at most 3 instances each (Terraform: 10), instances
// idle for 2 s scaled in (Cloud Run: up to 15 min), the gateway's request timeout 6 s
// (Terraform: 3600 s). Everything else is
// Terraform's. stats' instances share one PostgreSQL database (the stack's own server), as on
// Cloud SQL.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { fixedToken, idTokenInterceptor } from "@cloudrun-grpc/auth-client";
import { connectGateway } from "@cloudrun-grpc/cli";
import { type CloudRunStack, startCloudRunStack } from "@cloudrun-grpc/local-stack";
import {
  createGatewayClient,
  createRouteGuideClient,
  createStatsClient,
  type GatewayServiceClient,
  type gateway,
  type ServiceName,
  serviceNames,
} from "@cloudrun-grpc/proto";
import { type ClientFactory, connectPeer, parsePeerUrl } from "@cloudrun-grpc/runtime";
import { until } from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import { collect, deadline, failure, unary } from "./support/grpc.js";
import { Load, readTotals, type Sent, totalsOnceCaughtUp } from "./support/load.js";
import { describeLocalOnly } from "./support/target.js";

interface Point {
  latitude: number;
  longitude: number;
}
const features: { name: string; location: Point }[] = JSON.parse(
  readFileSync(new URL("../services/route/data/features.json", import.meta.url), "utf8"),
);
const named = features.filter((feature) => feature.name !== "");
const region = {
  lo: { latitude: 400_000_000, longitude: -750_000_000 },
  hi: { latitude: 410_000_000, longitude: -740_000_000 },
};

const concurrency = 4;
const idleMs = 2_000;
const gatewayTimeoutSeconds = 6;

/** One decision of the front end (cloud-run-local's log), as the test keeps it. */
interface Decision {
  event: string;
  service: string;
  instances?: number;
  status?: number;
  path?: string;
  [key: string]: unknown;
}

/** A W3C traceparent naming a trace of its own, so the test can look for it in the lines. */
function tracedMetadata(traceId: string, headers: Record<string, string> = {}): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("traceparent", `00-${traceId}-00f067aa0ba902b7-01`);
  for (const [name, value] of Object.entries(headers)) metadata.set(name, value);
  return metadata;
}
const newTraceId = () => crypto.randomUUID().replaceAll("-", "");

describeLocalOnly("the system under the local Cloud Run front ends (infra/'s settings)", () => {
  let stack: CloudRunStack;
  let client: GatewayServiceClient;
  const decisions: Decision[] = [];
  /** Every line each instance printed, by instance id (gateway-1, route-2, …). */
  const lines = new Map<string, string[]>();
  const linesOf = (service: string) =>
    [...lines.entries()].filter(([id]) => id.startsWith(`${service}-`)).flatMap(([, all]) => all);
  const peakInstances = (service: string) =>
    Math.max(
      0,
      ...decisions
        .filter((entry) => entry.event === "instance started" && entry.service === service)
        .map((entry) => entry.instances ?? 0),
    );
  const liveInstances = (service: string) =>
    stack.local.services[service]?.instances().filter((instance) => instance.state !== "stopped")
      .length ?? 0;

  before(async () => {
    const keep = (level: string) => (details: object, message: string) => {
      decisions.push({ level, message, ...(details as Decision) });
    };
    // At most 3 instances each (Terraform: 10): scaling out needs only 2, and fewer cold
    // starts at once leave a loaded 2-core machine the CPU to serve the calls.
    const small = { maxConcurrency: concurrency, maxInstances: 3 };
    stack = await startCloudRunStack({
      env: { all: { LOG_LEVEL: "info", LOG_FORMAT: "json" } },
      overrides: {
        // The gateway takes all of the client's load: twice the slots, so it runs one or two
        // instances while route and stats scale out behind it.
        gateway: {
          ...small,
          maxConcurrency: 2 * concurrency,
          requestTimeoutSeconds: gatewayTimeoutSeconds,
        },
        route: small,
        stats: small,
      },
      scaling: { idleMs },
      logger: { info: keep("info"), warn: keep("warn"), error: keep("error") },
      onLine: (_service, instance, line) => {
        const kept = lines.get(instance) ?? [];
        kept.push(line);
        lines.set(instance, kept);
      },
    });
    // As a client in the cloud: google-auth-library asks the metadata server for an ID token
    // for the gateway's URL (here the local authority's, as the local client identity).
    process.env.GCE_METADATA_HOST = stack.auth.authority.metadataHosts.client;
    client = connectGateway(
      stack.urls.gateway,
      { kind: "adc" },
      {
        rootCerts: Buffer.from(stack.caPem),
      },
    );
  });

  after(async () => {
    client?.close();
    await stack?.stop();
  });

  test("starts each service from infra/: internal route and stats, a public-ingress gateway, all with invoker IAM", () => {
    const { gateway: front, route, stats } = stack.local.services;
    assert.equal(front?.definition.ingress, "INGRESS_TRAFFIC_ALL");
    assert.equal(route?.definition.ingress, "INGRESS_TRAFFIC_INTERNAL_ONLY");
    assert.equal(stats?.definition.ingress, "INGRESS_TRAFFIC_INTERNAL_ONLY");
    for (const service of [front, route, stats]) {
      assert.equal(service?.definition.invokerIamDisabled, false);
      assert.match(service?.url ?? "", /^https:\/\/localhost:\d+$/);
    }
    // stats' instances share the stack's own PostgreSQL server, as Cloud SQL.
    assert.match(
      stack.databaseDescription,
      /^the stack's own PostgreSQL server at 127\.0\.0\.1:\d+/,
    );
  });

  let baseline: Sent;
  test("every gateway method answers through the front ends", async () => {
    baseline = await readTotals(client);
    const target = named[0] as (typeof named)[number];

    const { feature } = await unary<gateway.GetFeatureResponse__Output>((done) =>
      client.GetFeature({ point: target.location }, deadline(), done),
    );
    assert.equal(feature?.name, target.name);

    const listed = await collect<gateway.ListFeaturesResponse__Output>(
      client.ListFeatures({ rectangle: region }, deadline()),
    );
    assert.ok(listed.length > 1, `ListFeatures streamed ${listed.length} features`);

    const points = named.slice(0, 5).map((entry) => entry.location);
    const { summary } = await unary<gateway.RecordRouteResponse__Output>((done) => {
      const stream = client.RecordRoute(deadline(), done);
      for (const point of points) stream.write({ point });
      stream.end();
    });
    assert.equal(summary?.pointCount, points.length);

    const chat = client.RouteChat(deadline());
    const answers = collect<gateway.RouteChatResponse__Output>(chat);
    const spot = { latitude: 401_000_000, longitude: -741_000_000 };
    chat.write({ note: { location: spot, message: "first" } });
    chat.write({ note: { location: spot, message: "second" } });
    chat.end();
    assert.deepEqual(
      (await answers).map((answer) => answer.note?.message),
      ["first"],
      "the second note is answered with the first",
    );

    const watch = client.WatchStats({ topN: 1 });
    const firstUpdate = await new Promise<gateway.WatchStatsResponse__Output>((resolve, reject) => {
      watch.once("data", resolve);
      watch.once("error", reject);
    });
    watch.on("error", () => {});
    watch.cancel();
    assert.ok(firstUpdate.snapshot, "WatchStats sends the aggregates first");

    const area = await unary<gateway.DescribeAreaResponse__Output>((done) =>
      client.DescribeArea({ rectangle: region, topN: 3 }, deadline(), done),
    );
    assert.equal(area.featureCount, listed.length);

    // Counted exactly: one look-up and one route, for this client.
    const sent: Sent = {
      ...baseline,
      featureLookups: baseline.featureLookups + 1,
      routesRecorded: baseline.routesRecorded + 1,
      pointsRecorded: baseline.pointsRecorded + points.length,
    };
    const totals = await totalsOnceCaughtUp(client, sent, 10_000);
    assert.equal(totals.featureLookups, sent.featureLookups);
    assert.equal(totals.routesRecorded, sent.routesRecorded);
    assert.equal(totals.pointsRecorded, sent.pointsRecorded);
    const { snapshot } = await unary<gateway.GetStatsResponse__Output>((done) =>
      client.GetStats({ topN: 1 }, deadline(), done),
    );
    assert.deepEqual(
      snapshot?.callers.map((entry) => entry.caller),
      [stack.auth.emails.client],
      "counted for the end client, whose token the gateway verified",
    );
  });

  test("under steady mixed load route and stats scale out, then in once it drops; no call fails, stats are exact, and the client's one connection never sees a GOAWAY", async (t) => {
    // The client's connection: a GOAWAY (or a lost connection) takes the channel out of READY.
    const channel = client.getChannel();
    assert.equal(channel.getConnectivityState(true), grpc.connectivityState.READY);
    const states: grpc.connectivityState[] = [];
    let observing = true;
    const observe = (current: grpc.connectivityState) => {
      channel.watchConnectivityState(current, Date.now() + 1_000, () => {
        if (!observing) return;
        const next = channel.getConnectivityState(false);
        if (next !== current) states.push(next);
        observe(next);
      });
    };
    observe(channel.getConnectivityState(false));
    try {
      const before = await readTotals(client);
      const load = new Load(client, {
        workers: 10,
        maxCalls: 4_000,
        routeEvery: 3,
        // Generous: a call may wait for a cold start on a loaded machine; none may fail.
        deadlineMs: 15_000,
        pauseMs: 5,
      });
      // stats' share of the load: reads, and as many WatchStats streams as an instance has
      // slots, each holding one while open (a stream is one request for its whole life), so
      // one stats instance cannot take it all; each reopened every 1.5 s (inside the gateway's
      // request timeout).
      let loaded = true;
      const watchFailures: Error[] = [];
      const watching = Array.from({ length: concurrency }, async () => {
        while (loaded) {
          const watcher = client.WatchStats({ topN: 1 });
          watcher.on("data", () => {});
          const ended = new Promise<void>((resolve) => {
            watcher.on("error", (error: grpc.ServiceError) => {
              if (error.code !== grpc.status.CANCELLED) watchFailures.push(error);
              resolve();
            });
            watcher.on("end", resolve);
          });
          await Promise.race([sleep(1_500), ended]);
          watcher.cancel();
          await ended;
        }
      });
      const readFailures: Error[] = [];
      const reads = (async () => {
        while (loaded) {
          await unary((done) => client.GetStats({ topN: 3 }, deadline(15_000), done)).catch(
            (error: Error) => readFailures.push(error),
          );
        }
      })();

      await until(
        () => peakInstances("route") >= 2 && peakInstances("stats") >= 2,
        "route and stats have each scaled out to a second instance",
        40_000,
      );
      // Steady load a little longer on the scaled-out instances.
      await load.started(load.calls + 150);
      loaded = false;
      await Promise.all([reads, ...watching]);
      await load.stop();
      await load.marker();

      assert.deepEqual(load.failures, [], "no client call failed");
      assert.deepEqual(readFailures, [], "no GetStats failed");
      assert.deepEqual(watchFailures, [], "no WatchStats failed");

      // Exact: stats grew by what the OK calls sent, whichever instances served them.
      const expected: Sent = {
        featureLookups: before.featureLookups + load.sent.featureLookups,
        routesRecorded: before.routesRecorded + load.sent.routesRecorded,
        pointsRecorded: before.pointsRecorded + load.sent.pointsRecorded,
        distanceMeters: before.distanceMeters + load.sent.distanceMeters,
        featuresPassed: before.featuresPassed + load.sent.featuresPassed,
        elapsedSeconds: before.elapsedSeconds + load.sent.elapsedSeconds,
      };
      assert.deepEqual(await totalsOnceCaughtUp(client, expected, 20_000), expected);

      // The load has dropped: idle instances go, down to Terraform's minimum (0 here).
      const peaks = { route: peakInstances("route"), stats: peakInstances("stats") };
      await until(
        () => liveInstances("route") < peaks.route && liveInstances("stats") < peaks.stats,
        `route and stats scale in (peaks ${JSON.stringify(peaks)})`,
        30_000,
      );
      const scaledIn = (service: string) =>
        decisions.filter(
          (entry) => entry.event === "instance scaled in" && entry.service === service,
        );
      assert.ok(scaledIn("route").length >= 1, "route scaled in");
      assert.ok(scaledIn("stats").length >= 1, "stats scaled in");

      observing = false;
      const ready = decisions.filter((entry) => entry.event === "instance ready");
      t.diagnostic(
        `${load.calls} calls; peak instances: gateway ${peakInstances("gateway")}, route ${peaks.route}, stats ${peaks.stats}; ` +
          `${ready.length} instances started, ready after ${ready.map((entry) => entry.startupMs).join(", ")} ms`,
      );
      assert.deepEqual(
        states.map((state) => grpc.connectivityState[state]),
        [],
        "the client's channel stayed READY: its connection to the front end never got a GOAWAY",
      );
      // The scaled-in instances got theirs from the front end, which the client never saw.
      assert.ok(
        decisions.some((entry) => entry.event === "instance stopped" && entry.why === "idle"),
        "an instance was stopped as idle",
      );
    } finally {
      observing = false;
    }
  });

  test("a call held open past the gateway's request timeout is ended as Cloud Run ends it", async () => {
    // The instances may have been scaled in: this call starts them, so the watch below is
    // answered at once.
    await unary((done) => client.GetStats({ topN: 0 }, deadline(), done));
    const began = Date.now();
    const watch = client.WatchStats({ topN: 1 });
    const ended = new Promise<grpc.ServiceError>((resolve) => watch.on("error", resolve));
    await new Promise((resolve) => watch.once("data", resolve));
    watch.on("data", () => {});
    const status = await ended;
    // Its answer had begun (the first snapshot), so no HTTP status can be sent any more: the
    // front end resets the stream (cloud-run-local's README), which grpc-js reports as INTERNAL.
    assert.equal(status.code, grpc.status.INTERNAL, status.details);
    assert.match(status.details, /RST_STREAM/);
    assert.ok(
      Date.now() - began >= gatewayTimeoutSeconds * 1000 - 100,
      "it lasted until the timeout",
    );
    assert.ok(
      decisions.some(
        (entry) =>
          entry.event === "request timed out" &&
          entry.service === "gateway" &&
          entry.path === "/gateway.v1.GatewayService/WatchStats",
      ),
      "the front end says it ended the call at the timeout",
    );
    // The instance behind it keeps serving.
    await unary((done) => client.GetStats({ topN: 0 }, deadline(), done));
  });

  test("a caller that is not an invoker is refused at the edge, before any container sees the call", async () => {
    const url = stack.urls.gateway;
    // route's own identity: a real service account with a valid token for the gateway's URL,
    // but not among the gateway's invokers.
    const token = await stack.auth.tokenFor("route", url);
    const stranger = connectPeer(parsePeerUrl(url), createGatewayClient, {
      service: serviceNames.gateway,
      interceptors: [idTokenInterceptor(fixedToken(url, token))],
      rootCerts: Buffer.from(stack.caPem),
    });
    try {
      // A call that reaches the gateway shows its trace id in the gateway's lines.
      const seen = newTraceId();
      await unary((done) => client.GetStats({ topN: 0 }, tracedMetadata(seen), deadline(), done));
      await until(() => linesOf("gateway").some((line) => line.includes(seen)), "the call line");

      const refusedTrace = newTraceId();
      const error = await failure(
        unary((done) =>
          stranger.GetStats({ topN: 0 }, tracedMetadata(refusedTrace), deadline(), done),
        ),
      );
      // Cloud Run answers 403; grpc-js maps it to PERMISSION_DENIED.
      assert.equal(error.code, grpc.status.PERMISSION_DENIED, error.details);
      assert.match(error.details, /403/);
      assert.ok(
        decisions.some(
          (entry) =>
            entry.event === "request refused" &&
            entry.service === "gateway" &&
            entry.status === 403,
        ),
      );
      // Lines of a call that got in would have arrived well within this window.
      await sleep(500);
      for (const service of ["gateway", "route", "stats"]) {
        assert.ok(
          !linesOf(service).some((line) => line.includes(refusedTrace)),
          `${service} never saw the refused call`,
        );
      }
    } finally {
      stranger.close();
    }
  });

  test("a caller from outside the VPC is refused by route's and stats' internal ingress, even with an invoker's token", async () => {
    // As an invoker would call them, but from outside the VPC: with the gateway's own token.
    const asGateway = async <Client>(
      url: string,
      factory: ClientFactory<Client>,
      service: ServiceName,
    ) =>
      connectPeer(parsePeerUrl(url), factory, {
        service,
        interceptors: [
          idTokenInterceptor(fixedToken(url, await stack.auth.tokenFor("gateway", url))),
        ],
        rootCerts: Buffer.from(stack.caPem),
      });
    const route = await asGateway(
      stack.urls.route,
      createRouteGuideClient,
      serviceNames.routeGuide,
    );
    const stats = await asGateway(stack.urls.stats, createStatsClient, serviceNames.stats);
    try {
      const fromRoute = await failure(
        unary((done) => route.GetFeature({ point: named[0]?.location }, deadline(), done)),
      );
      const fromStats = await failure(
        unary((done) => stats.GetStats({ topN: 0 }, deadline(), done)),
      );
      // The ingress refusal is a 404, which grpc-js maps to UNIMPLEMENTED.
      for (const error of [fromRoute, fromStats]) {
        assert.equal(error.code, grpc.status.UNIMPLEMENTED, error.details);
        assert.match(error.details, /404/);
      }
    } finally {
      route.close();
      stats.close();
    }
  });

  test("a caller sending its token in Authorization only gets the container's clear UNAUTHENTICATED: the edge removed the signature", async () => {
    const bare = connectPeer(parsePeerUrl(stack.urls.gateway), createGatewayClient, {
      service: serviceNames.gateway,
      rootCerts: Buffer.from(stack.caPem),
    });
    try {
      const token = await stack.auth.tokenFor("client", stack.urls.gateway);
      const error = await failure(
        unary((done) =>
          bare.GetStats(
            { topN: 0 },
            tracedMetadata(newTraceId(), { authorization: `Bearer ${token}` }),
            deadline(),
            done,
          ),
        ),
      );
      assert.equal(error.code, grpc.status.UNAUTHENTICATED, error.details);
      assert.match(error.details, /signature was removed by Cloud Run's front end/);
      assert.match(error.details, /X-Serverless-Authorization/);
    } finally {
      bare.close();
    }
  });
});

describeLocalOnly("pnpm test:cloud-run: the integration suite through the local front ends", () => {
  test("the end-to-end gateway tests (test/gateway.test.ts) pass with TEST_TARGET=cloud-run, those that call route or stats directly reported skipped", {
    timeout: 240_000,
  }, () => {
    const root = fileURLToPath(new URL("..", import.meta.url));
    // Without node --test's marker, as from a shell: the child run is a test run of its own.
    const { NODE_TEST_CONTEXT: _context, ...env } = process.env;
    const run = spawnSync("pnpm", ["test:cloud-run", "test/gateway.test.ts"], {
      cwd: root,
      env,
      encoding: "utf8",
      timeout: 230_000,
    });
    const output = `${run.stdout}${run.stderr}`;
    assert.equal(run.status, 0, output);
    const count = (name: string) => Number(new RegExp(`^# ${name} (\\d+)$`, "m").exec(output)?.[1]);
    assert.equal(count("fail"), 0, output);
    assert.ok(count("pass") > 0, `the gateway's tests ran through the front ends:\n${output}`);
    // Skipped: exactly those that call route or stats directly (internal ingress), each saying so.
    const skippedForIngress = output.match(/# SKIP calls route or stats directly/g)?.length ?? 0;
    assert.ok(skippedForIngress > 0, output);
    assert.equal(count("skipped"), skippedForIngress, output);
  });
});
