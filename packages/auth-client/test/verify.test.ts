// Every way a token can be wrong is refused, with a message that names the check and never
// the token; a good token costs one signature check however often it comes.
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "@cloudrun-grpc/local-authority";
import { SignJWT } from "jose";
import { IdTokenVerifier, TokenRejected } from "../src/verify.js";

const email = "gateway-svc@local-project.iam.gserviceaccount.com";
const audience = "http://127.0.0.1:50052";

describe("IdTokenVerifier", () => {
  let authority: LocalTokenAuthority;
  let verifier: IdTokenVerifier;
  const now = () => Math.floor(Date.now() / 1000);
  /** Claims of a good token (each one distinct); each case changes one thing. */
  const good = () => ({
    jti: randomUUID(),
    iss: authority.issuer,
    aud: audience,
    email,
    email_verified: true,
    sub: email,
    iat: now(),
    exp: now() + 3600,
  });

  before(async () => {
    authority = await startLocalTokenAuthority({ identities: { gateway: email } });
    verifier = new IdTokenVerifier({
      audiences: [audience],
      issuers: { [authority.issuer]: authority.jwksUrl },
      keyRefetchCooldownMs: 0,
    });
  });
  after(async () => {
    await authority?.close();
  });

  async function rejected(token: string, reason: RegExp) {
    await assert.rejects(verifier.verify(token), (error: unknown) => {
      assert.ok(error instanceof TokenRejected, `a TokenRejected, got ${String(error)}`);
      assert.match(error.message, reason);
      assert.ok(!error.message.includes(token.slice(0, 20)), "the message never echoes the token");
      return true;
    });
  }

  test("a good token gives the caller's email and expiry", async () => {
    const claims = good();
    const caller = await verifier.verify(await authority.sign(claims));
    assert.deepEqual(caller, { email, expiresAt: claims.exp * 1000 });
  });

  test("the same token again costs no signature check", async () => {
    const token = await authority.sign(good());
    const before = verifier.signatureChecks;
    for (let index = 0; index < 1000; index += 1) await verifier.verify(token);
    assert.equal(verifier.signatureChecks - before, 1);
  });

  test("garbage, access tokens and oversized tokens are refused before any crypto", async () => {
    await rejected("garbage", /not a JWT/);
    await rejected("ya29.a0AfH6SMB-not-an-id-token", /not a JWT/);
    await rejected("a.b.c", /header is malformed/);
    await rejected(`${"x".repeat(17 * 1024)}.y.z`, /longer than 16384 bytes/);
  });

  test("a token whose signature Cloud Run removed is refused, saying so", async () => {
    const [header, payload] = (await authority.sign(good())).split(".");
    await rejected(
      `${header}.${payload}.SIGNATURE_REMOVED_BY_GOOGLE`,
      /signature was removed by Cloud Run's front end/,
    );
  });

  test("audiences are compared exactly", async () => {
    await rejected(
      await authority.sign({ ...good(), aud: "http://127.0.0.1:9999" }),
      /audience is not this service/,
    );
    await rejected(
      await authority.sign({ ...good(), aud: `${audience}/` }),
      /audience is not this service/,
    );
    await rejected(
      await authority.sign({ ...good(), aud: audience.replace("http:", "https:") }),
      /audience/,
    );
  });

  test("aud must be this service alone: an array naming another service too is refused", async () => {
    // Minted here with jose and a key of our own, which a verifier of its own trusts: the
    // attack needs no help from a token authority (which would never mint such a token).
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const jwk = { ...publicKey.export({ format: "jwk" }), kid: "attacker-test", alg: "RS256" };
    const issuer = "https://issuer.test";
    const keys = createServer((_request, response) => {
      response.setHeader("content-type", "application/json");
      response.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => keys.listen(0, "127.0.0.1", resolve));
    try {
      const trusting = new IdTokenVerifier({
        audiences: [audience, "https://route-xyz.a.run.app"],
        issuers: { [issuer]: `http://127.0.0.1:${(keys.address() as AddressInfo).port}/jwks` },
      });
      const mint = (aud: unknown) =>
        new SignJWT({ ...good(), iss: issuer, aud } as never)
          .setProtectedHeader({ alg: "RS256", kid: "attacker-test" })
          .sign(privateKey);
      for (const aud of [
        [audience, "https://stats-xyz.a.run.app"],
        ["https://stats-xyz.a.run.app", audience],
        // Both of this service's own audiences at once: still not one audience.
        [audience, "https://route-xyz.a.run.app"],
        [],
      ]) {
        await assert.rejects(trusting.verify(await mint(aud)), (error: unknown) => {
          assert.ok(error instanceof TokenRejected, String(error));
          assert.match(error.message, /audience is not this service/, JSON.stringify(aud));
          return true;
        });
      }
      // One string, or a one-element array of it, is this service's.
      assert.equal((await trusting.verify(await mint(audience))).email, email);
      assert.equal((await trusting.verify(await mint([audience]))).email, email);
      assert.equal(
        (await trusting.verify(await mint(["https://route-xyz.a.run.app"]))).email,
        email,
      );
    } finally {
      await new Promise((resolve) => keys.close(resolve));
    }
  });

  test("expired, not yet valid, issued in the future, no exp, too long a life: refused", async () => {
    await rejected(
      await authority.sign({ ...good(), iat: now() - 7200, exp: now() - 3600 }),
      /expired/,
    );
    await rejected(await authority.sign({ ...good(), nbf: now() + 600 }), /not valid yet/);
    await rejected(
      await authority.sign({ ...good(), iat: now() + 600, exp: now() + 4200 }),
      /issue time/,
    );
    const { exp: _exp, ...noExp } = good();
    await rejected(await authority.sign(noExp), /"exp"/);
    await rejected(
      await authority.sign({ ...good(), exp: now() + 25 * 3600 }),
      /lifetime is over 86400 s/,
    );
  });

  test("wrong issuer, no email, unverified email: refused", async () => {
    await rejected(
      await authority.sign({ ...good(), iss: "https://accounts.google.com" }),
      /issuer is not allowed/,
    );
    const { email: _email, ...noEmail } = good();
    await rejected(await authority.sign(noEmail), /no email claim/);
    await rejected(
      await authority.sign({ ...good(), email_verified: false }),
      /email is not verified/,
    );
  });

  test("forged tokens are refused: other key, tampered payload, alg none, HS256 with the public key", async () => {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const currentKid = JSON.parse(
      Buffer.from((await authority.sign(good())).split(".")[0] as string, "base64url").toString(),
    ).kid;
    const otherKey = await new SignJWT(good())
      .setProtectedHeader({ alg: "RS256", kid: currentKid })
      .sign(privateKey);
    await rejected(otherKey, /signature is invalid/);

    const [header, , signature] = (await authority.sign(good())).split(".");
    const tampered = Buffer.from(
      JSON.stringify({ ...good(), email: "admin@example.com" }),
    ).toString("base64url");
    await rejected(`${header}.${tampered}.${signature}`, /signature is invalid/);

    const none = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url");
    await rejected(
      `${none}.${Buffer.from(JSON.stringify(good())).toString("base64url")}.`,
      /algorithm "none" is not RS256/,
    );

    const jwks = (await (await fetch(authority.jwksUrl)).json()) as { keys: object[] };
    const publicPem = createPublicKey({ key: jwks.keys[0] as never, format: "jwk" }).export({
      type: "spki",
      format: "pem",
    });
    const hs256 = await new SignJWT(good())
      .setProtectedHeader({ alg: "HS256" })
      .sign(new TextEncoder().encode(String(publicPem)));
    await rejected(hs256, /algorithm "HS256" is not RS256/);
  });

  test("an unknown key id is looked up again (rotation works), and refused if still unknown", async () => {
    await authority.rotateKey();
    const fetchesBefore = authority.jwksFetches();
    assert.equal((await verifier.verify(await authority.sign(good()))).email, email);
    assert.equal(authority.jwksFetches(), fetchesBefore + 1, "the key set was fetched again once");
    await rejected(await authority.sign(good(), { kid: "no-such-key" }), /key id is unknown/);
  });

  test("made-up key ids cannot make the verifier hammer the issuer: one refetch per cooldown", async () => {
    const patient = new IdTokenVerifier({
      audiences: [audience],
      issuers: { [authority.issuer]: authority.jwksUrl },
      keyRefetchCooldownMs: 60_000,
    });
    assert.equal((await patient.verify(await authority.sign(good()))).email, email);
    const fetches = authority.jwksFetches();
    for (let index = 0; index < 50; index += 1) {
      await assert.rejects(
        patient.verify(await authority.sign(good(), { kid: `made-up-${index}` })),
        /key id is unknown/,
      );
    }
    assert.ok(
      authority.jwksFetches() - fetches <= 1,
      `${authority.jwksFetches() - fetches} fetches`,
    );
  });

  test("when the issuer's keys cannot be fetched, every token is refused (fail closed)", async () => {
    const dead = createServer((_request, response) => response.destroy());
    await new Promise<void>((resolve) => dead.listen(0, "127.0.0.1", resolve));
    const port = (dead.address() as AddressInfo).port;
    const closedVerifier = new IdTokenVerifier({
      audiences: [audience],
      issuers: { [authority.issuer]: `http://127.0.0.1:${port}/jwks` },
    });
    await assert.rejects(
      closedVerifier.verify(await authority.sign(good())),
      /issuer keys are unreachable/,
    );
    await new Promise((resolve) => dead.close(resolve));
  });

  test("a failed key refresh is logged as a warning, at most once per interval", async () => {
    let answer: "keys" | "error" = "keys";
    const flaky = createServer(async (_request, response) => {
      if (answer === "error") {
        response.statusCode = 503;
        response.end();
        return;
      }
      response.setHeader("content-type", "application/json");
      response.end(await (await fetch(authority.jwksUrl)).text());
    });
    await new Promise<void>((resolve) => flaky.listen(0, "127.0.0.1", resolve));
    const warnings: { details: Record<string, unknown>; message: string }[] = [];
    const logged = new IdTokenVerifier({
      audiences: [audience],
      issuers: { [authority.issuer]: `http://127.0.0.1:${(flaky.address() as AddressInfo).port}` },
      keyRefetchCooldownMs: 0,
      keyErrorLogIntervalMs: 60_000,
      logger: { warn: (details, message) => warnings.push({ details: { ...details }, message }) },
    });
    try {
      assert.equal((await logged.verify(await authority.sign(good()))).email, email);
      assert.equal(warnings.length, 0, "a good fetch logs nothing");
      answer = "error";
      // Unknown key ids make the verifier refresh; every refresh fails.
      for (let index = 0; index < 5; index += 1) {
        await assert.rejects(
          logged.verify(await authority.sign(good(), { kid: `unknown-${index}` })),
          /key id is unknown/,
        );
      }
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      const [warning] = warnings;
      assert.match(warning?.message ?? "", /could not be refreshed: keeping the keys held/);
      assert.equal(warning?.details.reason, "HTTP 503");
      assert.equal(warning?.details.issuer, authority.issuer);
      // Tokens signed with the keys held still pass.
      assert.equal((await logged.verify(await authority.sign(good()))).email, email);
    } finally {
      await new Promise((resolve) => flaky.close(resolve));
    }
  });
});
