// Calls made while serving a call are bound to it: cancelled when it is cancelled (a client
// that goes away leaves no work or stream behind it on the next hop) and given its deadline
// less a margin, so the peer gives up first and this hop still has time to answer with the
// peer's status instead of its client seeing its own deadline pass.
import type * as grpc from "@grpc/grpc-js";

/** A twentieth of the time left, at most 100 ms: enough to pass a status back one hop. */
export function deadlineMarginMs(remainingMs: number): number {
  return Math.min(100, Math.max(0, remainingMs) / 20);
}

/** Any call a handler serves (what grpc-js accepts as a `parent`). */
export type ServedCall = NonNullable<grpc.CallOptions["parent"]>;

/** Call options for a peer call made on behalf of `call`. */
export function downstream(call: ServedCall): grpc.CallOptions {
  const incoming = call.getDeadline();
  const at = incoming instanceof Date ? incoming.getTime() : incoming;
  // grpc-js takes the earlier of this deadline and the parent's, and passes cancellation on.
  if (!Number.isFinite(at)) return { parent: call };
  return { parent: call, deadline: at - deadlineMarginMs(at - Date.now()) };
}
