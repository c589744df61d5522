// Outgoing tokens through the real google-auth-library path, minted by the local authority.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "@cloudrun-grpc/local-authority";
import * as grpc from "@grpc/grpc-js";
import { GoogleAuth } from "google-auth-library";
import { decodeJwt } from "jose";
import { idTokenInterceptor } from "../src/interceptors.js";
import { IdTokenSource, IdTokenSources } from "../src/tokens.js";

const email = "gateway-svc@local-project.iam.gserviceaccount.com";

// A one-method service that answers with the authorization header it received.
const echoService: grpc.ServiceDefinition = {
  Echo: {
    path: "/test.Echo/Echo",
    requestStream: false,
    responseStream: false,
    requestSerialize: (value: Buffer) => value,
    requestDeserialize: (bytes: Buffer) => bytes,
    responseSerialize: (value: Buffer) => value,
    responseDeserialize: (bytes: Buffer) => bytes,
  },
};

describe("ID tokens for outgoing calls", () => {
  let authority: LocalTokenAuthority;
  let server: grpc.Server;
  let port: number;
  before(async () => {
    authority = await startLocalTokenAuthority({
      identities: { gateway: email },
      tokenLifetimeSeconds: 60,
    });
    process.env.GCE_METADATA_HOST = authority.metadataHosts.gateway;
    server = new grpc.Server();
    server.addService(echoService, {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        callback(
          null,
          Buffer.from(
            `${call.metadata.get("authorization")[0] ?? ""}|${call.metadata.get("x-serverless-authorization")[0] ?? ""}`,
          ),
        ),
    });
    port = await new Promise((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
  });
  after(async () => {
    server?.forceShutdown();
    await authority?.close();
    delete process.env.GCE_METADATA_HOST;
  });

  test("concurrent first calls share one fetch; later calls use the cached token", async () => {
    const source = new IdTokenSource("http://127.0.0.1:1111", { auth: new GoogleAuth() });
    const first = await Promise.all(Array.from({ length: 50 }, () => source.token()));
    assert.equal(new Set(first).size, 1);
    for (let index = 0; index < 1000; index += 1) assert.equal(await source.token(), first[0]);
    assert.equal(authority.mintedTokens.get(`${email} http://127.0.0.1:1111`), 1);
    const claims = decodeJwt(first[0] as string);
    assert.equal(claims.aud, "http://127.0.0.1:1111");
    assert.equal(claims.email, email);
  });

  test("a token close to expiry is refreshed behind the calls", async () => {
    // 60 s tokens, refreshed when less than 59.5 s are left: the second call triggers it.
    const source = new IdTokenSource("http://127.0.0.1:2222", {
      auth: new GoogleAuth(),
      refreshBeforeExpiryMs: 59_500,
    });
    const first = await source.token();
    await new Promise((resolve) => setTimeout(resolve, 1100));
    assert.equal(await source.token(), first, "the still-valid token is used meanwhile");
    const minted = () => authority.mintedTokens.get(`${email} http://127.0.0.1:2222`);
    const giveUpAt = Date.now() + 5000;
    while (minted() !== 2 && Date.now() < giveUpAt) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(minted(), 2);
  });

  test("a fetch that hangs fails after its timeout, and the next call tries again", async () => {
    let attempts = 0;
    const source = new IdTokenSource("http://127.0.0.1:4444", {
      fetchTimeoutMs: 50,
      provider: async () => ({
        fetchIdToken: () => {
          attempts += 1;
          return new Promise<string>(() => {});
        },
      }),
    });
    await assert.rejects(source.token(), /no ID token within 50 ms/);
    await assert.rejects(
      source.token(),
      /no ID token within 50 ms/,
      "fails at once right after a failure",
    );
    assert.equal(attempts, 1);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    await assert.rejects(source.token(), /no ID token within 50 ms/);
    assert.equal(attempts, 2);
  });

  test("one source per audience", () => {
    const sources = new IdTokenSources({ auth: new GoogleAuth() });
    assert.equal(sources.forAudience("http://a"), sources.forAudience("http://a"));
    assert.notEqual(sources.forAudience("http://a"), sources.forAudience("http://b"));
  });

  test("the interceptor sends the token as Bearer in both auth headers, over h2c", async () => {
    const audience = `http://127.0.0.1:${port}`;
    const source = new IdTokenSource(audience, { auth: new GoogleAuth() });
    const Client = grpc.makeGenericClientConstructor(echoService, "Echo");
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      interceptors: [idTokenInterceptor(source)],
    }) as unknown as grpc.Client & {
      Echo: (request: Buffer, callback: grpc.requestCallback<Buffer>) => void;
    };
    const received = await new Promise<string>((resolve, reject) =>
      client.Echo(Buffer.alloc(0), (error, response) =>
        error ? reject(error) : resolve(String(response)),
      ),
    );
    client.close();
    const bearer = `Bearer ${await source.token()}`;
    assert.equal(
      received,
      `${bearer}|${bearer}`,
      "the token in Authorization and X-Serverless-Authorization",
    );
  });

  test("without credentials the call fails at once with UNAUTHENTICATED saying why", async () => {
    const source = new IdTokenSource("http://127.0.0.1:3333", {
      provider: async () => {
        throw new Error("Could not load the default credentials");
      },
    });
    const Client = grpc.makeGenericClientConstructor(echoService, "Echo");
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      interceptors: [idTokenInterceptor(source)],
    }) as unknown as grpc.Client & {
      Echo: (request: Buffer, callback: grpc.requestCallback<Buffer>) => void;
    };
    const error = await new Promise<grpc.ServiceError>((resolve, reject) =>
      client.Echo(Buffer.alloc(0), (failure) =>
        failure ? resolve(failure) : reject(new Error("the call succeeded")),
      ),
    );
    client.close();
    assert.equal(error.code, grpc.status.UNAUTHENTICATED);
    assert.equal(
      error.details,
      "no ID token for http://127.0.0.1:3333: Could not load the default credentials",
    );
  });
});

describe("the client interceptor while a token is on its way", () => {
  const never = { audience: "http://slow", token: () => new Promise<string>(() => {}) };
  const Client = grpc.makeGenericClientConstructor(echoService, "Echo");
  // Nothing listens there: the call must end before any connection matters.
  const client = new Client("127.0.0.1:9", grpc.credentials.createInsecure(), {
    interceptors: [idTokenInterceptor(never)],
  }) as unknown as grpc.Client & {
    Echo: (
      request: Buffer,
      options: grpc.CallOptions,
      callback: grpc.requestCallback<Buffer>,
    ) => grpc.ClientUnaryCall;
  };
  after(() => client.close());

  test("the deadline still ends the call, with DEADLINE_EXCEEDED", async () => {
    const error = await new Promise<grpc.ServiceError | null>((resolve) =>
      client.Echo(Buffer.alloc(0), { deadline: Date.now() + 100 }, (failure) => resolve(failure)),
    );
    assert.equal(error?.code, grpc.status.DEADLINE_EXCEEDED);
    assert.match(error?.details ?? "", /while getting an ID token for http:\/\/slow/);
  });

  test("a cancel still ends the call, with CANCELLED", async () => {
    let call: grpc.ClientUnaryCall | undefined;
    const error = await new Promise<grpc.ServiceError | null>((resolve) => {
      call = client.Echo(Buffer.alloc(0), {}, (failure) => resolve(failure));
      setTimeout(() => call?.cancel(), 20);
    });
    assert.equal(error?.code, grpc.status.CANCELLED);
  });
});
