import * as grpc from "@grpc/grpc-js";
import type { Logger } from "./logger.js";

/** An error that grpc-js turns into the given status when passed to a callback or stream. */
export class StatusError extends Error implements Partial<grpc.StatusObject> {
  constructor(
    readonly code: grpc.status,
    readonly details: string,
    /**
     * The request field at fault as a path (`events[3].caller`), for answers that name it in
     * the contract (stats' RecordEventsResponse.rejected); never sent as a status itself.
     */
    readonly field?: string,
  ) {
    super(details);
    this.name = `StatusError(${grpc.status[code]})`;
  }
}

/** `details` starts with the path of the field at fault; `field` is that path alone. */
export function invalidArgument(details: string, field?: string): StatusError {
  return new StatusError(grpc.status.INVALID_ARGUMENT, details, field);
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
 * Codes whose details a peer writes about the caller's own request (a missing field, a limit):
 * the caller needs them to fix the request, and they are our services' own validation
 * messages (or grpc-js's size limits), never addresses or internals.
 */
const requestCodes = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.OUT_OF_RANGE,
  grpc.status.RESOURCE_EXHAUSTED,
]);

/** What our caller is told for each other code: the peer's details stay in our logs. */
function ownMessage(peerName: string, code: grpc.status): string {
  switch (code) {
    case grpc.status.DEADLINE_EXCEEDED:
      return `${peerName} did not answer in time`;
    case grpc.status.UNAVAILABLE:
      return `${peerName} is unavailable: try again`;
    case grpc.status.CANCELLED:
      return `the call to ${peerName} was cancelled`;
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.PERMISSION_DENIED:
      return `the call to ${peerName} was not authorized`;
    case grpc.status.NOT_FOUND:
      return `${peerName} found nothing`;
    case grpc.status.UNIMPLEMENTED:
      return `${peerName} does not implement this call`;
    default:
      return `${peerName} failed`;
  }
}

/**
 * An error from a peer, passed on to our own caller: same code (the caller can act on
 * UNAVAILABLE, DEADLINE_EXCEEDED, INVALID_ARGUMENT as if it had called the peer), with the
 * peer named first so the hop that failed is visible. The peer's own details pass on only
 * for codes about the caller's request (`requestCodes`); for any other code the caller gets
 * our fixed message, since peer details can carry internals (`route: Deadline exceeded after
 * 0.285s,LB pick: 0.001s,remote_addr=127.0.0.1:52052`, a peer's URL, a service account). The
 * peer's details are logged where the peer call ends: the client call line of
 * outgoingCallLines, a warning with `details`, written for every failed peer call.
 */
export function fromPeer(peerName: string, error: unknown): StatusError {
  const { code, details } = toStatus(error);
  return new StatusError(
    code,
    requestCodes.has(code) ? `${peerName}: ${details}` : ownMessage(peerName, code),
  );
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
