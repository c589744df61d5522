// Peers are named by URL, as Cloud Run names services:
//   http://127.0.0.1:50052        → h2c (plain HTTP/2), for the local stack and tests
//   https://route-xyz.a.run.app   → TLS on :443 (Cloud Run terminates TLS in front of the container)
// The URL's origin is also the audience of the ID tokens minted for that peer.
import * as grpc from "@grpc/grpc-js";

export interface PeerAddress {
  /** The normalised origin, e.g. `https://route-xyz.a.run.app`: the peer's identity and token audience. */
  url: string;
  /** The grpc-js target, `host:port`. */
  target: string;
  secure: boolean;
}

export function parsePeerUrl(raw: string): PeerAddress {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(
      `must be a URL like http://127.0.0.1:50052 or https://<service>.run.app, got ${JSON.stringify(raw)}`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`must use http: (h2c) or https: (TLS), got ${JSON.stringify(url.protocol)}`);
  }
  if (url.username || url.password) throw new Error("must not contain credentials");
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash) {
    throw new Error(
      `must be an origin without path, query or fragment, got ${JSON.stringify(raw)}`,
    );
  }
  const secure = url.protocol === "https:";
  const port = url.port || (secure ? "443" : "80");
  return { url: url.origin, target: `${url.hostname}:${port}`, secure };
}

/**
 * Channel credentials for a peer: h2c, or TLS with Node's bundled root certificates, which
 * grpc's GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (a PEM file) replaces when set.
 */
export function peerCredentials(peer: PeerAddress): grpc.ChannelCredentials {
  return peer.secure ? grpc.credentials.createSsl() : grpc.credentials.createInsecure();
}

export type ClientFactory<Client> = (
  target: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => Client;

/** The one channel factory: a typed client for a peer URL, e.g. `connectPeer(peer, createRouteGuideClient)`. */
export function connectPeer<Client>(
  peer: PeerAddress,
  factory: ClientFactory<Client>,
  options: grpc.ChannelOptions = {},
): Client {
  return factory(peer.target, peerCredentials(peer), options);
}
