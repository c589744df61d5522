// The local token authority answers google-auth-library exactly as the metadata server would,
// and its tokens verify against its JWKS.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { createRemoteJWKSet, decodeJwt, jwtVerify } from "jose";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "../src/index.js";

const identities = {
  gateway: "gateway@local-project.iam.gserviceaccount.com",
  route: "route@local-project.iam.gserviceaccount.com",
};

/**
 * Asks google-auth-library, in a fresh process as a service would, for an ID token. (Not
 * spawnSync: the authority answers from this process's event loop.)
 */
async function tokenFromGoogleAuthLibrary(metadataHost: string, audience: string): Promise<string> {
  const script = `
    import { GoogleAuth } from "google-auth-library";
    const client = await new GoogleAuth().getIdTokenClient(${JSON.stringify(audience)});
    const headers = await client.getRequestHeaders();
    process.stdout.write(headers.get("authorization") ?? "");
  `;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--input-type=module", "-e", script],
    {
      cwd: new URL("..", import.meta.url),
      env: { PATH: process.env.PATH ?? "", GCE_METADATA_HOST: metadataHost },
      encoding: "utf8",
      timeout: 20_000,
    },
  );
  const match = /^Bearer (.+)$/.exec(stdout);
  assert.ok(match, `an authorization header, got ${JSON.stringify(stdout)}`);
  return match[1] as string;
}

describe("local token authority", () => {
  let authority: LocalTokenAuthority;
  before(async () => {
    authority = await startLocalTokenAuthority({ identities });
  });
  after(async () => {
    await authority?.close();
  });

  test("google-auth-library gets an RS256 ID token for its own identity and the audience asked", async () => {
    const audience = "http://127.0.0.1:50052";
    const token = await tokenFromGoogleAuthLibrary(
      authority.metadataHosts.gateway as string,
      audience,
    );
    const { payload, protectedHeader } = await jwtVerify(
      token,
      createRemoteJWKSet(new URL(authority.jwksUrl)),
      {
        algorithms: ["RS256"],
        issuer: authority.issuer,
        audience,
      },
    );
    assert.equal(protectedHeader.alg, "RS256");
    assert.equal(payload.email, identities.gateway);
    assert.equal(payload.email_verified, true);
    assert.ok(typeof payload.exp === "number" && typeof payload.iat === "number");
    assert.equal(payload.exp - payload.iat, 3600);
    assert.equal(authority.mintedTokens.get(`${identities.gateway} ${audience}`), 1);

    const other = await tokenFromGoogleAuthLibrary(
      authority.metadataHosts.route as string,
      audience,
    );
    assert.equal(decodeJwt(other).email, identities.route);
  });

  test("requests without Metadata-Flavor: Google are refused, as the real server does", async () => {
    const base = `http://${authority.metadataHosts.gateway}/computeMetadata/v1/instance/service-accounts/default/identity?audience=x`;
    const refused = await fetch(base);
    assert.equal(refused.status, 403);
    const answered = await fetch(base, { headers: { "Metadata-Flavor": "Google" } });
    assert.equal(answered.status, 200);
    assert.equal(answered.headers.get("metadata-flavor"), "Google");
  });

  test("an identity request without audience is refused", async () => {
    const response = await fetch(
      `http://${authority.metadataHosts.gateway}/computeMetadata/v1/instance/service-accounts/default/identity`,
      { headers: { "Metadata-Flavor": "Google" } },
    );
    assert.equal(response.status, 400);
  });
});
