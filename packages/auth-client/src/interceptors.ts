// The ID token travels as gRPC metadata set by a client interceptor, not as call credentials:
// grpc-js refuses call credentials on insecure channels, and the local stack is h2c.
//
// It goes in two headers. On Cloud Run the front end checks the caller's token for
// roles/run.invoker; when `X-Serverless-Authorization` is present it uses that one and leaves
// `Authorization` as it is, whereas a token it checks in `Authorization` reaches the container
// with its signature removed. So the callee's own check (which reads `Authorization`) stays a
// real signature check on Cloud Run too. Locally only `Authorization` is read.
import * as grpc from "@grpc/grpc-js";

/** Where a client's tokens come from: an IdTokenSource, or a fixed token (CLI --token). */
export interface TokenProvider {
  audience: string;
  token(): Promise<string>;
  /** A valid token at hand right now, if any (no promise, no timer: the per-call fast path). */
  cached?(): string | undefined;
}

/** A token given from outside, e.g. `gcloud auth print-identity-token`. */
export function fixedToken(audience: string, token: string): TokenProvider {
  return { audience, token: async () => token, cached: () => token };
}

function attachToken(metadata: grpc.Metadata, header: string): void {
  metadata.set("authorization", header);
  metadata.set("x-serverless-authorization", header);
}

/** The same token's header and setter for every call that reuses it (about an hour). */
function tokenHeaders(): (token: string) => (metadata: grpc.Metadata) => void {
  let lastToken = "";
  let lastSetter: (metadata: grpc.Metadata) => void = () => {};
  return (token) => {
    if (token !== lastToken) {
      const header = `Bearer ${token}`;
      lastSetter = (metadata) => attachToken(metadata, header);
      lastToken = token;
    }
    return lastSetter;
  };
}

/**
 * A peer's token for runtime's one-pass peer interceptor (outgoing-calls.ts's PeerCallToken):
 * set in that pass when a valid one is at hand, else waited for by idTokenInterceptor, which
 * then runs under it for that call only.
 */
export function peerToken(source: TokenProvider): {
  ready(): ((metadata: grpc.Metadata) => void) | undefined;
  waiting: grpc.Interceptor;
} {
  const setterFor = tokenHeaders();
  return {
    ready() {
      const token = source.cached?.();
      return token ? setterFor(token) : undefined;
    },
    waiting: idTokenInterceptor(source),
  };
}

function remainingMs(deadline: grpc.Deadline | undefined): number {
  if (deadline === undefined) return Number.POSITIVE_INFINITY;
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return at - Date.now();
}

/**
 * Adds the ID token to every call; fails fast without one. While the token is being fetched
 * the call's deadline and a cancel still end it (grpc-js cannot: the call has not started).
 */
export function idTokenInterceptor(source: TokenProvider): grpc.Interceptor {
  const setterFor = tokenHeaders();
  return (options, nextCall) => {
    const inner = nextCall(options);
    let started = false;
    let ended = false;
    let endPending: ((status: grpc.StatusObject) => void) | undefined;
    return new grpc.InterceptingCall(inner, {
      start(metadata, listener, next) {
        const ready = source.cached?.();
        if (ready) {
          started = true;
          setterFor(ready)(metadata);
          next(metadata, listener);
          return;
        }
        let timer: NodeJS.Timeout | undefined;
        endPending = (status) => {
          if (started || ended) return;
          ended = true;
          clearTimeout(timer);
          listener.onReceiveStatus(status);
        };
        const left = remainingMs(options.deadline);
        if (Number.isFinite(left)) {
          timer = setTimeout(
            () =>
              endPending?.({
                code: grpc.status.DEADLINE_EXCEEDED,
                details: `deadline exceeded while getting an ID token for ${source.audience}`,
                metadata: new grpc.Metadata(),
              }),
            Math.max(0, left),
          );
        }
        source.token().then(
          (token) => {
            clearTimeout(timer);
            if (ended) return;
            started = true;
            setterFor(token)(metadata);
            next(metadata, listener);
          },
          (error: Error) => {
            const details = `no ID token for ${source.audience}: ${error.message}`;
            endPending?.({
              code: grpc.status.UNAUTHENTICATED,
              details,
              metadata: new grpc.Metadata(),
            });
            // End the call grpc-js created, so nothing of it stays behind.
            inner.cancelWithStatus(grpc.status.UNAUTHENTICATED, details);
          },
        );
      },
      cancel(next) {
        endPending?.({
          code: grpc.status.CANCELLED,
          details: "Cancelled on client",
          metadata: new grpc.Metadata(),
        });
        next();
      },
    });
  };
}
