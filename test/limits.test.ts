// Oversized input gets a clear status, never a crash or a hang, and the service stays healthy.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Stack, startStack } from "@cloudrun-grpc/local-stack";
import type { GatewayServiceClient, gateway } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import {
  collect,
  deadline,
  failure,
  healthStatus,
  stackGatewayClient,
  targetOf,
  unary,
} from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

const here = { latitude: 1, longitude: 1 };

describeLocalOnly("limits on one call's size and work", () => {
  let stack: Stack;
  let client: GatewayServiceClient;

  before(async () => {
    stack = await startStack({ env: { route: { ROUTE_MAX_POINTS: "50", CHAT_MAX_NOTES: "20" } } });
    client = await stackGatewayClient(stack);
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  test("a message over 4 MiB gets RESOURCE_EXHAUSTED", async () => {
    const chat = client.RouteChat(deadline());
    chat.write({ note: { location: here, message: "x".repeat(4 * 1024 * 1024 + 1) } });
    chat.end();
    const error = await failure(collect(chat));
    assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(error.details, /message larger than max/i);
  });

  test("a route longer than ROUTE_MAX_POINTS gets RESOURCE_EXHAUSTED", async () => {
    const send = (count: number) =>
      unary<gateway.RecordRouteResponse__Output>((done) => {
        const stream = client.RecordRoute(deadline(), done);
        for (let index = 0; index < count; index += 1) stream.write({ point: here });
        stream.end();
      });
    assert.equal((await send(50)).summary?.pointCount, 50);
    const error = await failure(send(51));
    assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(error.details, "route: a route may have at most 50 points");
  });

  test("a chat longer than CHAT_MAX_NOTES gets RESOURCE_EXHAUSTED", async () => {
    const chat = client.RouteChat(deadline());
    const answers: gateway.RouteChatResponse__Output[] = [];
    chat.on("data", (answer: gateway.RouteChatResponse__Output) => answers.push(answer));
    const status = new Promise<grpc.StatusObject>((resolve) => chat.on("status", resolve));
    const allRead = new Promise((resolve) => chat.on("end", resolve));
    chat.on("error", () => {});
    for (let index = 0; index < 25; index += 1)
      chat.write({ note: { location: here, message: `${index}` } });
    chat.end();
    const [ended] = await Promise.all([status, allRead]);
    assert.equal(ended.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(ended.details, "route: a chat may have at most 20 notes");
    // grpc-js hands an error status to the reader at once and drops messages it has not yet
    // delivered, so how many of the 190 answers arrive before the error depends on timing.
    assert.ok(answers.length <= (20 * 19) / 2);
  });

  test("a chat note over 1024 bytes gets INVALID_ARGUMENT", async () => {
    const chat = client.RouteChat(deadline());
    chat.write({ note: { location: here, message: "é".repeat(513) } });
    chat.end();
    const error = await failure(collect(chat));
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(error.details, "route: note.message must be at most 1024 bytes");
  });

  test("every service is still SERVING after all that", async () => {
    for (const service of stack.services)
      assert.equal(await healthStatus(targetOf(service.url), ""), "SERVING");
  });
});
