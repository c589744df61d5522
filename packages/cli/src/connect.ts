import { createGatewayClient, type GatewayServiceClient } from "@cloudrun-grpc/proto";
import { connectPeer, parsePeerUrl } from "@cloudrun-grpc/runtime";

/** A gateway client for `http://host:port` (h2c) or `https://…run.app` (TLS on 443). */
export function connectGateway(url: string): GatewayServiceClient {
  return connectPeer(parsePeerUrl(url), createGatewayClient);
}
