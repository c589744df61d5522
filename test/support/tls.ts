// A stand-in for Cloud Run's front end: terminates TLS (ALPN h2) with a certificate from a
// test CA generated at test time, and passes the HTTP/2 bytes on to a service's h2c port.
import { connect, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";

// The test CA and server certificate (localhost and 127.0.0.1) are the local Cloud Run front
// end's: one maker of certificates in the repository.
import type { EdgeCertificates } from "@cloudrun-grpc/cloud-run-local";

export { makeEdgeCertificates as makeTestCertificates } from "@cloudrun-grpc/cloud-run-local";
export type TestCertificates = EdgeCertificates;

export interface TlsProxy {
  port: number;
  /** The ALPN protocol of every TLS connection accepted so far. */
  negotiated: (string | false | null)[];
  close(): Promise<void>;
}

/** Listens on 127.0.0.1 (free port) and forwards each TLS connection to 127.0.0.1:backendPort. */
export async function startTlsProxy(
  certs: TestCertificates,
  backendPort: number,
): Promise<TlsProxy> {
  const negotiated: (string | false | null)[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createTlsServer(
    { key: certs.keyPem, cert: certs.certPem, ALPNProtocols: ["h2"] },
    (client: TLSSocket) => {
      negotiated.push(client.alpnProtocol);
      const backend = connect(backendPort, "127.0.0.1");
      for (const socket of [client, backend]) {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
        socket.on("error", () => {
          client.destroy();
          backend.destroy();
        });
      }
      client.pipe(backend).pipe(client);
    },
  );
  // Handshake failures (an untrusting client) are expected in tests; they close the socket.
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("TLS proxy has no port");
  return {
    port: address.port,
    negotiated,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
