// Deadlines and cancellation end to end: a client call that outlives its deadline, or that its
// client cancels midway, ends at the client (DEADLINE_EXCEEDED, CANCELLED) and leaves no open
// call behind it: the gateway's call, the gateway's call to route and route's call all end.
// The counters are channelz's (test/support/channelz.ts): grpc-js counts a call open from the
// moment its HTTP/2 stream opens until its status is sent or the stream is reset, on the
// server, and until the status reaches the caller, on a client channel.
//
// Nothing here is timed: the counters are polled until they reach the expected value or a
// bound passes, then asserted.
import assert from "node:assert/strict";
import { after, before, beforeEach, test } from "node:test";
import { fixedToken, idTokenInterceptor } from "@cloudrun-grpc/auth-client";
import { type Stack, startStack } from "@cloudrun-grpc/local-stack";
import {
  createGatewayClient,
  type GatewayServiceClient,
  type gateway,
  serviceNames,
} from "@cloudrun-grpc/proto";
import { connectPeer, parsePeerUrl } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { Channelz } from "./support/channelz.js";
import { deadline, eventually, healthStatus, targetOf } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

// The whole map: every feature of route's data set (150), one message each.
const everywhere = {
  lo: { latitude: -900_000_000, longitude: -1_800_000_000 },
  hi: { latitude: 900_000_000, longitude: 1_800_000_000 },
};
const here = { latitude: 407_838_351, longitude: -746_143_763 };
const note = (message: string) => ({ note: { location: here, message } });

// How long the counters may take to come back to 0 after a call ended at its client.
const settleMs = 5_000;
// The deadline of the calls that are meant to outlive it.
const shortDeadlineMs = 500;
// A bound on every wait for a call's end, so a test that hangs fails instead.
const endBoundMs = 15_000;
const bounded = { timeout: 60_000 };

interface Open {
  gateway: number;
  gatewayToRoute: number;
  gatewayToStats: number;
  route: number;
}
const none: Open = { gateway: 0, gatewayToRoute: 0, gatewayToStats: 0, route: 0 };

/** Resolves with the status a call ends with (OK included), or rejects after `endBoundMs`. */
function statusOf(
  call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>,
): Promise<grpc.StatusObject> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the call did not end")), endBoundMs);
    call.on("error", () => {});
    call.on("status", (status: grpc.StatusObject) => {
      clearTimeout(timer);
      resolve(status);
    });
  });
}

/** Resolves once `count` messages have arrived on `call`, then leaves it paused. */
function received(
  call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>,
  count: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = 0;
    const timer = setTimeout(() => reject(new Error(`fewer than ${count} messages`)), endBoundMs);
    const onData = () => {
      seen += 1;
      if (seen < count) return;
      call.pause();
      call.off("data", onData);
      clearTimeout(timer);
      resolve();
    };
    call.on("data", onData);
  });
}

