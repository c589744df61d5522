// A stand-in for Cloud Run's front end: terminates TLS (ALPN h2) with a certificate from a
// test CA generated at test time, and passes the HTTP/2 bytes on to a service's h2c port.
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import forge from "node-forge";

export interface TestCertificates {
  /** PEM of the CA that signed the server certificate (what a client must trust). */
  caPem: string;
  caFile: string;
  keyPem: string;
  certPem: string;
}

/** RSA keys from node:crypto (fast, native), handed to forge for the certificate work. */
function rsaKeys() {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    privateKeyEncoding: { type: "pkcs1", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  return {
    privateKey: forge.pki.privateKeyFromPem(privateKey),
    publicKey: forge.pki.publicKeyFromPem(publicKey),
  };
}

function newCertificate(subject: string, publicKey: forge.pki.PublicKey, serial: string) {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = serial;
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 24 * 3600_000);
  cert.setSubject([{ name: "commonName", value: subject }]);
  return cert;
}

/** A throwaway CA and a server certificate for localhost / 127.0.0.1 signed by it. */
export function makeTestCertificates(): TestCertificates {
  const caKeys = rsaKeys();
  const ca = newCertificate("cloudrun-grpc test CA", caKeys.publicKey, "01");
  ca.setIssuer(ca.subject.attributes);
  ca.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
  ]);
  ca.sign(caKeys.privateKey, forge.md.sha256.create());

  const serverKeys = rsaKeys();
  const server = newCertificate("localhost", serverKeys.publicKey, "02");
  server.setIssuer(ca.subject.attributes);
  server.setExtensions([
    { name: "basicConstraints", cA: false },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      altNames: [
        { type: 2, value: "localhost" },
        { type: 7, ip: "127.0.0.1" },
      ],
    },
  ]);
  server.sign(caKeys.privateKey, forge.md.sha256.create());

  const caPem = forge.pki.certificateToPem(ca);
  const caFile = join(mkdtempSync(join(tmpdir(), "test-ca-")), "ca.pem");
  writeFileSync(caFile, caPem);
  return {
    caPem,
    caFile,
    keyPem: forge.pki.privateKeyToPem(serverKeys.privateKey),
    certPem: forge.pki.certificateToPem(server),
  };
}

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
