// The one interceptor of peer calls (outgoing-calls.ts) with an ID token, on a real grpc-js
// server and client over HTTP/2 on loopback: the headers a call carries, in order, when a
// token is at hand, and a call made before there is one, which runs the token's waiting
// interceptor under it: served once the token comes, ended by its deadline or a token error
// otherwise, with one client line each time.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { createLogger } from "../src/logger.js";
import { outgoingCalls, type PeerCallToken } from "../src/outgoing-calls.js";

type Entry = { rpc?: Record<string, unknown>; message: string; severity: string };

const entries: Entry[] = [];
const logger = createLogger({
  service: "test",
  level: "info",
  destination: new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line) entries.push(JSON.parse(line));
      done();
    },
  }),
});

const bytes = {
  requestSerialize: (value: Buffer) => value,
  requestDeserialize: (value: Buffer) => value,
  responseSerialize: (value: Buffer) => value,
  responseDeserialize: (value: Buffer) => value,
};
const echo: grpc.ServiceDefinition = {
  Unary: { path: "/test.Echo/Unary", requestStream: false, responseStream: false, ...bytes },
};
const EchoClient = grpc.makeGenericClientConstructor(echo, "Echo");
type Client = grpc.Client & {
  Unary(
    request: Buffer,
    options: grpc.CallOptions,
    done: (error: grpc.ServiceError | null) => void,
  ): grpc.ClientUnaryCall;
};

/** The headers each call reached the server with, names in the order received. */
const received: { names: string[]; authorization: unknown }[] = [];
let server: grpc.Server;
let port = 0;

before(async () => {
  server = new grpc.Server();
  server.addService(echo, {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      received.push({
        names: Object.keys(call.metadata.getMap()),
        authorization: call.metadata.get("authorization")[0],
      });
      done(null, call.request);
    },
  });
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
});
after(() => server.forceShutdown());

/** A token that is at hand, or that comes when the test says (the waiting interceptor's own). */
function testToken(): PeerCallToken & {
  atHand: string | undefined;
  give(token: string): void;
  refuse(reason: string): void;
} {
  let pending: { resolve(token: string): void; reject(error: Error): void } | undefined;
  const setter = (token: string) => (metadata: grpc.Metadata) => {
    metadata.set("authorization", `Bearer ${token}`);
    metadata.set("x-serverless-authorization", `Bearer ${token}`);
  };
  const state = {
    atHand: undefined as string | undefined,
    ready: () => (state.atHand ? setter(state.atHand) : undefined),
    // What auth-client's idTokenInterceptor does, reduced: wait for the token, then start; end
    // the call with the token's error, and with DEADLINE_EXCEEDED when its deadline passes.
    waiting: ((options, nextCall) => {
      const inner = nextCall(options);
      return new grpc.InterceptingCall(inner, {
        start(metadata, listener, next) {
          let ended = false;
          const end = (code: grpc.status, details: string) => {
            if (ended) return;
            ended = true;
            listener.onReceiveStatus({ code, details, metadata: new grpc.Metadata() });
            inner.cancelWithStatus(code, details);
          };
          const deadline = options.deadline;
          const at = deadline instanceof Date ? deadline.getTime() : (deadline ?? Infinity);
          const timer = Number.isFinite(at)
            ? setTimeout(
                () => end(grpc.status.DEADLINE_EXCEEDED, "no token in time"),
                at - Date.now(),
              )
            : undefined;
          new Promise<string>((resolve, reject) => {
            pending = { resolve, reject };
          }).then(
            (token) => {
              clearTimeout(timer);
              if (ended) return;
              setter(token)(metadata);
              next(metadata, listener);
            },
            (error: Error) => {
              clearTimeout(timer);
              end(grpc.status.UNAUTHENTICATED, error.message);
            },
          );
        },
      });
    }) as grpc.Interceptor,
    give: (token: string) => pending?.resolve(token),
    refuse: (reason: string) => pending?.reject(new Error(reason)),
  };
  return state;
}

function connect(token: PeerCallToken): Client {
  return new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    interceptors: [
      outgoingCalls({
        peer: "echo",
        rpcLog: { logger, sampleRate: 1 },
        headers: (metadata) => metadata.set("x-end-user", "someone@example.com"),
        token,
      }),
    ],
  }) as unknown as Client;
}

const call = (client: Client, deadlineMs = 5000) =>
  new Promise<grpc.ServiceError | null>((resolve) =>
    client.Unary(Buffer.from("x"), { deadline: Date.now() + deadlineMs }, resolve),
  );

const linesOf = (code: string) =>
  entries.filter((entry) => entry.rpc?.side === "client" && entry.rpc?.code === code);

describe("the peer interceptor with an ID token", () => {
  test("a token at hand: trace, call id, the service's header, then the token, in one pass", async () => {
    const token = testToken();
    token.atHand = "at-hand";
    const client = connect(token);
    const before = linesOf("OK").length;
    assert.equal(await call(client), null);
    client.close();
    const last = received.at(-1);
    assert.equal(last?.authorization, "Bearer at-hand");
    const ours = [
      "traceparent",
      "x-call-id",
      "x-end-user",
      "authorization",
      "x-serverless-authorization",
    ];
    assert.deepEqual(
      last?.names.filter((name) => ours.includes(name)),
      ours,
    );
    assert.equal(linesOf("OK").length, before + 1);
  });

  test("no token yet: the call waits for it and is served with it, one client line", async () => {
    const token = testToken();
    const client = connect(token);
    const before = linesOf("OK").length;
    const done = call(client);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const served = received.length;
    token.give("came-later");
    assert.equal(await done, null);
    client.close();
    assert.equal(received.length, served + 1, "nothing reached the server before the token");
    assert.equal(received.at(-1)?.authorization, "Bearer came-later");
    assert.equal(linesOf("OK").length, before + 1);
  });

  test("no token before the deadline: DEADLINE_EXCEEDED, nothing sent, one client line", async () => {
    const token = testToken();
    const client = connect(token);
    const served = received.length;
    const before = linesOf("DEADLINE_EXCEEDED").length;
    const error = await call(client, 200);
    client.close();
    assert.equal(error?.code, grpc.status.DEADLINE_EXCEEDED);
    assert.equal(received.length, served);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(linesOf("DEADLINE_EXCEEDED").length, before + 1);
  });

  test("a token that cannot be had: UNAUTHENTICATED with the reason, one client line", async () => {
    const token = testToken();
    const client = connect(token);
    const before = linesOf("UNAUTHENTICATED").length;
    const done = call(client);
    await new Promise((resolve) => setTimeout(resolve, 20));
    token.refuse("metadata server unreachable");
    const error = await done;
    client.close();
    assert.equal(error?.code, grpc.status.UNAUTHENTICATED);
    assert.match(String(error?.details), /metadata server unreachable/);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const lines = linesOf("UNAUTHENTICATED");
    assert.equal(lines.length, before + 1);
    assert.match(String(lines.at(-1)?.rpc?.details), /metadata server unreachable/);
  });
});
