// Peers are named by URL, as Cloud Run names services:
//   http://127.0.0.1:50052        → h2c (plain HTTP/2), for the local stack and tests
//   https://route-xyz.a.run.app   → TLS on :443 (Cloud Run terminates TLS in front of the container)
// The URL's origin is also the audience of the ID tokens minted for that peer.
import { retryableMethods, type ServiceName } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { outgoingCalls, type PeerCallToken } from "./outgoing-calls.js";
import type { RpcLogOptions } from "./rpc-log.js";

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
 * Channel credentials for a peer: h2c for http; TLS for https, with the system's roots (or
 * GRPC_DEFAULT_SSL_ROOTS_FILE_PATH's, which grpc-js reads once, when it loads), or `rootCerts`
 * when given (a CA made at run time, as the local Cloud Run front end's).
 */
export function peerCredentials(peer: PeerAddress, rootCerts?: Buffer): grpc.ChannelCredentials {
  return peer.secure ? grpc.credentials.createSsl(rootCerts) : grpc.credentials.createInsecure();
}

export type ClientFactory<Client> = (
  target: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => Client;

/**
 * Instances to connect to instead of the URL's host, as `ip:port` (e.g. two local route
 * instances behind one gateway); the URL stays the peer's identity and token audience. On
 * Cloud Run the URL alone is right: its front end spreads calls over the instances.
 */
export function withAddresses(peer: PeerAddress, addresses: readonly string[]): PeerAddress {
  if (addresses.length === 0) return peer;
  return { ...peer, target: `ipv4:${addresses.join(",")}` };
}

/**
 * Retries of one call: a few attempts with backoff, only for UNAVAILABLE. That status does not
 * promise the call was never processed (a drain ends calls mid-way with it), hence only the
 * methods the contract marks safe to repeat.
 */
export const retryPolicy = {
  maxAttempts: 3,
  initialBackoff: "0.1s",
  maxBackoff: "1s",
  backoffMultiplier: 2,
  retryableStatusCodes: ["UNAVAILABLE"],
};

/**
 * The channel's service config: calls spread over every address the target resolves to
 * (round_robin), and the methods the contract marks idempotent are retried on UNAVAILABLE
 * within a budget: retries stop while more than about one call in ten fails (gRPC's retry
 * throttling: each failure costs a token, each success gives back 0.1, retries need half of
 * the 10 tokens).
 */
export function peerServiceConfig(service?: ServiceName): object {
  const methods = service ? retryableMethods(service) : [];
  return {
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig:
      service && methods.length > 0
        ? [{ name: methods.map((method) => ({ service, method })), retryPolicy }]
        : [],
    retryThrottling: { maxTokens: 10, tokenRatio: 0.1 },
  };
}

/**
 * Keepalive towards a peer: a ping after 60 s without traffic on a connection with calls
 * open, and the connection is given up if no answer comes within 20 s (a peer instance gone
 * without closing, a NAT that forgot the flow). No pings on idle connections, which Cloud Run's
 * front end and scale-to-zero treat as noise.
 */
export const peerKeepalive: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
  "grpc.keepalive_permit_without_calls": 0,
};

export interface PeerClientOptions {
  /** The service called: its methods the contract marks idempotent are retried. */
  service?: ServiceName;
  /** Run for every call, the first one outermost (servicePeers: outgoing-calls.ts's one pass). */
  interceptors?: grpc.Interceptor[];
  /** Extra grpc-js channel options; they win over the defaults here. */
  channelOptions?: grpc.ChannelOptions;
  /** The CA (PEM) an https peer's certificate must chain to, instead of the default roots. */
  rootCerts?: Buffer;
}

/**
 * The one channel factory: a typed client for a peer URL with this system's channel policy
 * (load balancing, retries, keepalive), e.g.
 * `connectPeer(peer, createRouteGuideClient, { service: serviceNames.routeGuide })`.
 */
export function connectPeer<Client>(
  peer: PeerAddress,
  factory: ClientFactory<Client>,
  options: PeerClientOptions = {},
): Client {
  return factory(peer.target, peerCredentials(peer, options.rootCerts), {
    "grpc.service_config": JSON.stringify(peerServiceConfig(options.service)),
    ...peerKeepalive,
    ...(options.interceptors ? { interceptors: options.interceptors } : {}),
    ...options.channelOptions,
  });
}

/** What is the same on every peer call a service makes, whichever peer it calls. */
export interface PeerWiring {
  rpcLog: RpcLogOptions;
  /** The ID token for a peer's URL (the token's audience); undefined: the calls carry none. */
  tokenFor: (peerUrl: string) => PeerCallToken | undefined;
  /** Headers of the service's own on every peer call (the gateway naming its end user). */
  headers?: (metadata: grpc.Metadata, callOptions: grpc.InterceptorOptions) => void;
}

export interface ServicePeerOptions {
  /** The service called (its idempotent methods are retried). */
  service: ServiceName;
  /** The peer's name in the call lines, e.g. "route". */
  name: string;
  channelOptions?: grpc.ChannelOptions;
}

export interface ServicePeers {
  connect<Client>(
    peer: PeerAddress,
    factory: ClientFactory<Client>,
    options: ServicePeerOptions,
  ): Client;
}

/**
 * The one place a service's peer clients are wired: every call passes outgoing-calls.ts's
 * interceptor, which sends the trace and the call's id, the service's headers and the ID token
 * for the peer's URL, and writes the call line, in one pass. A factory makes one of these and
 * connects each peer through it.
 */
export function servicePeers(wiring: PeerWiring): ServicePeers {
  return {
    connect(peer, factory, options) {
      const token = wiring.tokenFor(peer.url);
      return connectPeer(peer, factory, {
        service: options.service,
        interceptors: [
          outgoingCalls({
            peer: options.name,
            rpcLog: wiring.rpcLog,
            ...(wiring.headers ? { headers: wiring.headers } : {}),
            ...(token ? { token } : {}),
          }),
        ],
        ...(options.channelOptions ? { channelOptions: options.channelOptions } : {}),
      });
    },
  };
}
