// Incoming: one check for every call, at the server's registration point (a grpc-js server
// interceptor): a verified ID token from an allowed invoker, for a method it is allowed, or
// the call ends before any handler runs. No, malformed or invalid token → UNAUTHENTICATED;
// valid token from an identity that may not call this service, or not this method →
// PERMISSION_DENIED naming it and the service or method. The details say which check failed
// and never contain the token. Only health checks need no token (Cloud Run's probes carry
// none). The grpc.* services other than health (reflection, and channelz when enabled) need
// a token too and are open to every allowed invoker of the service, whatever methods it was
// granted: reflection describes only the service's own API, which its callers hold as the
// contract anyway, and channelz is an opt-in debugging aid (the tests read it as the callers).
// The methods granted in the topology are those of the service's own API: a caller granted
// some (route → stats: RecordEvents) may call those and nothing else of that API.
// Cloud Run's IAM (roles/run.invoker) grants a whole service, never a method: this check is
// what enforces the methods of infra/topology.json. Unknown methods reach it too (see
// routeUnknownMethodsThroughInterceptors in @cloudrun-grpc/runtime), so a caller without a
// token learns nothing of which methods exist. The verified email reaches handlers in the
// call's metadata (`verifiedCaller`); with `anonymous` (AUTH_MODE=optional, a public gateway)
// a call without a token is let through as `anonymousCaller`.
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

/** The caller of a call that came without a token, where that is allowed (AUTH_MODE=optional). */
export const anonymousCaller = "anonymous";

/** Who may call: an email, and the methods of the service's own API it may call (all: absent). */
export interface AllowedInvoker {
  email: string;
  methods?: readonly string[];
}

const emailPattern = /^[^\s@=|,]+@[^\s@=|,]+$/;
const methodPattern = /^[A-Z][A-Za-z0-9]*$/;

/** `email` or `email=Method1|Method2` (AUTH_ALLOWED_INVOKERS), or what is wrong with it. */
export function parseAllowedInvoker(entry: string): AllowedInvoker | string {
  const [email = "", methods, ...rest] = entry.split("=");
  if (!emailPattern.test(email) || rest.length > 0) {
    return `${JSON.stringify(entry)} is not an email or email=Method1|Method2`;
  }
  if (methods === undefined) return { email };
  const names = methods.split("|");
  const bad = names.filter((name) => !methodPattern.test(name));
  if (bad.length > 0) {
    return `${JSON.stringify(entry)}: ${bad.map((name) => JSON.stringify(name)).join(", ")} is not a method name (e.g. GetStats)`;
  }
  return { email, methods: names };
}

/** The AUTH_ALLOWED_INVOKERS entry of an invoker. */
export function formatAllowedInvoker(invoker: AllowedInvoker): string {
  return invoker.methods ? `${invoker.email}=${invoker.methods.join("|")}` : invoker.email;
}

export interface ServerAuthOptions {
  verifier: IdTokenVerifier;
  /**
   * The identities allowed to call this server (its invokers in the topology): an email may
   * call every method; with `methods`, only those methods of the service's own API.
   */
  allowedInvokers: readonly (string | AllowedInvoker)[];
  /** Serve a call without any authorization header as `anonymousCaller` (a public gateway). */
  anonymous?: boolean;
  /**
   * Run on every accepted call's metadata once the verified caller is in it (the end-user
   * policy): in this interceptor's pass, not in a layer of its own per call.
   */
  onAccepted?: (metadata: grpc.Metadata, path: string) => void;
}

/** The email of the verified caller, as set by the auth interceptor ("" if none). */
export function verifiedCaller(metadata: grpc.Metadata): string {
  const [value] = metadata.get(verifiedCallerKey);
  return typeof value === "string" ? value : "";
}

export function serverAuthInterceptor(options: ServerAuthOptions): grpc.ServerInterceptor {
  // email → "all", or the method names it may call. An email listed twice gets the union.
  const allowed = new Map<string, "all" | Set<string>>();
  for (const entry of options.allowedInvokers) {
    const { email, methods } = typeof entry === "string" ? { email: entry } : entry;
    const known = allowed.get(email);
    if (methods === undefined || known === "all") allowed.set(email, "all");
    else allowed.set(email, new Set([...(known ?? []), ...methods]));
  }

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

  /** The caller's email if it may call this method, else the refusal. */
  function permitted(email: string, path: string): string | grpc.StatusObject {
    const rule = allowed.get(email);
    if (rule === "all") return email;
    const [, service = path, method = ""] = path.split("/");
    if (rule === undefined) {
      return status(grpc.status.PERMISSION_DENIED, `${email} may not call ${service}`);
    }
    // Granted method names are those of the service's own API; grpc.* (reflection, channelz)
    // is open to every allowed invoker (see above).
    if (service.startsWith("grpc.") || rule.has(method)) return email;
    return status(grpc.status.PERMISSION_DENIED, `${email} may not call ${service}/${method}`);
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

  const onAccepted = options.onAccepted ?? (() => {});

  return (method, call) => {
    const intercepting: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, accept) {
            metadata.remove(verifiedCallerKey);
            const acceptAs = (caller: string | undefined) => {
              if (caller !== undefined) metadata.set(verifiedCallerKey, caller);
              onAccepted(metadata, method.path);
              accept(metadata);
            };
            if (unauthenticatedPaths.has(method.path)) {
              acceptAs(undefined);
              return;
            }
            const decide = (outcome: string | grpc.StatusObject) => {
              if (typeof outcome === "string") acceptAs(outcome);
              else intercepting.sendStatus(outcome);
            };
            if (options.anonymous && metadata.get("authorization").length === 0) {
              // Anonymous callers reach the service's own API and reflection only: channelz
              // names the addresses of peers and other clients.
              if (method.path.startsWith("/grpc.channelz.")) {
                decide(
                  status(
                    grpc.status.UNAUTHENTICATED,
                    "channelz needs an ID token of an allowed invoker",
                  ),
                );
                return;
              }
              acceptAs(anonymousCaller);
              return;
            }
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
