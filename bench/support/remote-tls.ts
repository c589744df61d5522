// The TLS check `pnpm bench --gateway https://…` makes once before h2load runs. h2load does not
// verify the server's certificate: it makes its context with SSL_CTX_new(TLS_client_method())
// and never calls SSL_CTX_set_verify or loads a CA (nghttp2 src/h2load.cc, v1.52.0 as
// Debian 12 ships it and v1.70), so OpenSSL's client default SSL_VERIFY_NONE applies: "the
// handshake will be continued regardless of the verification result" (OpenSSL's
// SSL_CTX_set_verify(3)). A wrong host, or a man in the middle, would be benched without a
// word; this check is what tells.
import { readFileSync } from "node:fs";
import { connect, getCACertificates, type TLSSocket } from "node:tls";

export const h2loadTlsNote =
  "h2load does not verify certificates (nghttp2 src/h2load.cc sets no verification): the bench verified it once itself, before the run";

export interface Roots {
  /** PEM certificates to trust. */
  ca: string[];
  /** Where they come from, for the header line. */
  description: string;
}

/**
 * The roots to verify against: GRPC_DEFAULT_SSL_ROOTS_FILE_PATH's file alone when it is set (it
 * replaces the roots for grpc-js too, tls-helpers.ts: `rootCerts ?? getDefaultRootsData()`;
 * `pnpm start --cloud-run` points it at its front ends' CA), else Node's bundled roots and the
 * system's.
 */
export function rootsFromEnvironment(): Roots {
  const file = process.env.GRPC_DEFAULT_SSL_ROOTS_FILE_PATH;
  if (file) return { ca: [readFileSync(file, "utf8")], description: file };
  return {
    ca: [...getCACertificates("default"), ...getCACertificates("system")],
    description: "Node's bundled roots and the system's",
  };
}

export interface VerifiedServer {
  /** The certificate's subject and issuer common names, and its end of validity. */
  subject: string;
  issuer: string;
  validTo: string;
  alpn: string;
}

/** Connects once with verification on and ALPN h2; throws an Error that says what to do. */
export async function verifyServer(origin: string, roots: Roots): Promise<VerifiedServer> {
  const url = new URL(origin);
  const port = Number(url.port || 443);
  const socket: TLSSocket = connect({
    host: url.hostname,
    port,
    servername: url.hostname,
    ca: roots.ca,
    ALPNProtocols: ["h2"],
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no TLS handshake within 10 s")), 10_000);
      socket.once("secureConnect", () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  } catch (error) {
    socket.destroy();
    const code = (error as NodeJS.ErrnoException).code ?? "";
    const reason = `${code ? `${code}: ` : ""}${(error as Error).message}`;
    if (/CERT|SELF_SIGNED|UNABLE_TO|ALTNAME/.test(code)) {
      throw new Error(
        `the certificate of ${url.host} does not verify against ${roots.description} (${reason}): a wrong host, or for the local Cloud Run front end set GRPC_DEFAULT_SSL_ROOTS_FILE_PATH to the CA file \`pnpm start --cloud-run\` prints`,
      );
    }
    throw new Error(`cannot reach ${url.host} over TLS (${reason}): is the URL right?`);
  }
  const certificate = socket.getPeerCertificate();
  const alpn = socket.alpnProtocol || "none";
  socket.destroy();
  if (alpn !== "h2") {
    throw new Error(`${url.host} did not agree to HTTP/2 (ALPN: ${alpn}): gRPC needs h2`);
  }
  return {
    subject: String(certificate.subject?.CN ?? "?"),
    issuer: String(certificate.issuer?.CN ?? certificate.issuer?.O ?? "?"),
    validTo: certificate.valid_to,
    alpn,
  };
}
