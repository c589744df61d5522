// Real tokens for services built in-process (a test that starts gateway, route and stats in
// one Node process through their factories). google-auth-library asks the metadata server
// named by GCE_METADATA_HOST, which is one per process, so every service here has the same
// identity, allowed everywhere and trusted to name end users. The auth rules between
// identities are tested across real processes (test/auth.test.ts, test/topology.test.ts).
import { type LocalTokenAuthority, startLocalTokenAuthority } from "@cloudrun-grpc/local-authority";
import * as grpc from "@grpc/grpc-js";

export const inProcessServiceEmail = "in-process@local-test.iam.gserviceaccount.com";

export interface InProcessAuth {
  authority: LocalTokenAuthority;
  /** The AUTH_* variables of a service served at `ownUrl` (its token audience). */
  env(ownUrl: string): Record<string, string>;
  /** Metadata with a fresh token of `email` (an end user by default) for `audience`. */
  bearer(audience: string, email?: string): Promise<grpc.Metadata>;
  close(): Promise<void>;
}

export async function startInProcessAuth(): Promise<InProcessAuth> {
  const authority = await startLocalTokenAuthority({
    identities: { service: inProcessServiceEmail },
  });
  const metadataHost = authority.metadataHosts.service;
  if (!metadataHost) throw new Error("the local token authority has no listener for 'service'");
  const before = process.env.GCE_METADATA_HOST;
  process.env.GCE_METADATA_HOST = metadataHost;
  return {
    authority,
    env: (ownUrl) => ({
      AUTH_AUDIENCES: ownUrl,
      AUTH_ISSUER: authority.issuer,
      AUTH_JWKS_URL: authority.jwksUrl,
      AUTH_ALLOWED_INVOKERS: inProcessServiceEmail,
      AUTH_END_USER_FROM: inProcessServiceEmail,
    }),
    async bearer(audience, email = "ana@example.com") {
      const now = Math.floor(Date.now() / 1000);
      const token = await authority.sign({
        iss: authority.issuer,
        aud: audience,
        email,
        email_verified: true,
        iat: now,
        exp: now + 3600,
      });
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${token}`);
      return metadata;
    },
    async close() {
      if (before === undefined) delete process.env.GCE_METADATA_HOST;
      else process.env.GCE_METADATA_HOST = before;
      await authority.close();
    },
  };
}
