// A service's front end: its own URL (https://localhost:<port>, on 127.0.0.1), TLS with ALPN
// h2 as Cloud Run serves gRPC (https://cloud.google.com/run/docs/container-contract: "TLS is
// terminated by Cloud Run"; the container gets h2c). Each stream of a client connection is a
// request of its own: ingress, then IAM, then a slot on an instance, then it is proxied. So one
// client connection is spread over any number of instances, and a client never sees the
// instances come and go (their GOAWAYs stop at the front end).
//
// Refusals come before any instance sees the call, in Cloud Run's order: network (ingress),
// then identity (IAM).
// - Ingress: an internal service refuses a request from outside its VPC (vpc.ts). The ingress
//   page says such requests "cannot reach your service"; it names no status. Answered 404 here
//   (a gRPC client sees UNIMPLEMENTED), a choice.
// - Request timeout (https://cloud.google.com/run/docs/configuring/request-timeout): a request
//   still open at the service's timeout (counted from its arrival, waiting included) is ended:
//   "Cloud Run closes the network connection and returns an HTTP 504 error". Before the answer
//   has begun: 504 (a gRPC client sees UNAVAILABLE). After it has begun, a status can no longer
//   be sent, and closing the client's whole connection would end its other calls too: the
//   stream is reset (RST_STREAM NO_ERROR, which grpc-js reports as INTERNAL "Received
//   RST_STREAM with code 0"), a choice; the docs are silent on streams. The instance's stream is
//   cancelled; the instance itself keeps running ("The container might continue processing").
// - No instance within the pending time: 429, a choice (the max-instances page says only that
//   the request fails).
import {
  constants,
  createSecureServer,
  type Http2SecureServer,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from "node:http2";
import type { AddressInfo } from "node:net";
import type { EdgeCertificates } from "./certificates.js";
import type { EdgeIam } from "./iam.js";
import type { Logger } from "./log.js";
import { type InstancePool, NoInstanceAvailable } from "./pool.js";
import { type ProxiedCall, proxyStream } from "./proxy-stream.js";
import { refuse } from "./refusals.js";
import type { VpcEgress } from "./vpc.js";

export interface FrontEndOptions {
  service: string;
  /** 0: a free port. */
  port: number;
  certificates: EdgeCertificates;
  internalOnly: boolean;
  vpc: VpcEgress;
  iam: () => EdgeIam;
  pool: () => InstancePool;
  requestTimeoutMs: number;
  logger: Logger;
}

export class FrontEnd {
  private server: Http2SecureServer | undefined;
  private readonly sessions = new Set<ServerHttp2Session>();
  port = 0;

  constructor(private readonly options: FrontEndOptions) {}

  /**
   * https://localhost:<port>, not 127.0.0.1: a TLS client sends the host as SNI, and Node
   * refuses an IP address there (grpc-js then fails every call), so the name it is.
   */
  get url(): string {
    return `https://localhost:${this.port}`;
  }

  async start(): Promise<void> {
    const { certificates } = this.options;
    const server = createSecureServer({
      key: certificates.keyPem,
      cert: certificates.certPem,
      ALPNProtocols: ["h2"],
      allowHTTP1: false,
    });
    server.on("session", (session) => {
      this.sessions.add(session);
      session.on("error", () => {});
      session.once("close", () => this.sessions.delete(session));
    });
    // A client that does not trust the CA fails its handshake: its problem, not the server's.
    server.on("tlsClientError", () => {});
    server.on("stream", (http2Stream, headers) => {
      const stream = http2Stream as ServerHttp2Stream;
      stream.on("error", () => {});
      void this.serve(stream, headers).catch((error: Error) => {
        this.options.logger.error(
          { event: "request failed", service: this.options.service, reason: error.message },
          `${this.options.service}: request failed: ${error.message}`,
        );
        refuse(stream, 503, "The request failed.");
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.options.port, "127.0.0.1", resolve);
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  private refused(
    stream: ServerHttp2Stream,
    path: string,
    status: 401 | 403 | 404 | 429 | 504,
    reason: string,
    text: string,
  ) {
    this.options.logger.warn(
      { event: "request refused", service: this.options.service, path, status, reason },
      `${this.options.service}: ${path} refused (${status}): ${reason}`,
    );
    refuse(stream, status, text);
  }

  private async serve(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    const { service, logger } = this.options;
    const path = String(headers[":path"] ?? "");
    const remotePort = stream.session?.socket?.remotePort;

    if (this.options.internalOnly && !this.options.vpc.isInternal(remotePort)) {
      this.refused(
        stream,
        path,
        404,
        "ingress is internal and the call does not come through the VPC",
        `The requested URL ${path} was not found on this server.`,
      );
      return;
    }

    let call: ProxiedCall | undefined;
    const timer = setTimeout(() => {
      logger.warn(
        {
          event: "request timed out",
          service,
          path,
          timeoutMs: this.options.requestTimeoutMs,
          answered: stream.headersSent,
        },
        `${service}: ${path} ended at the request timeout (${this.options.requestTimeoutMs} ms)`,
      );
      if (call) call.expire();
      else
        refuse(
          stream,
          504,
          "The request has been terminated because it has reached the maximum request timeout.",
        );
    }, this.options.requestTimeoutMs);
    const waiting = new AbortController();
    stream.once("close", () => {
      clearTimeout(timer);
      waiting.abort();
    });

    const decision = await this.options.iam().check(headers);
    if (stream.closed || stream.headersSent) return;
    if (!decision.allowed) {
      const text =
        decision.status === 401
          ? `Your client does not have permission to the requested URL ${path}.`
          : `Your client does not have permission to get URL ${path} from this server.`;
      this.refused(stream, path, decision.status, decision.reason, text);
      return;
    }

    const pool = this.options.pool();
    let instance: Awaited<ReturnType<InstancePool["acquire"]>>;
    try {
      instance = await pool.acquire(waiting.signal);
    } catch (error) {
      if (error instanceof NoInstanceAvailable) {
        this.refused(
          stream,
          path,
          429,
          error.message,
          "The request was aborted because there was no available instance.",
        );
      }
      return;
    }
    if (stream.closed || stream.headersSent) {
      pool.release(instance);
      return;
    }

    const forwarded: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) {
      if (!name.startsWith(":")) forwarded[name] = value;
    }
    if (decision.rewrite) forwarded[decision.rewrite.header] = decision.rewrite.value;
    const from = stream.session?.socket?.remoteAddress ?? "127.0.0.1";
    forwarded["x-forwarded-for"] = headers["x-forwarded-for"]
      ? `${headers["x-forwarded-for"]}, ${from}`
      : from;
    forwarded["x-forwarded-proto"] = "https";
    forwarded[":method"] = headers[":method"];
    forwarded[":path"] = path;
    forwarded[":authority"] = headers[":authority"];
    forwarded[":scheme"] = "http";
    call = proxyStream(stream, forwarded, instance.connection(), () => pool.release(instance));
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    for (const session of this.sessions) session.destroy(undefined, constants.NGHTTP2_NO_ERROR);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
