// The peer channel's policy on a real grpc-js server over HTTP/2 on loopback: the methods the
// contract marks idempotent are retried on UNAVAILABLE, others never; retries stop when most
// calls fail (the budget); calls are spread over every address given.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  createRouteGuideClient,
  type RouteGuideServiceClient,
  type RouteGuideServiceHandlers,
  routeGuideService,
} from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { connectPeer, parsePeerUrl, peerServiceConfig, withAddresses } from "../src/peer.js";

const unavailable = { code: grpc.status.UNAVAILABLE, details: "try again" };
const point = { latitude: 1, longitude: 2 };

/** A route server whose GetFeature and RecordRoute fail with UNAVAILABLE while `failures` > 0. */
async function flakyRoute(name: string) {
  const state = { failures: 0, attempts: { GetFeature: 0, RecordRoute: 0 } };
  const handlers = {
    GetFeature(_call, callback) {
      state.attempts.GetFeature += 1;
      if (state.failures > 0) {
        state.failures -= 1;
        callback(unavailable);
      } else callback(null, { feature: { name, location: point } });
    },
    RecordRoute(call, callback) {
      state.attempts.RecordRoute += 1;
      call.on("data", () => {});
      call.on("end", () => {
        if (state.failures > 0) {
          state.failures -= 1;
          callback(unavailable);
        } else callback(null, { summary: null });
      });
    },
  } as Partial<RouteGuideServiceHandlers> as RouteGuideServiceHandlers;
  const server = new grpc.Server();
  const service = routeGuideService(handlers);
  server.addService(service.definition, service.handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return { state, port, server };
}

const getFeature = (client: RouteGuideServiceClient) =>
  new Promise<string>((resolve, reject) =>
    client.GetFeature({ point }, { deadline: Date.now() + 5000 }, (error, response) =>
      error ? reject(error) : resolve(response?.feature?.name ?? ""),
    ),
  );

describe("peer channel policy", () => {
  let a: Awaited<ReturnType<typeof flakyRoute>>;
  let b: Awaited<ReturnType<typeof flakyRoute>>;
  let client: RouteGuideServiceClient;
  before(async () => {
    a = await flakyRoute("a");
    b = await flakyRoute("b");
    const peer = parsePeerUrl(`http://127.0.0.1:${a.port}`);
    client = connectPeer(peer, createRouteGuideClient, {
      service: "routeguide.v1.RouteGuideService",
    });
  });
  after(() => {
    client.close();
    a.server.forceShutdown();
    b.server.forceShutdown();
  });

  test("the service config names exactly the contract's idempotent single-request methods", () => {
    const config = peerServiceConfig("routeguide.v1.RouteGuideService") as {
      methodConfig: {
        name: { method: string }[];
        retryPolicy: { retryableStatusCodes: string[] };
      }[];
    };
    const [only] = config.methodConfig;
    assert.deepEqual(
      only?.name.map((name) => name.method),
      ["GetFeature", "ListFeatures"],
    );
    assert.deepEqual(only?.retryPolicy.retryableStatusCodes, ["UNAVAILABLE"]);
  });

  test("an idempotent call that meets UNAVAILABLE is retried and succeeds", async () => {
    a.state.failures = 2;
    a.state.attempts.GetFeature = 0;
    assert.equal(await getFeature(client), "a");
    assert.equal(a.state.attempts.GetFeature, 3, "two failed attempts, then the answer");
  });

  test("a client stream is never retried: UNAVAILABLE reaches the caller after one attempt", async () => {
    a.state.failures = 1;
    a.state.attempts.RecordRoute = 0;
    const error = await new Promise<grpc.ServiceError>((resolve, reject) => {
      const call = client.RecordRoute({ deadline: Date.now() + 5000 }, (failure) =>
        failure ? resolve(failure) : reject(new Error("RecordRoute succeeded")),
      );
      call.write({ point });
      call.end();
    });
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    assert.equal(a.state.attempts.RecordRoute, 1);
    a.state.failures = 0;
  });

  test("when most calls fail, retries stop (the budget): far fewer attempts than 3 per call", async () => {
    a.state.failures = Number.POSITIVE_INFINITY;
    a.state.attempts.GetFeature = 0;
    const calls = 30;
    for (let i = 0; i < calls; i += 1) {
      const failure = await getFeature(client).then(
        () => undefined,
        (error: grpc.ServiceError) => error.code,
      );
      assert.equal(failure, grpc.status.UNAVAILABLE);
    }
    assert.ok(
      a.state.attempts.GetFeature < calls * 1.5,
      `${a.state.attempts.GetFeature} attempts for ${calls} calls`,
    );
    a.state.failures = 0;
  });

  test("calls are spread over every address given (round robin)", async () => {
    const peer = withAddresses(parsePeerUrl(`http://127.0.0.1:${a.port}`), [
      `127.0.0.1:${a.port}`,
      `127.0.0.1:${b.port}`,
    ]);
    assert.equal(peer.url, `http://127.0.0.1:${a.port}`, "the URL stays the identity");
    const balanced = connectPeer(peer, createRouteGuideClient, {
      service: "routeguide.v1.RouteGuideService",
    });
    try {
      // Both connections up first: until then round robin can only pick the one that is.
      await new Promise<void>((resolve, reject) =>
        balanced.waitForReady(Date.now() + 5000, (error) => (error ? reject(error) : resolve())),
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
      const names: string[] = [];
      for (let i = 0; i < 20; i += 1) names.push(await getFeature(balanced));
      assert.ok(names.includes("a") && names.includes("b"), `answered by ${[...new Set(names)]}`);
    } finally {
      balanced.close();
    }
  });
});
