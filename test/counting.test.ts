// The counting rule, tried the way clients break it: stats counts a RecordRoute exactly when its
// end client received an OK answer. Each variant cancels many calls, at one moment of the call,
// with one kind of client, directly at route or through the gateway, mixed with calls that end
// OK; the totals stats then shows must equal exactly what the OK calls sent.
//
// The clients cancel differently on the wire:
// - grpc-js (Node): its cancel closes the HTTP/2 stream with node:http2's close(), which sends
//   END_STREAM (a half-close) and then RST_STREAM, the reset held back while a write is in
//   progress. A server reads a complete request stream before it learns of the cancel (the
//   PING barrier of packages/runtime/src/client-read-barrier.ts is what tells them apart).
//   Once as a plain client that half-closes its routes, once with explicit ends
//   ("x-route-end: explicit" and an end_of_route message).
// - a raw HTTP/2 client (test/support/h2-frames.ts) that sends RST_STREAM alone, as gRPC's
//   C-core does: the request stream never ends, it is reset.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fixedToken, idTokenInterceptor } from "@cloudrun-grpc/auth-client";
import {
  freePort,
  type ServiceProcess,
  type Stack,
  startService,
  startStack,
} from "@cloudrun-grpc/local-stack";
import {
  createGatewayClient,
  createRouteGuideClient,
  explicitRouteEnd,
  type GatewayServiceClient,
  idempotencyKeyHeader,
  type RouteGuideServiceClient,
  routeEndHeader,
  serviceNames,
} from "@cloudrun-grpc/proto";
import { connectPeer, parsePeerUrl } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { Channelz } from "./support/channelz.js";
import { deadline, eventually, failure, unary } from "./support/grpc.js";
import { RawH2Connection } from "./support/h2-frames.js";
import { totalsOf } from "./support/load.js";
import { encodeRecordRouteRequest, grpcFrame } from "./support/raw-grpc.js";
import { describeLocalOnly } from "./support/target.js";

/** Cancelled calls per variant: enough for a race to show. */
const cancelsPerVariant = 50;
/** Calls that end OK, mixed in with each variant's cancels (every fifth call). */
const okEvery = 5;
/** Calls of a variant under way at once. */
const concurrency = 10;
/** The deadline of the calls meant to outlive it. */
const shortDeadlineMs = 150;

type Moment = "before any point" | "midway" | "right after its last point" | "deadline mid-stream";
const moments: Moment[] = [
  "before any point",
  "midway",
  "right after its last point",
  "deadline mid-stream",
];

/** The i-th point of a route: distinct places, so distances are not zero. */
const pointAt = (i: number) => ({
  latitude: 400_000_000 + ((i * 1_000_003) % 10_000_000),
  longitude: -740_000_000 - ((i * 2_000_029) % 10_000_000),
});

/** How many points call `n` of a variant sends: varied, so a wrongly counted call shows. */
const pointsOf = (n: number) => 3 + (n % 7);

type Client = "raw RST_STREAM" | "grpc-js, explicit end" | "grpc-js, half-close only";

interface Counted {
  routes: number;
  points: number;
}

interface Path {
  name: "route" | "gateway";
  /** The method's path there. */
  method: string;
  url: string;
  token: string;
  grpcjs: { RecordRoute: RouteGuideServiceClient["RecordRoute"] };
}

