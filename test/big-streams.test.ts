// Long streams of every kind flow through the gateway and straight to route, with no pause.
//
// Before the fix a grpc-js client stream stopped for about 30 s each time ~1 MiB of messages had
// gone out (42,000 points): grpc-js's retrying call acknowledges writes at once until its
// per-call retry buffer (grpc.per_rpc_retry_buffer_size, 1 MiB) is full, then commits the call
// with that backlog still unsent and slices the whole buffer array once per message sent, which
// costs O(backlog²) CPU (patches/@grpc__grpc-js@1.14.7.patch says where). A 250,000-point route
// had several such pauses on each grpc-js hop (the test's client, then the gateway's). Each
// stream here must end within a deadline that a flowing stream meets with a wide margin on a
// loaded machine (it takes a few seconds) and that one such pause alone would pass.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { after, before, test } from "node:test";
import { type Stack, startStack } from "@cloudrun-grpc/local-stack";
import {
  createRouteGuideClient,
  explicitRouteEnd,
  type GatewayServiceClient,
  type gateway,
  type RouteGuideServiceClient,
  routeEndHeader,
  type routeguide,
} from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { stackGatewayClient, targetOf, unary } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const routePoints = 250_000;
const chatNotes = 100_000;
const featureCount = 100_000;
// A flowing stream of this size takes a few seconds (10-20 s through the gateway on two busy
// cores); one stall of the old kind is 30 s on its own, and a route this long had several.
const streamDeadlineMs = 45_000;
const bounded = { timeout: 90_000 };

const cliEntry = new URL("../packages/cli/dist/main.js", import.meta.url).pathname;

/** The i-th point of a long route: distinct, inside the features' area. */
const pointAt = (index: number): routeguide.Point => ({
  latitude: 400_000_000 + (index % 1000) * 1000,
  longitude: -750_000_000 + Math.floor(index / 1000) * 1000,
});

/** Writes every message, waiting for 'drain' when the stream is full; does not end it. */
async function writeAll(stream: Writable, count: number, message: (index: number) => unknown) {
  for (let index = 0; index < count; index += 1) {
    if (!stream.write(message(index))) await once(stream, "drain");
  }
}

describeLocalOnly("long streams flow at a steady pace", () => {
  let stack: Stack;
  let limited: Stack;
  let client: GatewayServiceClient;
  let route: RouteGuideServiceClient;
  const asGateway = new grpc.Metadata();
  const dataDir = mkdtempSync(join(tmpdir(), "big-streams-"));

  before(async () => {
    // A feature data set of 100,000 (the bundled one has 150), for a long ListFeatures.
    const featuresFile = join(dataDir, "features.json");
    writeFileSync(
      featuresFile,
      JSON.stringify(
        Array.from({ length: featureCount }, (_, index) => ({
          name: `feature ${index}`,
          location: pointAt(index),
        })),
      ),
    );
    [stack, limited] = await Promise.all([
      startStack({
        env: {
          route: {
            ROUTE_MAX_POINTS: String(routePoints),
            CHAT_MAX_NOTES: String(chatNotes),
            ROUTE_FEATURES_FILE: featuresFile,
          },
        },
      }),
      // route's default limits, as a user's `pnpm start` has them.
      startStack(),
    ]);
    client = await stackGatewayClient(stack);
    route = createRouteGuideClient(targetOf(stack.route.url), grpc.credentials.createInsecure());
    const token = await stack.auth?.tokenFor("gateway", stack.route.url);
    asGateway.set("authorization", `Bearer ${token}`);
  });
  after(async () => {
    client?.close();
    route?.close();
    await Promise.all([stack?.stop(), limited?.stop()]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  test(`a RecordRoute of ${routePoints} points through the gateway`, bounded, async () => {
    const summary = await unary<gateway.RecordRouteResponse__Output>((done) => {
      const metadata = new grpc.Metadata();
      metadata.set(routeEndHeader, explicitRouteEnd);
      const stream = client.RecordRoute(
        metadata,
        { deadline: Date.now() + streamDeadlineMs },
        done,
      );
      writeAll(stream, routePoints, (index) => ({ point: pointAt(index) })).then(() => {
        stream.write({ endOfRoute: true });
        stream.end();
      }, done);
    });
    assert.equal(summary.summary?.pointCount, routePoints);
  });

  test(`a RecordRoute of ${routePoints} points straight to route`, bounded, async () => {
    const summary = await unary<routeguide.RecordRouteResponse__Output>((done) => {
      const metadata = asGateway.clone();
      metadata.set(routeEndHeader, explicitRouteEnd);
      const stream = route.RecordRoute(metadata, { deadline: Date.now() + streamDeadlineMs }, done);
      writeAll(stream, routePoints, (index) => ({ point: pointAt(index) })).then(() => {
        stream.write({ endOfRoute: true });
        stream.end();
      }, done);
    });
    assert.equal(summary.summary?.pointCount, routePoints);
  });

  test(
    `a RouteChat of ${chatNotes} notes through the gateway, answered as it goes`,
    bounded,
    async () => {
      // Notes in pairs at one place: each second note is answered with the first.
      const chat = client.RouteChat({ deadline: Date.now() + streamDeadlineMs });
      const noteAt = (index: number) => ({
        note: { location: pointAt(Math.floor(index / 2)), message: `${index}` },
      });
      let answers = 0;
      let outOfOrder = 0;
      chat.on("data", ({ note }: gateway.RouteChatResponse__Output) => {
        if (note?.message !== `${answers * 2}`) outOfOrder += 1;
        answers += 1;
      });
      const ended = new Promise<grpc.StatusObject>((resolve) => chat.on("status", resolve));
      const allRead = once(chat, "end");
      chat.on("error", () => {});
      await writeAll(chat, chatNotes, noteAt);
      chat.end();
      const [status] = await Promise.all([ended, allRead]);
      assert.equal(status.code, grpc.status.OK, status.details);
      assert.equal(answers, chatNotes / 2);
      assert.equal(outOfOrder, 0);
    },
  );

  test(`a ListFeatures of ${featureCount} features through the gateway`, bounded, async () => {
    const listing = client.ListFeatures(
      { rectangle: { lo: pointAt(0), hi: pointAt(featureCount - 1) } },
      { deadline: Date.now() + streamDeadlineMs },
    );
    let received = 0;
    let outOfOrder = 0;
    for await (const {
      feature,
    } of listing as AsyncIterable<gateway.ListFeaturesResponse__Output>) {
      if (feature?.name !== `feature ${received}`) outOfOrder += 1;
      received += 1;
    }
    assert.equal(received, featureCount);
    assert.equal(outOfOrder, 0);
  });

  test(
    "the CLI reaches route's default ROUTE_MAX_POINTS and gets its refusal",
    bounded,
    async () => {
      // 100,001 points: before the fix this passed the CLI's default 30 s deadline while stalled.
      const child = spawn(
        process.execPath,
        [cliEntry, "--gateway", limited.gateway.url, "record-route", "--points", "100001"],
        {
          env: {
            PATH: process.env.PATH ?? "",
            GCE_METADATA_HOST: limited.auth?.authority.metadataHosts.client as string,
          },
        },
      );
      let stderr = "";
      child.stderr.on("data", (chunk) => (stderr += chunk));
      const [code] = await once(child, "exit");
      assert.equal(code, 1, stderr);
      assert.match(
        stderr,
        /record-route failed: RESOURCE_EXHAUSTED: route: a route may have at most 100000 points/,
      );
    },
  );
});
