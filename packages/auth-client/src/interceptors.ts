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
}

/** A token given from outside, e.g. `gcloud auth print-identity-token`. */
export function fixedToken(audience: string, token: string): TokenProvider {
  return { audience, token: async () => token };
}

/** Adds `authorization: Bearer <ID token for the peer>` to every call; fails fast without one. */
export function idTokenInterceptor(source: TokenProvider): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        source.token().then(
          (token) => {
            metadata.set("authorization", `Bearer ${token}`);
            metadata.set("x-serverless-authorization", `Bearer ${token}`);
            next(metadata, listener);
          },
          (error: Error) => {
            // Never started: nothing reaches the peer; the caller gets the reason at once.
            listener.onReceiveStatus({
              code: grpc.status.UNAUTHENTICATED,
              details: `no ID token for ${source.audience}: ${error.message}`,
              metadata: new grpc.Metadata(),
            });
          },
        );
      },
    });
}
