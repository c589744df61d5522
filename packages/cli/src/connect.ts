import { fixedToken, IdTokenSource, idTokenInterceptor } from "@cloudrun-grpc/auth-client";
import { createGatewayClient, type GatewayServiceClient, serviceNames } from "@cloudrun-grpc/proto";
import { connectPeer, parsePeerUrl } from "@cloudrun-grpc/runtime";

export type GatewayAuth =
  /** An ID token for the gateway's URL from Application Default Credentials (google-auth-library). */
  | { kind: "adc" }
  /** A token given as it is (e.g. `gcloud auth print-identity-token --audiences=<gateway URL>`). */
  | { kind: "token"; token: string }
  /** No token (a stack running with AUTH_MODE=off). */
  | { kind: "none" };

/**
 * A gateway client for `http://host:port` (h2c) or `https://…run.app` (TLS on 443).
 * `rootCerts`: the CA (PEM) to trust instead of the default roots (the local Cloud Run front
 * end's, which is made at run time).
 */
export function connectGateway(
  url: string,
  auth: GatewayAuth = { kind: "adc" },
  options: { rootCerts?: Buffer } = {},
): GatewayServiceClient {
  const peer = parsePeerUrl(url);
  const tokens =
    auth.kind === "none"
      ? undefined
      : auth.kind === "token"
        ? fixedToken(peer.url, auth.token)
        : new IdTokenSource(peer.url);
  return connectPeer(peer, createGatewayClient, {
    service: serviceNames.gateway,
    interceptors: tokens ? [idTokenInterceptor(tokens)] : [],
    rootCerts: options.rootCerts,
  });
}
