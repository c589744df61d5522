// The edge's TLS: a CA made at start (its certificate is what clients and the emulated services
// trust, as they trust Google's roots on Cloud Run) and one server certificate for 127.0.0.1
// and localhost, where every front end listens. Keys come from node:crypto (native, fast);
// node-forge does the X.509 work that node:crypto cannot (it parses certificates, it does not
// issue them).
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import forge from "node-forge";

export interface EdgeCertificates {
  /** PEM of the CA: what a client must trust. */
  caPem: string;
  /** The same, as a file (for GRPC_DEFAULT_SSL_ROOTS_FILE_PATH); removed by `dispose`. */
  caFile: string;
  keyPem: string;
  certPem: string;
  dispose(): void;
}

function keyPair() {
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

/**
 * A random serial (unique per run, so a client never mixes two runs' certificates up) whose DER
 * INTEGER is minimal and positive: first byte 0x01–0x7f. A leading zero byte would be padding
 * that OpenSSL 3 refuses ("asn1 encoding routines::illegal padding"), and every client then
 * fails to verify the chain; `0` + random hex did that for about 1 run in 150.
 */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x01;
  return bytes.toString("hex");
}

function certificate(commonName: string, publicKey: forge.pki.PublicKey) {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 7 * 24 * 3600_000);
  cert.setSubject([{ name: "commonName", value: commonName }]);
  return cert;
}

export function makeEdgeCertificates(): EdgeCertificates {
  const caKeys = keyPair();
  const ca = certificate("cloud-run-local CA", caKeys.publicKey);
  ca.setIssuer(ca.subject.attributes);
  ca.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
  ]);
  ca.sign(caKeys.privateKey, forge.md.sha256.create());

  const serverKeys = keyPair();
  const server = certificate("127.0.0.1", serverKeys.publicKey);
  server.setIssuer(ca.subject.attributes);
  server.setExtensions([
    { name: "basicConstraints", cA: false },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      altNames: [
        { type: 7, ip: "127.0.0.1" },
        { type: 2, value: "localhost" },
      ],
    },
  ]);
  server.sign(caKeys.privateKey, forge.md.sha256.create());

  const caPem = forge.pki.certificateToPem(ca);
  const dir = mkdtempSync(join(tmpdir(), "cloud-run-local-ca-"));
  const caFile = join(dir, "ca.pem");
  writeFileSync(caFile, caPem);
  return {
    caPem,
    caFile,
    keyPem: forge.pki.privateKeyToPem(serverKeys.privateKey),
    certPem: forge.pki.certificateToPem(server),
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}
