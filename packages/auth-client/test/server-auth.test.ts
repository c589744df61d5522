// The server-side check through a real grpc-js server and client on loopback.
import assert from "node:assert/strict";
import { type AddressInfo, createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "../src/local-authority.js";
import { serverAuthInterceptor, verifiedCaller, verifiedCallerKey } from "../src/server-auth.js";
import { IdTokenVerifier } from "../src/verify.js";

const gateway = "gateway-svc@local-project.iam.gserviceaccount.com";
const stranger = "stranger@local-project.iam.gserviceaccount.com";

function unaryMethod(path: string): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: (value) => value,
    requestDeserialize: (bytes) => bytes,
    responseSerialize: (value) => value,
    responseDeserialize: (bytes) => bytes,
  };
}
// A protected method that answers with the caller the handler sees, and a health look-alike.
const echo: grpc.ServiceDefinition = { Echo: unaryMethod("/test.Echo/Echo") };
const health: grpc.ServiceDefinition = { Check: unaryMethod("/grpc.health.v1.Health/Check") };

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

describe("serverAuthInterceptor", () => {
  let authority: LocalTokenAuthority;
  let server: grpc.Server;
  let target: string;
  let audience: string;
  let handled = 0;

  before(async () => {
    authority = await startLocalTokenAuthority({ identities: { gateway, stranger } });
    // The verifier must know the server's own URL (its audience) before the server starts.
    const port = await freePort();
    target = `127.0.0.1:${port}`;
    audience = `http://${target}`;
    server = new grpc.Server({
      interceptors: [
        serverAuthInterceptor({
          verifier: new IdTokenVerifier({
            audiences: [audience],
            issuers: { [authority.issuer]: authority.jwksUrl },
          }),
          allowedInvokers: [gateway],
        }),
      ],
    });
    const answer = (
      call: grpc.ServerUnaryCall<Buffer, Buffer>,
      callback: grpc.sendUnaryData<Buffer>,
    ) => {
      handled += 1;
      callback(null, Buffer.from(verifiedCaller(call.metadata)));
    };
    server.addService(echo, { Echo: answer });
    server.addService(health, { Check: answer });
    await new Promise<number>((resolve, reject) =>
      server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
  });
  after(async () => {
    server?.forceShutdown();
    await authority?.close();
  });

  async function call(definition: grpc.ServiceDefinition, metadata: grpc.Metadata) {
    const Client = grpc.makeGenericClientConstructor(definition, "Test");
    const client = new Client(target, grpc.credentials.createInsecure());
    const method = Object.keys(definition)[0] as string;
    try {
      return await new Promise<{ caller?: string; error?: grpc.ServiceError }>((resolve) =>
        (client as unknown as Record<string, (...args: unknown[]) => void>)[method]?.(
          Buffer.alloc(0),
          metadata,
          (error: grpc.ServiceError | null, response?: Buffer) =>
            resolve(error ? { error } : { caller: String(response) }),
        ),
      );
    } finally {
      client.close();
    }
  }
  const bearer = (token: string) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    return metadata;
  };
  const tokenFor = (email: string, aud = audience) => {
    const now = Math.floor(Date.now() / 1000);
    return authority.sign({
      iss: authority.issuer,
      aud,
      email,
      email_verified: true,
      iat: now,
      exp: now + 3600,
    });
  };

  test("an allowed invoker's token passes, and the handler sees who called", async () => {
    const result = await call(echo, bearer(await tokenFor(gateway)));
    assert.equal(result.error, undefined);
    assert.equal(result.caller, gateway);
  });

  test("a client cannot claim an identity through the caller metadata key", async () => {
    const metadata = bearer(await tokenFor(gateway));
    metadata.set(verifiedCallerKey, "admin@example.com");
    assert.equal((await call(echo, metadata)).caller, gateway);
  });

  test("no token, not Bearer, a bad token: UNAUTHENTICATED saying why, no handler run", async () => {
    const before = handled;
    const cases: [grpc.Metadata, RegExp][] = [
      [new grpc.Metadata(), /^missing authorization: Bearer <ID token>$/],
      [
        (() => {
          const m = new grpc.Metadata();
          m.set("authorization", "Basic dXNlcjpwYXNz");
          return m;
        })(),
        /not a Bearer token/,
      ],
      [bearer("garbage"), /^invalid ID token: token is not a JWT/],
      [
        bearer(await tokenFor(gateway, "http://other.example")),
        /^invalid ID token: token audience is not this service$/,
      ],
    ];
    for (const [metadata, details] of cases) {
      const { error } = await call(echo, metadata);
      assert.equal(error?.code, grpc.status.UNAUTHENTICATED);
      assert.match(error?.details ?? "", details);
    }
    assert.equal(handled, before);
  });

  test("a valid token from an identity not allowed: PERMISSION_DENIED naming it and the service", async () => {
    const { error } = await call(echo, bearer(await tokenFor(stranger)));
    assert.equal(error?.code, grpc.status.PERMISSION_DENIED);
    assert.equal(error?.details, `${stranger} may not call test.Echo`);
  });

  test("health checks need no token", async () => {
    const result = await call(health, new grpc.Metadata());
    assert.equal(result.error, undefined);
    assert.equal(result.caller, "");
  });
});
