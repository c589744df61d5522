import * as grpc from "@grpc/grpc-js";
import type { Logger } from "./logger.js";

/** An error that grpc-js turns into the given status when passed to a callback or stream. */
export class StatusError extends Error implements Partial<grpc.StatusObject> {
  constructor(
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(details);
    this.name = `StatusError(${grpc.status[code]})`;
  }
}

export function invalidArgument(details: string): StatusError {
  return new StatusError(grpc.status.INVALID_ARGUMENT, details);
}

/** Anything thrown or received, as a gRPC status. */
export function toStatus(error: unknown): { code: grpc.status; details: string } {
  if (error && typeof error === "object" && "code" in error && typeof error.code === "number") {
    const details =
      "details" in error && typeof error.details === "string"
        ? error.details
        : error instanceof Error
          ? error.message
          : "";
    return { code: error.code as grpc.status, details };
  }
  return { code: grpc.status.INTERNAL, details: "internal error" };
}

/**
 * An error from a peer, passed on to our own caller: same code (the caller can act on
 * UNAVAILABLE, DEADLINE_EXCEEDED, INVALID_ARGUMENT as if it had called the peer), and the
 * details prefixed with the peer's name so the hop that failed is visible.
 */
export function fromPeer(peerName: string, error: unknown): StatusError {
  const { code, details } = toStatus(error);
  return new StatusError(code, `${peerName}: ${details}`);
}

/**
 * What a handler answers when it fails: a StatusError is a deliberate answer and passes as it
 * is; anything else is a bug, logged here with its stack, and the client gets INTERNAL
 * without internal details.
 */
export function handlerStatus(logger: Logger, method: string, error: unknown) {
  if (error instanceof StatusError) return { code: error.code, details: error.details };
  logger.error({ err: error, method }, "handler failed");
  return { code: grpc.status.INTERNAL, details: "internal error" };
}
