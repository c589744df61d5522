// The end user through real grpc-js servers on loopback, behind the real auth check: a front
// server (the gateway's part) names its verified caller on its calls to a back server (route's
// part), which believes it from the front's identity only.
import assert from "node:assert/strict";
import { type AddressInfo, createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "@cloudrun-grpc/local-authority";
import * as grpc from "@grpc/grpc-js";
import { endUserSources, serviceAuth } from "../src/config.js";
import {
  endUser,
  endUserForwardingInterceptor,
  endUserInterceptor,
  endUserKey,
} from "../src/end-user.js";
import { fixedToken, idTokenInterceptor } from "../src/interceptors.js";
import { serverAuthInterceptor, verifiedCaller } from "../src/server-auth.js";
import { IdTokenVerifier } from "../src/verify.js";

const gateway = "gateway-svc@local-project.iam.gserviceaccount.com";
const route = "route-svc@local-project.iam.gserviceaccount.com";
const client = "ana@example.com";

const echoMethod: grpc.MethodDefinition<Buffer, Buffer> = {
  path: "/test.Echo/Echo",
  requestStream: false,
  responseStream: false,
  requestSerialize: (value) => value,
  requestDeserialize: (bytes) => bytes,
  responseSerialize: (value) => value,
  responseDeserialize: (bytes) => bytes,
};
const echoService: grpc.ServiceDefinition = { Echo: echoMethod };
const EchoClient = grpc.makeGenericClientConstructor(echoService, "Echo");
type EchoClient = grpc.Client & {
  Echo(
    request: Buffer,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<Buffer>,
  ): grpc.ClientUnaryCall;
};

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

interface Warning {
  details: Record<string, unknown>;
  message: string;
}

interface Server {
  target: string;
  audience: string;
  warnings: Warning[];
  close(): void;
}

/** A server that checks tokens for its own URL, then applies the end-user interceptor. */
async function startServer(
  authority: LocalTokenAuthority,
  options: {
    invokers: string[];
    trusted: string[];
    warnIntervalMs?: number;
    handle: (call: grpc.ServerUnaryCall<Buffer, Buffer>) => Promise<string>;
  },
): Promise<Server> {
  const warnings: Warning[] = [];
  const logger = {
    warn: (details: object, message: string) =>
      warnings.push({ details: details as Record<string, unknown>, message }),
  };
  // The verifier must know the server's own URL (its audience) before the server starts.
  const target = `127.0.0.1:${await freePort()}`;
  const audience = `http://${target}`;
  const server = new grpc.Server({
    interceptors: [
      serverAuthInterceptor({
        verifier: new IdTokenVerifier({
          audiences: [audience],
          issuers: { [authority.issuer]: authority.jwksUrl },
        }),
        allowedInvokers: options.invokers,
      }),
      endUserInterceptor(options.trusted, logger, { warnIntervalMs: options.warnIntervalMs }),
    ],
  });
  server.addService(echoService, {
    Echo(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      options.handle(call).then(
        (answer) => callback(null, Buffer.from(answer)),
        (error: grpc.ServiceError) => callback(error),
      );
    },
  });
  await new Promise<number>((resolve, reject) =>
    server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return { target, audience, warnings, close: () => server.forceShutdown() };
}

function echo(
  echoClient: EchoClient,
  metadata = new grpc.Metadata(),
  options: grpc.CallOptions = {},
): Promise<string> {
  return new Promise((resolve, reject) =>
    echoClient.Echo(
      Buffer.alloc(0),
      metadata,
      { deadline: Date.now() + 5_000, ...options },
      (error, answer) => (error ? reject(error) : resolve(String(answer))),
    ),
  );
}

describe("the end user, from the gateway's caller to route's handler", () => {
  let authority: LocalTokenAuthority;
  let back: Server;
  let front: Server;
  const clients: grpc.Client[] = [];
  let toBack: EchoClient;

  const tokenFor = (email: string, audience: string) => {
    const now = Math.floor(Date.now() / 1000);
    return authority.sign({
      iss: authority.issuer,
      aud: audience,
      email,
      email_verified: true,
      iat: now,
      exp: now + 3600,
    });
  };
  /** A client of `server` that sends `email`'s token, and more interceptors first. */
  const connect = async (server: Server, email: string, interceptors: grpc.Interceptor[] = []) => {
    const token = await tokenFor(email, server.audience);
    const made = new EchoClient(server.target, grpc.credentials.createInsecure(), {
      interceptors: [...interceptors, idTokenInterceptor(fixedToken(server.audience, token))],
    }) as unknown as EchoClient;
    clients.push(made);
    return made;
  };
  const naming = (...values: string[]) => {
    const metadata = new grpc.Metadata();
    for (const value of values) metadata.add(endUserKey, value);
    return metadata;
  };

  before(async () => {
    authority = await startLocalTokenAuthority({ identities: {} });
    // route's part: its handler answers with the call's end user.
    back = await startServer(authority, {
      invokers: [gateway, route],
      trusted: [gateway],
      handle: async (call) => endUser(call.metadata),
    });
    // The gateway's part: answers with what the back server saw, asked as the gateway, with
    // the served call as the parent (as downstream(call) makes it); x-test-no-parent: without.
    front = await startServer(authority, {
      invokers: [client],
      trusted: [],
      handle: async (call) =>
        echo(
          toBack,
          new grpc.Metadata(),
          call.metadata.get("x-test-no-parent").length > 0 ? {} : { parent: call },
        ),
    });
    toBack = await connect(back, gateway, [endUserForwardingInterceptor()]);
  });
  after(async () => {
    for (const made of clients) made.close();
    back?.close();
    front?.close();
    await authority?.close();
  });

  test("the gateway's peer call names the gateway's verified caller", async () => {
    const asClient = await connect(front, client);
    assert.equal(await echo(asClient), client);
  });

  test("a client's own x-end-user to the gateway is dropped with a warning, and not passed on", async () => {
    const asClient = await connect(front, client);
    assert.equal(await echo(asClient, naming(gateway)), client);
    assert.equal(front.warnings.length, 1);
    assert.deepEqual(front.warnings[0]?.details, {
      caller: client,
      method: "/test.Echo/Echo",
      claimedEndUser: [gateway],
      droppedSinceLastWarning: 0,
    });
    assert.match(front.warnings[0]?.message ?? "", /^x-end-user dropped/);
    assert.equal(back.warnings.length, 0);
  });

  test("a peer call made for no served call names no end user: it is the gateway's own", async () => {
    const asClient = await connect(front, client);
    const metadata = new grpc.Metadata();
    metadata.set("x-test-no-parent", "1");
    assert.equal(await echo(asClient, metadata), gateway);
  });

  test('from the gateway, any single value is believed, "" (anonymous) included', async () => {
    const asGateway = await connect(back, gateway);
    assert.equal(await echo(asGateway, naming("bob@example.com")), "bob@example.com");
    assert.equal(await echo(asGateway, naming("")), "");
    assert.equal(await echo(asGateway), gateway);
    assert.equal(back.warnings.length, 0);
    // Two values are not something the gateway sends (they arrive as one, joined by ", "):
    // dropped, the call is the gateway's.
    assert.equal(await echo(asGateway, naming("a@example.com", "b@example.com")), gateway);
    assert.equal(back.warnings.length, 1);
    assert.deepEqual(back.warnings[0]?.details.claimedEndUser, ["a@example.com, b@example.com"]);
  });

  test("from another allowed caller, x-end-user is dropped: the call is that caller's", async () => {
    const asRoute = await connect(back, route);
    assert.equal(await echo(asRoute, naming("someone@else.example")), route);
    // A client's own x-accepted-end-user is removed too: only the interceptor sets it.
    const forged = naming("someone@else.example");
    forged.set("x-accepted-end-user", "someone@else.example");
    assert.equal(await echo(asRoute, forged), route);
  });
});

describe("the warning for a dropped x-end-user is rate-limited", () => {
  let authority: LocalTokenAuthority;
  let server: Server;
  let echoClient: EchoClient;

  before(async () => {
    authority = await startLocalTokenAuthority({ identities: {} });
    server = await startServer(authority, {
      invokers: [route],
      trusted: [gateway],
      warnIntervalMs: 400,
      handle: async (call) => endUser(call.metadata),
    });
    const now = Math.floor(Date.now() / 1000);
    const token = await authority.sign({
      iss: authority.issuer,
      aud: server.audience,
      email: route,
      email_verified: true,
      iat: now,
      exp: now + 3600,
    });
    echoClient = new EchoClient(server.target, grpc.credentials.createInsecure(), {
      interceptors: [idTokenInterceptor(fixedToken(server.audience, token))],
    }) as unknown as EchoClient;
  });
  after(async () => {
    echoClient?.close();
    server?.close();
    await authority?.close();
  });

  test("one warning per interval, the next one saying how many were left out", async () => {
    const spoofed = new grpc.Metadata();
    spoofed.set(endUserKey, "someone@else.example");
    for (let index = 0; index < 20; index += 1) {
      assert.equal(await echo(echoClient, spoofed.clone()), route);
    }
    assert.equal(server.warnings.length, 1);
    await new Promise((resolve) => setTimeout(resolve, 450));
    assert.equal(await echo(echoClient, spoofed.clone()), route);
    assert.equal(server.warnings.length, 2);
    assert.equal(server.warnings[1]?.details.droppedSinceLastWarning, 19);
  });
});

test("endUserSources: none with AUTH_MODE=off; a warning when verify has none", () => {
  const warnings: string[] = [];
  const logger = { warn: (_details: object, message: string) => warnings.push(message) };
  assert.deepEqual(endUserSources({ AUTH_MODE: "off", AUTH_END_USER_FROM: [gateway] }, logger), []);
  assert.deepEqual(warnings, []);
  assert.deepEqual(endUserSources({ AUTH_MODE: "verify", AUTH_END_USER_FROM: [gateway] }, logger), [
    gateway,
  ]);
  assert.deepEqual(warnings, []);
  assert.deepEqual(endUserSources({ AUTH_MODE: "verify", AUTH_END_USER_FROM: [] }, logger), []);
  assert.match(warnings[0] ?? "", /AUTH_END_USER_FROM is empty/);
});

test("AUTH_MODE=off: a caller's own x-verified-caller and x-end-user never reach the handler", async () => {
  const warnings: string[] = [];
  const logger = { warn: (_details: object, message: string) => warnings.push(message) };
  const auth = serviceAuth(
    {
      AUTH_MODE: "off",
      AUTH_AUDIENCES: [],
      AUTH_ALLOWED_INVOKERS: [],
      AUTH_END_USER_FROM: [gateway],
    },
    logger,
  );
  const server = new grpc.Server({ interceptors: auth.serverInterceptors });
  server.addService(echoService, {
    Echo(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      callback(null, Buffer.from(`[${verifiedCaller(call.metadata)}|${endUser(call.metadata)}]`));
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  const echoClient = new EchoClient(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
  ) as unknown as EchoClient;
  try {
    const spoofed = new grpc.Metadata();
    spoofed.set("x-verified-caller", gateway);
    spoofed.set(endUserKey, client);
    spoofed.set("x-accepted-end-user", client);
    assert.equal(await echo(echoClient, spoofed), "[|]");
    assert.ok(warnings.some((message) => message.includes(`${endUserKey} dropped`)));
  } finally {
    echoClient.close();
    server.forceShutdown();
  }
});
