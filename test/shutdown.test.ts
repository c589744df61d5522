// SIGTERM, as Cloud Run sends it before stopping an instance: the service stops accepting
// new calls, lets the calls in flight finish, and exits 0.
import assert from "node:assert/strict";
import { test } from "node:test";
import { startService, startStack } from "@cloudrun-grpc/local-stack";
import {
  createRouteGuideClient,
  createStatsClient,
  type routeguide,
  type stats,
} from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import {
  collect,
  deadline,
  eventually,
  failure,
  stackGatewayClient,
  targetOf,
  unary,
} from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const here = { latitude: 1, longitude: 1 };

describeLocalOnly("graceful shutdown on SIGTERM", () => {
  test("route finishes an open RouteChat, refuses new calls, and exits 0", async () => {
    const stats = await startService({ name: "stats" });
    const route = await startService({
      name: "route",
      env: { STATS_URL: stats.url, SHUTDOWN_GRACE_MS: "20000" },
    });
    const target = targetOf(route.url);
    const client = createRouteGuideClient(target, grpc.credentials.createInsecure());
    try {
      const chat = client.RouteChat(deadline(20_000));
      const answers = collect(chat);
      chat.write({ note: { location: here, message: "before SIGTERM" } });
      // Wait until the server has the call (a look-up on the same connection completes).
      await unary((done) => client.GetFeature({ point: here }, deadline(), done));

      route.child.kill("SIGTERM");
      const draining = await eventually(
        async () => route.lines.some((line) => line.includes('"message":"draining"')),
        (seen) => seen,
        5_000,
      );
      assert.ok(draining, "route logs that it is draining");
      const latecomer = createRouteGuideClient(target, grpc.credentials.createInsecure());
      const refused = await failure(
        unary((done) => latecomer.GetFeature({ point: here }, deadline(2_000), done)),
      );
      latecomer.close();
      assert.equal(refused.code, grpc.status.UNAVAILABLE);

      chat.write({ note: { location: here, message: "after SIGTERM" } });
      chat.end();
      const received = (await answers) as routeguide.RouteChatResponse__Output[];
      assert.deepEqual(
        received.map((answer) => answer.note?.message),
        ["before SIGTERM"],
      );
      assert.equal(await route.exited, 0);
      assert.ok(route.lines.some((line) => line.includes('"message":"stopped"')));
    } finally {
      client.close();
      await route.stop();
      await stats.stop();
    }
  });

  test("route ends calls still open when the grace period is over with UNAVAILABLE (call again), then exits 0", async () => {
    const stats = await startService({ name: "stats" });
    const route = await startService({
      name: "route",
      env: { STATS_URL: stats.url, SHUTDOWN_GRACE_MS: "500" },
    });
    const client = createRouteGuideClient(targetOf(route.url), grpc.credentials.createInsecure());
    try {
      // A chat and a route that their clients keep open past the grace period.
      const chat = client.RouteChat(deadline(20_000));
      const chatEnd = failure(collect(chat));
      chat.write({ note: { location: here, message: "still talking" } });
      const routeEnd = failure(
        unary((done) => client.RecordRoute(deadline(20_000), done).write({ point: here })),
      );
      await unary((done) => client.GetFeature({ point: here }, deadline(), done));

      route.child.kill("SIGTERM");
      for (const ended of [await chatEnd, await routeEnd]) {
        assert.equal(ended.code, grpc.status.UNAVAILABLE);
        assert.match(ended.details, /shutting down: call again/);
      }
      assert.equal(await route.exited, 0);
      assert.ok(route.lines.some((line) => line.includes("grace period over")));
    } finally {
      client.close();
      await route.stop();
      await stats.stop();
    }
  });

  test("stats ends open WatchStats streams with UNAVAILABLE so clients reconnect, then exits 0", async () => {
    const stats = await startService({ name: "stats", env: { SHUTDOWN_GRACE_MS: "30000" } });
    const client = createStatsClient(targetOf(stats.url), grpc.credentials.createInsecure());
    try {
      const watch = client.WatchStats({ topN: 1 });
      const updates: stats.WatchStatsResponse__Output[] = [];
      watch.on("data", (update: stats.WatchStatsResponse__Output) => updates.push(update));
      const ended = new Promise<grpc.StatusObject>((resolve) => watch.on("status", resolve));
      watch.on("error", () => {});
      await new Promise<void>((resolve) => watch.once("data", () => resolve()));

      stats.child.kill("SIGTERM");
      const status = await ended;
      assert.equal(status.code, grpc.status.UNAVAILABLE);
      assert.match(status.details, /shutting down; watch again/);
      assert.equal(updates.length, 1);
      // Nothing else is in flight, so the drain ends without waiting out the 30 s grace.
      assert.equal(await stats.exited, 0);
    } finally {
      client.close();
      await stats.stop();
    }
  });

  test("gateway ends WatchStats streams it passes through with UNAVAILABLE, then exits 0", async () => {
    const stack = await startStack({ env: { gateway: { SHUTDOWN_GRACE_MS: "30000" } } });
    const client = await stackGatewayClient(stack);
    try {
      const watch = client.WatchStats({ topN: 1 });
      const ended = new Promise<grpc.StatusObject>((resolve) => watch.on("status", resolve));
      watch.on("error", () => {});
      await new Promise<void>((resolve) => watch.once("data", () => resolve()));

      stack.gateway.child.kill("SIGTERM");
      const status = await ended;
      assert.equal(status.code, grpc.status.UNAVAILABLE);
      assert.equal(status.details, "gateway instance is shutting down; watch again");
      assert.equal(await stack.gateway.exited, 0);
    } finally {
      client.close();
      await stack.stop();
    }
  });
});