describeLocalOnly("stats counts exactly the RecordRoutes whose client got OK", () => {
  let stack: Stack;
  let gateway: GatewayServiceClient;
  let route: RouteGuideServiceClient;
  const paths: Path[] = [];
  const raws: RawH2Connection[] = [];
  /** The gateway's and route's open calls (grpc's channelz). */
  const channelz: Channelz[] = [];

  before(async () => {
    stack = await startStack({ env: { all: { CHANNELZ_ENABLED: "true" } } });
    const auth = stack.auth;
    assert.ok(auth, "the stack runs with auth");
    const gatewayToken = await auth.tokenFor("client", stack.gateway.url);
    // Directly at route, as its one allowed invoker: the gateway's identity.
    const routeToken = await auth.tokenFor("gateway", stack.route.url);
    channelz.push(
      new Channelz(stack.gateway.url, gatewayToken),
      new Channelz(stack.route.url, routeToken),
    );
    gateway = connectPeer(parsePeerUrl(stack.gateway.url), createGatewayClient, {
      service: serviceNames.gateway,
      interceptors: [idTokenInterceptor(fixedToken(stack.gateway.url, gatewayToken))],
    });
    route = connectPeer(parsePeerUrl(stack.route.url), createRouteGuideClient, {
      service: serviceNames.routeGuide,
      interceptors: [idTokenInterceptor(fixedToken(stack.route.url, routeToken))],
    });
    paths.push(
      {
        name: "route",
        method: "/routeguide.v1.RouteGuideService/RecordRoute",
        url: stack.route.url,
        token: routeToken,
        grpcjs: route as Path["grpcjs"],
      },
      {
        name: "gateway",
        method: "/gateway.v1.GatewayService/RecordRoute",
        url: stack.gateway.url,
        token: gatewayToken,
        grpcjs: gateway as unknown as Path["grpcjs"],
      },
    );
  });

  after(async () => {
    for (const raw of raws) await raw.close();
    for (const counter of channelz) counter.close();
    gateway?.close();
    route?.close();
    await stack?.stop();
  });

  /** Routes and points stats has counted. */
  async function totals(): Promise<Counted> {
    const { snapshot } = await unary<{ snapshot: Parameters<typeof totalsOf>[0] }>((done) =>
      gateway.GetStats({ topN: 1 }, deadline(), done),
    );
    const { routesRecorded, pointsRecorded } = totalsOf(snapshot);
    return { routes: routesRecorded, points: pointsRecorded };
  }

  /**
   * Waits until every report route has queued is in stats: a last OK route through `path`
   * (reports leave route's queue in order) must show in the totals, then a little longer
   * than route's linger for anything reported late.
   */
  async function settledTotals(path: Path, expected: Counted): Promise<Counted> {
    // Every call the clients gave up on has ended on the gateway and route too (nothing is
    // left to answer, and count, later), then a last route marks the end of the reports.
    const open = async () =>
      (
        await Promise.all(channelz.map(async (counter) => (await counter.openCalls()).server))
      ).reduce((sum, calls) => sum + calls, 0);
    assert.equal(await eventually(open, (calls) => calls === 0, 15_000), 0, "calls left open");
    const points = 2;
    assert.equal(await grpcjsRecordRoute(path, points, "ok"), 0, "the last route ends OK");
    await eventually(totals, (counted) => counted.routes >= expected.routes + 1, 10_000);
    // A window for a count that arrives late (there must be none: the last route was sent after
    // every other call had ended, and reports keep their order).
    await sleep(300);
    const now = await totals();
    return { routes: now.routes - 1, points: now.points - points };
  }

  /**
   * One RecordRoute of `points` points by grpc-js, ended as `how`; resolves with its code. With
   * `explicitEnd` the call asks for explicit ends and a complete route ends with end_of_route.
   */
  function grpcjsRecordRoute(
    path: Path,
    points: number,
    how: "ok" | Moment,
    n = 0,
    explicitEnd = false,
  ): Promise<grpc.status> {
    // A call cancelled before grpc-js gave it a stream can reach the server anyway, without
    // its cancel (see "right after its last point"): its own deadline ends it there, soon.
    const options =
      how === "deadline mid-stream"
        ? deadline(shortDeadlineMs)
        : how === "ok"
          ? deadline()
          : deadline(2_000);
    const metadata = new grpc.Metadata();
    if (explicitEnd) metadata.set(routeEndHeader, explicitRouteEnd);
    return new Promise((resolve) => {
      const call = path.grpcjs.RecordRoute(metadata, options, (error: grpc.ServiceError | null) =>
        resolve(error ? error.code : 0),
      );
      const send = (count: number) => {
        for (let i = 0; i < count; i += 1) call.write({ point: pointAt(n * 100 + i) });
      };
      switch (how) {
        case "ok":
          send(points);
          if (explicitEnd) call.write({ endOfRoute: true });
          call.end();
          break;
        case "before any point":
          // Some calls are cancelled before their headers can have left, some just after.
          if (n % 2 === 0) call.cancel();
          else setTimeout(() => call.cancel(), n % 4);
          break;
        case "midway":
          send(Math.ceil(points / 2));
          setTimeout(() => call.cancel(), n % 3);
          break;
        case "right after its last point": {
          // With explicit ends, after its end_of_route message too; every other call even
          // after its half-close, at once (the reset follows the complete request). Once the
          // last message is on the wire (its write callback): grpc-js 1.14.7 still opens the
          // stream of a call cancelled before its channel handed it a config, sends what was
          // written and half-closed, and never resets it (resolving-call.ts, getConfig's
          // sendMetadata continuation does not check `ended`): no server can see that cancel.
          send(points - 1);
          const last = explicitEnd ? { endOfRoute: true } : { point: pointAt(n * 100 + points) };
          if (explicitEnd) send(1);
          call.write(last, () => {
            if (n % 2 === 0) call.end();
            call.cancel();
          });
          break;
        }
        case "deadline mid-stream":
          send(Math.ceil(points / 2));
          // Nothing more is sent: the deadline passes with the stream open.
          break;
      }
    });
  }

  /**
   * One RecordRoute on a raw HTTP/2 stream that never half-closes when cancelled: RST_STREAM
   * alone. "ok" is not asked of it (its answer is not decoded here); it resolves when the
   * stream has ended on both sides.
   */
  async function rawRecordRoute(
    raw: RawH2Connection,
    path: Path,
    points: number,
    how: Moment,
    n: number,
  ): Promise<void> {
    const headers: [string, string][] = [["authorization", `Bearer ${path.token}`]];
    if (how === "deadline mid-stream") headers.push(["grpc-timeout", `${shortDeadlineMs}m`]);
    const id = raw.openStream(new URL(path.url).host, path.method, headers);
    const send = (count: number) => {
      for (let i = 0; i < count; i += 1) {
        raw.send(id, grpcFrame(encodeRecordRouteRequest(pointAt(n * 100 + i))));
      }
    };
    switch (how) {
      case "before any point":
        if (n % 2 === 1) await sleep(n % 4);
        break;
      case "midway":
        send(Math.ceil(points / 2));
        await sleep(n % 3);
        break;
      case "right after its last point":
        send(points);
        break;
      case "deadline mid-stream":
        send(Math.ceil(points / 2));
        // The client's deadline passes; C-core then resets the stream, as here.
        await sleep(shortDeadlineMs + 20);
        break;
    }
    raw.reset(id);
  }

  /**
   * Runs `cancelsPerVariant` cancels at each moment with `client` through `path`, every fifth
   * call ending OK instead; returns what stats counted of them and what the clients saw.
   */
  async function runVariants(path: Path, client: Client) {
    const raw =
      client === "raw RST_STREAM"
        ? await RawH2Connection.open("127.0.0.1", Number(new URL(path.url).port))
        : undefined;
    if (raw) raws.push(raw);
    const explicitEnd = client === "grpc-js, explicit end";
    const expected = await totals();
    const start = { ...expected };
    const outcomes = new Map<string, number>();
    for (const moment of moments) {
      const calls = cancelsPerVariant + Math.ceil(cancelsPerVariant / (okEvery - 1));
      let next = 0;
      const worker = async () => {
        for (let n = next++; n < calls; n = next++) {
          const points = pointsOf(n);
          if (n % okEvery === 0) {
            const code = await grpcjsRecordRoute(path, points, "ok", n, explicitEnd);
            assert.equal(code, 0, `an uncancelled RecordRoute ends OK (got code ${code})`);
            expected.routes += 1;
            expected.points += points;
            continue;
          }
          if (raw) {
            await rawRecordRoute(raw, path, points, moment, n);
            continue;
          }
          const code = await grpcjsRecordRoute(path, points, moment, n, explicitEnd);
          const key = `${moment}: ${grpc.status[code]}`;
          outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
          // A cancel that lost the race to the answer ends OK at its client: then it counts.
          if (code === 0) {
            expected.routes += 1;
            expected.points += points;
          }
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
    }
    const counted = await settledTotals(path, expected);
    const diff = (of: Counted) => ({
      routes: of.routes - start.routes,
      points: of.points - start.points,
    });
    return { counted: diff(counted), ok: diff(expected), outcomes: Object.fromEntries(outcomes) };
  }

  for (const client of [
    "raw RST_STREAM",
    "grpc-js, half-close only",
    "grpc-js, explicit end",
  ] as const) {
    for (const pathName of ["route", "gateway"] as const) {
      test(`${client}, at ${pathName}: of ${cancelsPerVariant} cancels at each moment none is counted`, {
        timeout: 120_000,
      }, async () => {
        const path = paths.find((candidate) => candidate.name === pathName) as Path;
        const { counted, ok, outcomes } = await runVariants(path, client);
        assert.deepEqual(
          counted,
          ok,
          `stats counted exactly the routes whose client got OK (client outcomes: ${JSON.stringify(outcomes)})`,
        );
      });
    }
  }

  // A client that cannot know whether its call was done (the gateway died mid-call: UNAVAILABLE,
  // read ECONNRESET) repeats it with the same idempotency-key: counted once.
  for (const pathName of ["route", "gateway"] as const) {
    test(`idempotency-key at ${pathName}: a repeated call counts once, another key again`, async () => {
      const path = paths.find((candidate) => candidate.name === pathName) as Path;
      const client = path.grpcjs as unknown as RouteGuideServiceClient;
      const at = pointAt(7);
      const lookups = async () => {
        const { snapshot } = await unary<{ snapshot: Parameters<typeof totalsOf>[0] }>((done) =>
          gateway.GetStats({ topN: 1 }, deadline(), done),
        );
        return totalsOf(snapshot).featureLookups;
      };
      const getFeature = (key: string) => {
        const metadata = new grpc.Metadata();
        metadata.set(idempotencyKeyHeader, key);
        return unary((done) => client.GetFeature({ point: at }, metadata, deadline(), done));
      };
      const routeWithKey = (key: string, points: number) =>
        new Promise<grpc.ServiceError | null>((resolve) => {
          const metadata = new grpc.Metadata();
          metadata.set(idempotencyKeyHeader, key);
          const call = path.grpcjs.RecordRoute(metadata, deadline(), resolve);
          for (let i = 0; i < points; i += 1) call.write({ point: pointAt(i) });
          call.end();
        });

      const before = await totals();
      const lookupsBefore = await lookups();
      const key = `${pathName}-${randomUUID()}`;
      for (let attempt = 0; attempt < 3; attempt += 1) {
        await getFeature(key);
        assert.equal(await routeWithKey(key, 4), null, "a keyed RecordRoute ends OK");
      }
      await getFeature(`${key}-other`);
      assert.equal(await routeWithKey(`${key}-other`, 5), null);
      const counted = await settledTotals(path, { routes: before.routes + 2, points: 0 });
      assert.deepEqual(
        { routes: counted.routes - before.routes, points: counted.points - before.points },
        { routes: 2, points: 4 + 5 },
        "three calls with one key count once, a call with another key once more",
      );
      assert.equal((await lookups()) - lookupsBefore, 2, "look-ups likewise");

      for (const bad of ["", "x".repeat(129), "with space"]) {
        const error = await failure(getFeature(bad));
        assert.equal(error.code, grpc.status.INVALID_ARGUMENT, `key ${JSON.stringify(bad)}`);
        assert.match(error.details, /idempotency-key must be one value of 1 to 128 visible ASCII/);
      }
    });
  }
});

// The gateway dies mid-call: its clients see UNAVAILABLE (read ECONNRESET) and cannot know
// whether route counted the call. Repeated with the same idempotency-key once the gateway is
// back, every call counts exactly once.
describeLocalOnly("a call repeated with its idempotency-key after the gateway died", () => {
  let stack: Stack;
  let gateway: ServiceProcess | undefined;
  const clients: grpc.Client[] = [];
  after(async () => {
    for (const client of clients) client.close();
    await gateway?.stop();
    await stack?.stop();
  });

  test("SIGKILL the gateway under keyed load, repeat the failed calls: each key counts once", {
    timeout: 120_000,
  }, async () => {
    const gatewayPort = await freePort();
    stack = await startStack({ ports: { gateway: gatewayPort } });
    const auth = stack.auth;
    assert.ok(auth, "the stack runs with auth");
    const url = stack.gateway.url;
    const client = connectPeer(parsePeerUrl(url), createGatewayClient, {
      service: serviceNames.gateway,
      interceptors: [idTokenInterceptor(fixedToken(url, await auth.tokenFor("client", url)))],
    });
    clients.push(client);
    const lookUp = (key: string) => {
      const metadata = new grpc.Metadata();
      metadata.set(idempotencyKeyHeader, key);
      return unary((done) =>
        client.GetFeature(
          { point: pointAt(Number(key.split("-")[1])) },
          metadata,
          deadline(5_000),
          done,
        ),
      );
    };
    const lookups = async () => {
      const { snapshot } = await unary<{ snapshot: Parameters<typeof totalsOf>[0] }>((done) =>
        client.GetStats({ topN: 1 }, deadline(), done),
      );
      return totalsOf(snapshot).featureLookups;
    };

    // Keyed look-ups at 16 at once; the gateway is killed while they run.
    const keys = Array.from({ length: 300 }, (_, i) => `k-${i}-${randomUUID()}`);
    const failed: string[] = [];
    let next = 0;
    let killed = false;
    const worker = async () => {
      for (let i = next++; i < keys.length; i = next++) {
        const key = keys[i] as string;
        if (i === 100 && !killed) {
          killed = true;
          stack.gateway.child.kill("SIGKILL");
        }
        await lookUp(key).catch(() => failed.push(key));
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    assert.ok(failed.length > 0, "calls failed while the gateway was down");

    // Back on the same port, as the same service; the failed calls are repeated with their keys
    // until they succeed (the gateway may still be starting).
    gateway = await startService({
      name: "gateway",
      port: gatewayPort,
      env: {
        ...auth.envFor("gateway", url),
        ROUTE_URL: stack.route.url,
        STATS_URL: stack.stats.url,
      },
    });
    for (const key of failed) {
      let attempts = 0;
      for (;;) {
        try {
          await lookUp(key);
          break;
        } catch (error) {
          attempts += 1;
          if (attempts >= 20) throw error;
          await sleep(100);
        }
      }
    }
    const counted = await eventually(lookups, (n) => n >= keys.length, 10_000);
    await sleep(300);
    assert.equal(
      await lookups(),
      keys.length,
      `each of ${keys.length} keys counted once (${failed.length} repeated)`,
    );
    assert.equal(counted, keys.length);
  });
});
