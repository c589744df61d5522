import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { fromPeer, handlerStatus, invalidArgument, StatusError, toStatus } from "../src/errors.js";
import { silentLogger } from "../src/logger.js";

describe("StatusError", () => {
  test("carries its code and details", () => {
    const error = invalidArgument("point is required");
    assert.ok(error instanceof Error);
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(error.details, "point is required");
    assert.equal(error.message, "point is required");
  });
});

describe("toStatus", () => {
  test("keeps the code and details of a StatusError", () => {
    assert.deepEqual(toStatus(new StatusError(grpc.status.NOT_FOUND, "no such feature")), {
      code: grpc.status.NOT_FOUND,
      details: "no such feature",
    });
  });

  test("keeps the details of a grpc-js ServiceError, not its longer message", () => {
    const error = Object.assign(new Error("14 UNAVAILABLE: connection refused"), {
      code: grpc.status.UNAVAILABLE,
      details: "connection refused",
      metadata: new grpc.Metadata(),
    });
    assert.deepEqual(toStatus(error), {
      code: grpc.status.UNAVAILABLE,
      details: "connection refused",
    });
  });

  test("a status object as grpc-js passes it", () => {
    assert.deepEqual(toStatus({ code: grpc.status.DEADLINE_EXCEEDED, details: "too slow" }), {
      code: grpc.status.DEADLINE_EXCEEDED,
      details: "too slow",
    });
  });

  test("a plain Error becomes INTERNAL without leaking its message", () => {
    const status = toStatus(new Error("SELECT * FROM secrets failed at db-7.internal"));
    assert.deepEqual(status, { code: grpc.status.INTERNAL, details: "internal error" });
  });

  test("a Node system error (string code) becomes INTERNAL without leaking", () => {
    const error = Object.assign(new Error("connect ECONNREFUSED 10.0.0.7:5432"), {
      code: "ECONNREFUSED",
    });
    assert.deepEqual(toStatus(error), { code: grpc.status.INTERNAL, details: "internal error" });
  });

  test("anything else thrown becomes INTERNAL", () => {
    for (const thrown of [undefined, null, "a string", 42, {}]) {
      assert.deepEqual(toStatus(thrown), { code: grpc.status.INTERNAL, details: "internal error" });
    }
  });
});

describe("fromPeer", () => {
  test("keeps the peer's code; for codes not about the request, our own message, not the peer's details", () => {
    const leaky = "Deadline exceeded after 0.285s,LB pick: 0.001s,remote_addr=127.0.0.1:52052";
    const cases: [grpc.status, string][] = [
      [grpc.status.DEADLINE_EXCEEDED, "route did not answer in time"],
      [grpc.status.UNAVAILABLE, "route is unavailable: try again"],
      [grpc.status.CANCELLED, "the call to route was cancelled"],
      [grpc.status.UNAUTHENTICATED, "the call to route was not authorized"],
      [grpc.status.PERMISSION_DENIED, "the call to route was not authorized"],
      [grpc.status.NOT_FOUND, "route found nothing"],
      [grpc.status.UNIMPLEMENTED, "route does not implement this call"],
      [grpc.status.INTERNAL, "route failed"],
      [grpc.status.UNKNOWN, "route failed"],
      [grpc.status.FAILED_PRECONDITION, "route failed"],
    ];
    for (const [code, expected] of cases) {
      const error = fromPeer("route", new StatusError(code, leaky));
      assert.ok(error instanceof StatusError);
      assert.equal(error.code, code);
      assert.equal(error.details, expected, grpc.status[code]);
      assert.ok(!error.message.includes("127.0.0.1"));
    }
  });

  test("passes the peer's words on for codes about the caller's request", () => {
    assert.equal(
      fromPeer("route", invalidArgument("point is required")).details,
      "route: point is required",
    );
    const tooMany = fromPeer(
      "route",
      new StatusError(grpc.status.RESOURCE_EXHAUSTED, "a route may have at most 50 points"),
    );
    assert.equal(tooMany.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(tooMany.details, "route: a route may have at most 50 points");
    const outOfRange = fromPeer("stats", new StatusError(grpc.status.OUT_OF_RANGE, "past the end"));
    assert.equal(outOfRange.details, "stats: past the end");
  });

  test("a plain Error from a peer becomes INTERNAL with no internal message", () => {
    const error = fromPeer("route", new Error("stack trace with internals"));
    assert.equal(error.code, grpc.status.INTERNAL);
    assert.equal(error.details, "route failed");
    assert.ok(!error.message.includes("internals"));
  });
});

describe("handlerStatus", () => {
  const logger = silentLogger();

  test("a StatusError is a deliberate answer and passes as it is", () => {
    assert.deepEqual(
      handlerStatus(logger, "M", new StatusError(grpc.status.NOT_FOUND, "no such thing")),
      { code: grpc.status.NOT_FOUND, details: "no such thing" },
    );
  });

  test("anything else is a bug: INTERNAL, with nothing internal in the details", () => {
    const internal = { code: grpc.status.INTERNAL, details: "internal error" };
    assert.deepEqual(handlerStatus(logger, "M", new Error("secret path /etc/x")), internal);
    // Even a raw error that carries a gRPC code: only StatusError is a deliberate answer.
    assert.deepEqual(
      handlerStatus(
        logger,
        "M",
        Object.assign(new Error("x"), { code: grpc.status.NOT_FOUND, details: "raw" }),
      ),
      internal,
    );
  });
});