describeLocalOnly("deadlines and cancellation through the gateway", () => {
  let stack: Stack;
  let client: GatewayServiceClient;
  let gatewayz: Channelz;
  let routez: Channelz;

  before(async () => {
    stack = await startStack({ env: { all: { CHANNELZ_ENABLED: "true" } } });
    const auth = stack.auth;
    assert.ok(auth, "the stack runs with auth");
    const token = await auth.tokenFor("client", stack.gateway.url);
    // A small HTTP/2 window on the client's side: a client that stops reading holds the
    // gateway's writes back after a few messages, so a ListFeatures it reads slowly or stops
    // reading is still open when it is cancelled or its deadline passes.
    client = connectPeer(parsePeerUrl(stack.gateway.url), createGatewayClient, {
      service: serviceNames.gateway,
      interceptors: [idTokenInterceptor(fixedToken(stack.gateway.url, token))],
      channelOptions: { "grpc-node.flow_control_window": 256 },
    });
    gatewayz = new Channelz(stack.gateway.url, token);
    routez = new Channelz(stack.route.url, await auth.tokenFor("gateway", stack.route.url));
  });

  after(async () => {
    client?.close();
    gatewayz?.close();
    routez?.close();
    await stack?.stop();
  });

  const routeTarget = () => targetOf(stack.route.url);
  const statsTarget = () => targetOf(stack.stats.url);

  async function open(): Promise<Open> {
    const [g, r] = await Promise.all([gatewayz.openCalls(), routez.openCalls()]);
    return {
      gateway: g.server,
      gatewayToRoute: g.channels[routeTarget()] ?? Number.NaN,
      gatewayToStats: g.channels[statsTarget()] ?? Number.NaN,
      route: r.server,
    };
  }

  /** The open calls once they are all 0, or whatever they are after `settleMs`. */
  const settled = () =>
    eventually(open, (counts) => Object.values(counts).every((n) => n === 0), settleMs);

  beforeEach(async () => {
    // Each test starts from nothing open (and its own check at the end means something).
    assert.deepEqual(await settled(), none);
  });

  test(
    "a RecordRoute kept open past its deadline: DEADLINE_EXCEEDED, and route's call ends too",
    bounded,
    async () => {
      const error = await new Promise<grpc.ServiceError | null>((resolve) => {
        const call = client.RecordRoute(deadline(shortDeadlineMs), (error) => resolve(error));
        call.write({ point: here });
        // Never ended: the route stays open until the deadline.
      });
      assert.equal(error?.code, grpc.status.DEADLINE_EXCEEDED, error?.message);
      assert.deepEqual(await settled(), none);
    },
  );

  test(
    "a RouteChat kept open past its deadline: DEADLINE_EXCEEDED, and route's call ends too",
    bounded,
    async () => {
      const call = client.RouteChat(deadline(shortDeadlineMs));
      const status = statusOf(call);
      const answered = received(call, 1);
      call.write(note("first"));
      call.write(note("second")); // answered with the first
      await answered;
      // Never half-closed: the chat stays open until the deadline.
      assert.equal((await status).code, grpc.status.DEADLINE_EXCEEDED);
      assert.deepEqual(await settled(), none);
    },
  );

  test(
    "a ListFeatures read slowly past its deadline: DEADLINE_EXCEEDED, nothing left open",
    bounded,
    async () => {
      const call = client.ListFeatures({ rectangle: everywhere }, deadline(shortDeadlineMs));
      const status = statusOf(call);
      // One message every 100 ms: the 150 features would take 15 s.
      const timers = new Set<NodeJS.Timeout>();
      call.on("data", () => {
        call.pause();
        const timer = setTimeout(() => {
          timers.delete(timer);
          call.resume();
        }, 100);
        timers.add(timer);
      });
      try {
        assert.equal((await status).code, grpc.status.DEADLINE_EXCEEDED);
      } finally {
        for (const timer of timers) clearTimeout(timer);
      }
      assert.deepEqual(await settled(), none);
    },
  );

  test(
    "a ListFeatures cancelled midway leaves no open stream on gateway or route",
    bounded,
    async () => {
      const call = client.ListFeatures({ rectangle: everywhere }, deadline(30_000));
      const status = statusOf(call);
      await received(call, 3);
      // Still open: the client has not read the rest (the counters do see an open stream).
      const during = await open();
      assert.equal(during.gateway, 1, "the gateway's call is open");
      assert.equal(during.gatewayToRoute, 1, "the gateway's call to route is open");
      call.cancel();
      assert.equal((await status).code, grpc.status.CANCELLED);
      assert.deepEqual(await settled(), none);
    },
  );

  test(
    "a RouteChat cancelled midway leaves no open stream on gateway or route",
    bounded,
    async () => {
      const call = client.RouteChat(deadline(30_000));
      const status = statusOf(call);
      const answered = received(call, 3);
      for (const text of ["a", "b", "c"]) call.write(note(text)); // answers: 0, 1 and 2 notes
      await answered;
      const during = await open();
      assert.deepEqual(during, { ...none, gateway: 1, gatewayToRoute: 1, route: 1 }, "all open");
      call.cancel();
      assert.equal((await status).code, grpc.status.CANCELLED);
      assert.deepEqual(await settled(), none);
    },
  );

  test(
    "50 streams cancelled or past their deadline at once: nothing left open, all SERVING",
    bounded,
    async () => {
      const calls: Promise<grpc.StatusObject>[] = [];
      const midway: Promise<void>[] = [];
      const cancels: { cancel(): void }[] = [];
      for (let i = 0; i < 50; i += 1) {
        const kind = i % 4;
        if (kind === 0) {
          // A chat cancelled once answered.
          const call = client.RouteChat(deadline(30_000));
          calls.push(statusOf(call));
          midway.push(received(call, 1));
          call.write(note(`x${i}`));
          call.write(note(`y${i}`));
          cancels.push(call);
        } else if (kind === 1) {
          // A ListFeatures cancelled after a few features.
          const call = client.ListFeatures({ rectangle: everywhere }, deadline(30_000));
          calls.push(statusOf(call));
          midway.push(received(call, 2));
          cancels.push(call);
        } else if (kind === 2) {
          // A chat kept open past its deadline.
          const call = client.RouteChat(deadline(shortDeadlineMs * 2));
          calls.push(statusOf(call));
          call.write(note(`z${i}`));
        } else {
          // A ListFeatures never read past its deadline.
          const call = client.ListFeatures(
            { rectangle: everywhere },
            deadline(shortDeadlineMs * 2),
          );
          calls.push(statusOf(call));
          call.pause();
        }
      }
      await Promise.all(midway);
      for (const call of cancels) call.cancel();
      const codes = (await Promise.all(calls)).map(({ code }) => grpc.status[code]);
      const expected = Array.from({ length: 50 }, (_, i) =>
        i % 4 < 2 ? "CANCELLED" : "DEADLINE_EXCEEDED",
      );
      assert.deepEqual(codes, expected);
      assert.deepEqual(await settled(), none);
      for (const service of stack.services) {
        assert.equal(await healthStatus(targetOf(service.url), ""), "SERVING", service.name);
      }
      // And the gateway still answers.
      const answer = await new Promise<gateway.GetFeatureResponse__Output | undefined>(
        (resolve, reject) =>
          client.GetFeature({ point: here }, deadline(5_000), (error, response) =>
            error ? reject(error) : resolve(response),
          ),
      );
      assert.ok(answer?.feature);
    },
  );
});
