// Idempotency keys: what a call may send, and how the name of what it caused is scoped.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { StatusError } from "../src/errors.js";
import { idempotencyKeyOf, idempotentEventId } from "../src/idempotency.js";

const withKeys = (...keys: string[]) => {
  const metadata = new grpc.Metadata();
  for (const key of keys) metadata.add("idempotency-key", key);
  return metadata;
};

test("a call's key: absent, one visible ASCII value of at most 128, or INVALID_ARGUMENT", () => {
  assert.equal(idempotencyKeyOf(new grpc.Metadata()), undefined);
  assert.equal(idempotencyKeyOf(withKeys("order-42")), "order-42");
  assert.equal(idempotencyKeyOf(withKeys("x".repeat(128))), "x".repeat(128));
  for (const bad of [
    withKeys(""),
    withKeys("x".repeat(129)),
    withKeys("a b"),
    withKeys("a", "b"),
  ]) {
    assert.throws(
      () => idempotencyKeyOf(bad),
      (error) => error instanceof StatusError && error.code === grpc.status.INVALID_ARGUMENT,
    );
  }
});

test("an event's name is the same for a repeat, and differs by client, kind and key", () => {
  const id = idempotentEventId("ana@example.com", "route", "order-42");
  assert.match(id, /^key:[0-9a-f]{64}$/);
  assert.equal(idempotentEventId("ana@example.com", "route", "order-42"), id);
  assert.notEqual(idempotentEventId("bob@example.com", "route", "order-42"), id);
  assert.notEqual(idempotentEventId("ana@example.com", "lookup", "order-42"), id);
  assert.notEqual(idempotentEventId("ana@example.com", "route", "order-43"), id);
  // The parts cannot run into each other.
  assert.notEqual(idempotentEventId("a", "route", "b\nc"), idempotentEventId("a\nroute", "b", "c"));
});
