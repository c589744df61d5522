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

  async function authorize(metadata: grpc.Metadata, path: string): Promise<string> {
    const [header, ...more] = metadata.get("authorization");
    if (header === undefined)
      throw status(grpc.status.UNAUTHENTICATED, "missing authorization: Bearer <ID token>");
    if (more.length > 0)
      throw status(grpc.status.UNAUTHENTICATED, "more than one authorization header");
    const match = typeof header === "string" ? /^Bearer ([^\s]+)$/i.exec(header) : null;
    if (!match) throw status(grpc.status.UNAUTHENTICATED, "authorization is not a Bearer token");
    let email: string;
    try {
      ({ email } = await options.verifier.verify(match[1] as string));
    } catch (error) {
      const reason =
        error instanceof TokenRejected ? error.reason : "the token could not be verified";
      throw status(grpc.status.UNAUTHENTICATED, `invalid ID token: ${reason}`);
    }
    if (!allowed.has(email)) {
      const service = path.split("/")[1] ?? path;
      throw status(grpc.status.PERMISSION_DENIED, `${email} may not call ${service}`);
    }
    return email;
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
            authorize(metadata, method.path).then(
              (email) => {
                metadata.set(verifiedCallerKey, email);
                accept(metadata);
              },
              (refusal: grpc.StatusObject) => intercepting.sendStatus(refusal),
            );
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
