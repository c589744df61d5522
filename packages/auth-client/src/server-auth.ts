// Incoming: one check for every call, at the server's registration point (a grpc-js server
// interceptor): a verified ID token from an allowed invoker, or the call ends before any
// handler runs. No, malformed or invalid token → UNAUTHENTICATED; valid token from an identity
// that may not call this service → PERMISSION_DENIED. The details say which check failed and
// never contain the token. Only health checks need no token (Cloud Run's probes carry none);
// reflection shows the whole API, so it needs a token like any call. The verified email
// reaches handlers in the call's metadata (`verifiedCaller`).
import * as grpc from "@grpc/grpc-js";
import { type IdTokenVerifier, TokenRejected } from "./verify.js";

/** Metadata key carrying the verified caller to handlers; a client's own value is replaced. */
export const verifiedCallerKey = "x-verified-caller";

/** The only paths that answer without a token: grpc.health.v1 (Cloud Run's probes). */
export const unauthenticatedPaths = new Set([
  "/grpc.health.v1.Health/Check",
  "/grpc.health.v1.Health/Watch",
  "/grpc.health.v1.Health/List",
]);

export interface ServerAuthOptions {
  verifier: IdTokenVerifier;
  /** Emails of the identities allowed to call this server (its invokers in the topology). */
  allowedInvokers: readonly string[];
}

/** The email of the verified caller, as set by the auth interceptor ("" if none). */
export function verifiedCaller(metadata: grpc.Metadata): string {
  const [value] = metadata.get(verifiedCallerKey);
  return typeof value === "string" ? value : "";
}

export function serverAuthInterceptor(options: ServerAuthOptions): grpc.ServerInterceptor {
  const allowed = new Set(options.allowedInvokers);

  /** The Bearer token of a call, or the refusal: no, several or a malformed header. */
  function bearerToken(metadata: grpc.Metadata): string | grpc.StatusObject {
    const values = metadata.get("authorization");
    const header = values[0];
    if (header === undefined)
      return status(grpc.status.UNAUTHENTICATED, "missing authorization: Bearer <ID token>");
    if (values.length > 1)
      return status(grpc.status.UNAUTHENTICATED, "more than one authorization header");
    const match = typeof header === "string" ? /^Bearer ([^\s]+)$/i.exec(header) : null;
    if (!match) return status(grpc.status.UNAUTHENTICATED, "authorization is not a Bearer token");
    return match[1] as string;
  }

  /** The caller's email if it may call this server, else the refusal. */
  function permitted(email: string, path: string): string | grpc.StatusObject {
    if (allowed.has(email)) return email;
    const service = path.split("/")[1] ?? path;
    return status(grpc.status.PERMISSION_DENIED, `${email} may not call ${service}`);
  }

  /** A token seen for the first time (or expired from the cache): a signature check. */
  async function verifyAndPermit(token: string, path: string): Promise<string | grpc.StatusObject> {
    let email: string;
    try {
      ({ email } = await options.verifier.verify(token));
    } catch (error) {
      const reason =
        error instanceof TokenRejected ? error.reason : "the token could not be verified";
      return status(grpc.status.UNAUTHENTICATED, `invalid ID token: ${reason}`);
    }
    return permitted(email, path);
  }

  return (method, call) => {
    const intercepting: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, accept) {
            metadata.remove(verifiedCallerKey);
            if (unauthenticatedPaths.has(method.path)) {
              accept(metadata);
              return;
            }
            const decide = (outcome: string | grpc.StatusObject) => {
              if (typeof outcome === "string") {
                metadata.set(verifiedCallerKey, outcome);
                accept(metadata);
              } else intercepting.sendStatus(outcome);
            };
            const token = bearerToken(metadata);
            if (typeof token !== "string") {
              decide(token);
              return;
            }
            // A token already verified (the usual case: callers reuse theirs for an hour) is
            // decided here and now, with no promise and no extra turn of the event loop.
            const known = options.verifier.verifiedNow(token);
            if (known) decide(permitted(known.email, method.path));
            else void verifyAndPermit(token, method.path).then(decide);
          },
        });
      },
    });
    return intercepting;
  };
}

function status(code: grpc.status, details: string): grpc.StatusObject {
  return { code, details, metadata: new grpc.Metadata() };
}
