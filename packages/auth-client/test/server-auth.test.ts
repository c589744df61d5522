// The server-side check through a real grpc-js server and client on loopback.
import assert from "node:assert/strict";
import { type AddressInfo, createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "@cloudrun-grpc/local-authority";
import * as grpc from "@grpc/grpc-js";
import {
  anonymousCaller,
  parseAllowedInvoker,
  serverAuthInterceptor,
  verifiedCaller,
  verifiedCallerKey,
} from "../src/server-auth.js";
import { IdTokenVerifier } from "../src/verify.js";

const gateway = "gateway-svc@local-project.iam.gserviceaccount.com";
const stranger = "stranger@local-project.iam.gserviceaccount.com";
// Granted one method only, as route is granted RecordEvents on stats.
const reader = "reader@local-project.iam.gserviceaccount.com";

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
const write: grpc.ServiceDefinition = { Write: unaryMethod("/test.Echo/Write") };
// Paths of grpc.* services (reflection, channelz), open to every allowed invoker.
const reflection: grpc.ServiceDefinition = {
  Info: unaryMethod("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
};
const channelzEcho: grpc.ServiceDefinition = {
  Echo: unaryMethod("/grpc.channelz.v1.Channelz/Echo"),
};

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
    authority = await startLocalTokenAuthority({ identities: { gateway, stranger, reader } });
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
          allowedInvokers: [gateway, { email: reader, methods: ["Echo"] }],
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
    server.addService(write, { Write: answer });
    server.addService(reflection, { Info: answer });
    server.addService(channelzEcho, { Echo: answer });
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

  test("an invoker granted some methods calls those and grpc.* services; any other method: PERMISSION_DENIED naming it and the method", async () => {
    const token = await tokenFor(reader);
    assert.equal((await call(echo, bearer(token))).caller, reader);
    assert.equal((await call(reflection, bearer(token))).caller, reader);
    assert.equal((await call(channelzEcho, bearer(token))).caller, reader);
    const before = handled;
    const denied = await call(write, bearer(token));
    assert.equal(denied.error?.code, grpc.status.PERMISSION_DENIED);
    assert.equal(denied.error?.details, `${reader} may not call test.Echo/Write`);
    assert.equal(handled, before);
    // An invoker allowed every method reaches them all.
    for (const definition of [echo, write, reflection, channelzEcho]) {
      assert.equal((await call(definition, bearer(await tokenFor(gateway)))).caller, gateway);
    }
    // grpc.* needs a token like any call.
    assert.equal(
      (await call(channelzEcho, new grpc.Metadata())).error?.code,
      grpc.status.UNAUTHENTICATED,
    );
  });

  test("a call without a token is refused even with optional auth off (the default)", async () => {
    const { error } = await call(echo, new grpc.Metadata());
    assert.equal(error?.code, grpc.status.UNAUTHENTICATED);
  });
});

describe("parseAllowedInvoker (AUTH_ALLOWED_INVOKERS entries)", () => {
  test("an email, or an email with the methods it may call", () => {
    assert.deepEqual(parseAllowedInvoker("a@p.iam.gserviceaccount.com"), {
      email: "a@p.iam.gserviceaccount.com",
    });
    assert.deepEqual(parseAllowedInvoker("a@p.iam=GetStats|WatchStats"), {
      email: "a@p.iam",
      methods: ["GetStats", "WatchStats"],
    });
  });

  test("anything else says what is wrong", () => {
    assert.match(
      String(parseAllowedInvoker("not-an-email")),
      /is not an email or email=Method1\|Method2/,
    );
    assert.match(String(parseAllowedInvoker("a@p=GetStats=x")), /is not an email/);
    assert.match(String(parseAllowedInvoker("a@p=")), /"" is not a method name/);
    assert.match(
      String(parseAllowedInvoker("a@p=getStats|/x")),
      /"getStats", "\/x" is not a method name/,
    );
  });
});

describe("serverAuthInterceptor with anonymous callers allowed (AUTH_MODE=optional)", () => {
  let authority: LocalTokenAuthority;
  let server: grpc.Server;
  let target: string;

  before(async () => {
    authority = await startLocalTokenAuthority({ identities: { gateway, stranger } });
    const port = await freePort();
    target = `127.0.0.1:${port}`;
    server = new grpc.Server({
      interceptors: [
        serverAuthInterceptor({
          verifier: new IdTokenVerifier({
            audiences: [`http://${target}`],
            issuers: { [authority.issuer]: authority.jwksUrl },
          }),
          allowedInvokers: [gateway],
          anonymous: true,
        }),
      ],
    });
    for (const definition of [echo, channelzEcho]) {
      server.addService(definition, {
        Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
          callback(null, Buffer.from(verifiedCaller(call.metadata))),
      });
    }
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

  async function echoAs(metadata: grpc.Metadata, definition = echo) {
    const Client = grpc.makeGenericClientConstructor(definition, "Test");
    const client = new Client(target, grpc.credentials.createInsecure());
    try {
      return await new Promise<{ caller?: string; error?: grpc.ServiceError }>((resolve) =>
        (client as unknown as Record<string, (...args: unknown[]) => void>).Echo?.(
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
  const withAuthorization = (value: string) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", value);
    return metadata;
  };
  const token = (email: string, aud = `http://${target}`) => {
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

  test("no token: served as the anonymous caller, who cannot be claimed", async () => {
    assert.deepEqual(await echoAs(new grpc.Metadata()), { caller: anonymousCaller });
    const claiming = new grpc.Metadata();
    claiming.set(verifiedCallerKey, gateway);
    assert.deepEqual(await echoAs(claiming), { caller: anonymousCaller });
  });

  test("no token: channelz stays closed (it names peers' and clients' addresses)", async () => {
    const anonymous = await echoAs(new grpc.Metadata(), channelzEcho);
    assert.equal(anonymous.error?.code, grpc.status.UNAUTHENTICATED);
    assert.match(String(anonymous.error?.details), /channelz needs an ID token/);
    const withToken = withAuthorization(`Bearer ${await token(gateway)}`);
    assert.deepEqual(await echoAs(withToken, channelzEcho), { caller: gateway });
  });

  test("a token that is present must verify; the allow-list still applies to it", async () => {
    assert.deepEqual(await echoAs(withAuthorization(`Bearer ${await token(gateway)}`)), {
      caller: gateway,
    });
    const cases: [grpc.Metadata, grpc.status, RegExp][] = [
      [withAuthorization("Bearer garbage"), grpc.status.UNAUTHENTICATED, /not a JWT/],
      [withAuthorization("Basic dXNlcjpwYXNz"), grpc.status.UNAUTHENTICATED, /not a Bearer token/],
      [
        withAuthorization(`Bearer ${await token(gateway, "http://other.example")}`),
        grpc.status.UNAUTHENTICATED,
        /audience is not this service/,
      ],
      [
        withAuthorization(`Bearer ${await token(stranger)}`),
        grpc.status.PERMISSION_DENIED,
        /may not call test\.Echo/,
      ],
    ];
    for (const [metadata, code, details] of cases) {
      const { error } = await echoAs(metadata);
      assert.equal(error?.code, code, String(details));
      assert.match(error?.details ?? "", details);
    }
  });
});
