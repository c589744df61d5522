// The end user: who called the gateway, passed on to every hop behind it, so stats counts per
// end client and not every call as the gateway's.
//
//   gateway  sets `x-end-user` on each peer call it makes while serving a call, from that call's
//            verified caller ("anonymous" when a public gateway serves a call without a token:
//            server-auth.ts's anonymousCaller, a name no email can take). A client's own `x-end-user` never passes: the gateway trusts nobody's, and
//            grpc-js copies no incoming header to an outgoing call anyway.
//   route,   accept `x-end-user` only when the immediate caller, as the auth interceptor verified
//   stats    it, is one of AUTH_END_USER_FROM (the gateway's service account, from the topology).
//            From anyone else it is dropped with a warning (rate-limited: a caller allowed in
//            could otherwise flood the logs), and the call is that caller's own.
//
// Handlers read the result with `endUser(metadata)`: the accepted end user, else the verified
// immediate caller.
import * as grpc from "@grpc/grpc-js";
import type { AuthLogger } from "./config.js";
import { rateLimited } from "./rate-limited.js";
import { verifiedCaller } from "./server-auth.js";

/** The end user's email as the gateway sends it to its peers ("anonymous" without a token). */
export const endUserKey = "x-end-user";

/**
 * Where the end-user interceptor leaves an end user it accepted, for `endUser`. A separate
 * key, removed from every incoming call, so a value here was always checked by this process.
 */
export const acceptedEndUserKey = "x-accepted-end-user";

/** The end user of a call: the one accepted from the gateway, else the verified caller. */
export function endUser(metadata: grpc.Metadata): string {
  const [accepted] = metadata.get(acceptedEndUserKey);
  return typeof accepted === "string" ? accepted : verifiedCaller(metadata);
}

export interface EndUserInterceptorOptions {
  /** At most one warning per this many ms; the next one says how many were left out. */
  warnIntervalMs?: number;
}

/**
 * Server side: what this service does with a call's `x-end-user`, once the auth check has put
 * the verified caller in the metadata. Accepted (as `x-accepted-end-user`) only from
 * `trustedCallers`; anything else is removed, with a rate-limited warning. The auth
 * interceptor runs it in its own pass over the metadata (serviceAuth); endUserInterceptor is
 * the same as an interceptor of its own, for AUTH_MODE=off.
 */
export function endUserPolicy(
  trustedCallers: readonly string[],
  logger?: AuthLogger,
  options: EndUserInterceptorOptions = {},
): (metadata: grpc.Metadata, path: string) => void {
  const trusted = new Set(trustedCallers);
  const dropped = rateLimited(
    options.warnIntervalMs ?? 60_000,
    (heldBack, caller: string, claimed: grpc.MetadataValue[], method: string) =>
      logger?.warn(
        {
          caller: caller || undefined,
          method,
          // The claim is the caller's to choose: bounded, never trusted.
          claimedEndUser: claimed.map((value) => String(value).slice(0, 200)),
          droppedSinceLastWarning: heldBack,
        },
        `${endUserKey} dropped: only the gateway may name the end user; the call counts as its caller's`,
      ),
  );
  return (metadata, path) => {
    metadata.remove(acceptedEndUserKey);
    const claimed = metadata.get(endUserKey);
    if (claimed.length === 0) return;
    metadata.remove(endUserKey);
    const caller = verifiedCaller(metadata);
    const [value] = claimed;
    // One value, as the gateway sends it: several arrive joined by ", " (grpc-js and Node join
    // repeated headers), and no email the gateway verified has a comma.
    if (
      caller !== "" &&
      trusted.has(caller) &&
      claimed.length === 1 &&
      typeof value === "string" &&
      !value.includes(",")
    ) {
      metadata.set(acceptedEndUserKey, value);
    } else dropped(caller, claimed, path);
  };
}

/**
 * endUserPolicy as a server interceptor of its own. Must come after the auth interceptor in
 * the server's list (grpc-js passes incoming metadata through them in list order), so the
 * caller it reads was verified, never a client's own `x-verified-caller`.
 */
export function endUserInterceptor(
  trustedCallers: readonly string[],
  logger?: AuthLogger,
  options: EndUserInterceptorOptions = {},
): grpc.ServerInterceptor {
  const apply = endUserPolicy(trustedCallers, logger, options);
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, accept) {
            apply(metadata, method.path);
            accept(metadata);
          },
        });
      },
    });
}

/**
 * Client side, for the gateway's peer calls: names the end user of the call being served
 * (grpc-js's `parent` call option, which `downstream(call)` sets on every peer call) on the
 * outgoing call. A call made for no served call carries none and counts as the gateway's. Set
 * in the one pass of the gateway's peer interceptor (runtime's outgoing-calls.ts).
 */
export function forwardEndUser(metadata: grpc.Metadata, options: grpc.CallOptions): void {
  metadata.remove(endUserKey);
  const served = options.parent;
  if (served) metadata.set(endUserKey, endUser(served.metadata));
}

/** forwardEndUser as a client interceptor of its own, for a client made without runtime's peers. */
export function endUserForwardingInterceptor(): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        forwardEndUser(metadata, options);
        next(metadata, listener);
      },
    });
}
