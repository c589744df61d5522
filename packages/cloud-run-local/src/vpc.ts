// Ingress "internal" locally. On Cloud Run an internal service takes requests from the VPC of
// its project, and calls from other Cloud Run services count as internal only when they leave
// through the VPC (Direct VPC egress) (https://cloud.google.com/run/docs/securing/ingress).
// Here the VPC is an HTTP CONNECT proxy: the emulated services whose Terraform sets vpc_egress
// get grpc_proxy pointing at it (grpc-js sends every channel through the proxy named there,
// src/http_proxy.ts), and a front end counts a connection as internal when it comes from one of
// the proxy's own sockets, known by its source port. Nothing else on the machine holds those
// ports, so a caller from outside (a test, grpcurl, the CLI) is external, whatever it sends.
import { createServer, type Server } from "node:http";
import { type AddressInfo, connect, type Socket } from "node:net";

export class VpcEgress {
  private readonly internalPorts = new Set<number>();
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  port = 0;

  /** `frontEnds`: the ports of the front ends, whose connections through here are internal. */
  constructor(private readonly frontEnds: () => ReadonlySet<number>) {}

  /** Is the connection from 127.0.0.1:`remotePort` one of this VPC's? */
  isInternal(remotePort: number | undefined): boolean {
    return remotePort !== undefined && this.internalPorts.has(remotePort);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const server = createServer((_, response) => {
      response.writeHead(405, { allow: "CONNECT" }).end("only CONNECT\n");
    });
    server.on("connect", (request, client: Socket, head: Buffer) => {
      const target = /^(127\.0\.0\.1|localhost|\[::1\]):(\d+)$/.exec(request.url ?? "");
      if (!target) {
        client.end("HTTP/1.1 403 Forbidden\r\n\r\n");
        return;
      }
      const port = Number(target[2]);
      const upstream = connect(port, "127.0.0.1");
      this.track(client);
      this.track(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("error", drop);
      upstream.on("error", () => {
        if (!upstream.localPort) client.end("HTTP/1.1 502 Bad Gateway\r\n\r\n");
        drop();
      });
      upstream.once("connect", () => {
        const localPort = upstream.localPort as number;
        if (this.frontEnds().has(port)) {
          this.internalPorts.add(localPort);
          upstream.once("close", () => this.internalPorts.delete(localPort));
        }
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (head.length > 0) upstream.write(head);
        client.pipe(upstream).pipe(client);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
