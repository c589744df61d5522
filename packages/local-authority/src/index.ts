// A stand-in for the GCE/Cloud Run metadata server's identity endpoint, for local runs and
// tests only (never deployed): it mints RS256 ID tokens from a key generated at start, for one
// identity per listener, as google-auth-library asks for them through GCE_METADATA_HOST, and
// publishes its public keys (JWKS) so verifiers check the tokens as they check Google's.
//
// google-auth-library's metadata client speaks to it exactly as to the real one:
//   GET /computeMetadata/v1/instance                                   (is a metadata server there?)
//   GET /computeMetadata/v1/instance/service-accounts/default/identity?format=full&audience=…
// Every request must carry `Metadata-Flavor: Google` (else 403, as the real server does), and
// every answer carries `Metadata-Flavor: Google` (the client refuses answers without it).
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";

export interface AuthorityOptions {
  /** Identity name (e.g. a service name) → the service account email its tokens carry. */
  identities: Record<string, string>;
  /** Token lifetime; Google's ID tokens live one hour. */
  tokenLifetimeSeconds?: number;
  host?: string;
}

export interface LocalTokenAuthority {
  /** The `iss` of every token, and where the JWKS is served (`${issuer}/jwks`). */
  issuer: string;
  jwksUrl: string;
  /** Identity name → `host:port` to put in that identity's GCE_METADATA_HOST. */
  metadataHosts: Record<string, string>;
  /** Tokens minted so far, by `${email} ${audience}`. */
  mintedTokens: Map<string, number>;
  /**
   * Signs any claims with the authority's current key: for tests of what a verifier must
   * refuse (odd lifetimes, wrong issuers). `kid` overrides the key id in the header.
   */
  sign(claims: Record<string, unknown>, header?: { kid?: string }): Promise<string>;
  /** Starts signing with a new key (published next to the old one), as key rotation does. */
  rotateKey(): Promise<void>;
  /** How many times the JWKS was fetched. */
  jwksFetches(): number;
  close(): Promise<void>;
}

const metadataFlavor = { "Metadata-Flavor": "Google" };

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function reply(response: ServerResponse, status: number, body: string, type = "text/plain") {
  response.writeHead(status, { ...metadataFlavor, "Content-Type": type });
  response.end(body);
}

export async function startLocalTokenAuthority(
  options: AuthorityOptions,
): Promise<LocalTokenAuthority> {
  const host = options.host ?? "127.0.0.1";
  const lifetime = options.tokenLifetimeSeconds ?? 3600;
  const published: JWK[] = [];
  let signing: {
    kid: string;
    privateKey: Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];
  };
  const newKey = async () => {
    const { privateKey, publicKey } = await generateKeyPair("RS256");
    const kid = randomUUID();
    published.push({ ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" });
    signing = { kid, privateKey };
  };
  await newKey();
  const mintedTokens = new Map<string, number>();
  const servers: Server[] = [];
  let jwksFetches = 0;

  const keysServer = createServer((request, response) => {
    if (request.method === "GET" && request.url === "/jwks") {
      jwksFetches += 1;
      reply(response, 200, JSON.stringify({ keys: published }), "application/json");
    } else reply(response, 404, "not found");
  });
  servers.push(keysServer);
  const issuer = `http://${host}:${await listen(keysServer, host)}`;

  async function mint(email: string, audience: string): Promise<string> {
    const key = `${email} ${audience}`;
    mintedTokens.set(key, (mintedTokens.get(key) ?? 0) + 1);
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ email, email_verified: true, azp: email })
      .setProtectedHeader({ alg: "RS256", kid: signing.kid, typ: "JWT" })
      .setIssuer(issuer)
      .setSubject(email)
      .setAudience(audience)
      .setIssuedAt(now)
      .setExpirationTime(now + lifetime)
      .sign(signing.privateKey);
  }

  function metadataHandler(email: string) {
    return (request: IncomingMessage, response: ServerResponse) => {
      if (request.headers["metadata-flavor"] !== "Google") {
        reply(response, 403, "Missing required header: Metadata-Flavor: Google");
        return;
      }
      const url = new URL(request.url ?? "/", "http://metadata");
      if (
        url.pathname === "/computeMetadata/v1/instance" ||
        url.pathname === "/computeMetadata/v1/instance/"
      ) {
        reply(response, 200, "attributes/\nservice-accounts/\n");
      } else if (url.pathname === "/computeMetadata/v1/instance/service-accounts/default/email") {
        reply(response, 200, email);
      } else if (
        url.pathname === "/computeMetadata/v1/instance/service-accounts/default/identity"
      ) {
        const audience = url.searchParams.get("audience");
        if (!audience) {
          reply(response, 400, "non-empty audience parameter required");
          return;
        }
        mint(email, audience).then(
          (token) => reply(response, 200, token),
          (error: Error) => reply(response, 500, error.message),
        );
      } else reply(response, 404, "not found");
    };
  }

  const metadataHosts: Record<string, string> = {};
  for (const [name, email] of Object.entries(options.identities)) {
    const server = createServer(metadataHandler(email));
    servers.push(server);
    metadataHosts[name] = `${host}:${await listen(server, host)}`;
  }

  return {
    issuer,
    jwksUrl: `${issuer}/jwks`,
    metadataHosts,
    mintedTokens,
    sign: (claims, header) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "RS256", kid: header?.kid ?? signing.kid, typ: "JWT" })
        .sign(signing.privateKey),
    rotateKey: newKey,
    jwksFetches: () => jwksFetches,
    close: async () => {
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((resolve) => {
              server.closeAllConnections();
              server.close(() => resolve());
            }),
        ),
      );
    },
  };
}
