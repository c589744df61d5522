// The call observer against the grpc-js it runs on: the internals it reads are where it reads
// them (a grpc-js upgrade that moves them fails here, saying what moved), and a handler finds
// its own call's context explicitly, through any interceptors after the observer.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { callContextOf, type EndedCall, observeCalls } from "../src/call-observer.js";
import { silentLogger } from "../src/logger.js";

const grpcJsVersion = (
  createRequire(import.meta.url)("@grpc/grpc-js/package.json") as {
    version: string;
  }
).version;

const echo: grpc.ServiceDefinition = {
  Unary: {
    path: "/test.Echo/Unary",
    requestStream: false,
    responseStream: false,
    requestSerialize: (value: Buffer) => value,
    requestDeserialize: (bytes: Buffer) => bytes,
    responseSerialize: (value: Buffer) => value,
    responseDeserialize: (bytes: Buffer) => bytes,
  },
};
const EchoClient = grpc.makeGenericClientConstructor(echo, "Echo");

/** What the observer's reads found on each call's base call. */
const seen: { stream: unknown; sessionPing: string; sendStatusWritable: boolean }[] = [];
const ended: EndedCall[] = [];
const handlerContexts: (string | undefined)[] = [];
let server: grpc.Server;
let client: grpc.Client;

before(async () => {
  const inspect: grpc.ServerInterceptor = (_method, call) => {
    const descriptor = Object.getOwnPropertyDescriptor(call, "sendStatus");
    const stream = (call as { stream?: { session?: { ping?: unknown } } }).stream;
    seen.push({
      stream,
      // Read now: Node forgets a stream's session once the stream is closed.
      sessionPing: typeof stream?.session?.ping,
      sendStatusWritable: descriptor === undefined || descriptor.writable === true,
    });
    return new grpc.ServerInterceptingCall(call);
  };
  // An interceptor after the observer that edits the metadata, as auth does.
  const editsMetadata: grpc.ServerInterceptor = (_method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, pass) {
            metadata.set("x-verified-caller", "someone");
            pass(metadata);
          },
        });
      },
    });
  server = new grpc.Server({
    interceptors: [
      inspect,
      observeCalls({ logger: silentLogger(), onEnd: (call) => ended.push(call) }),
      editsMetadata,
    ],
  });
  server.addService(echo, {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      handlerContexts.push(callContextOf(call)?.trace.traceId);
      done(null, call.request);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  client = new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
});

after(() => {
  client?.close();
  server?.forceShutdown();
});

function call(traceparent: string): Promise<void> {
  const metadata = new grpc.Metadata();
  metadata.set("traceparent", traceparent);
  const unary = (client as unknown as { Unary: CallableFunction }).Unary.bind(client);
  return new Promise((resolve, reject) =>
    unary(Buffer.from("x"), metadata, { deadline: Date.now() + 5_000 }, (error: Error | null) =>
      error ? reject(error) : resolve(),
    ),
  );
}

test(`grpc-js ${grpcJsVersion} keeps what the call observer reads where it reads it`, async () => {
  await call("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  const [first] = seen;
  assert.ok(first, "the inspecting interceptor ran");
  const moved = (what: string) =>
    `grpc-js ${grpcJsVersion} moved ${what}: packages/runtime/src/call-observer.ts reads it to tell how a call ended (counting, cancel and the call lines depend on it); adapt the observer before upgrading`;
  const stream = first.stream as Record<string, unknown> | undefined;
  assert.ok(stream && typeof stream === "object", moved("the base call's `stream`"));
  assert.equal(typeof stream.closed, "boolean", moved("`stream.closed`"));
  assert.equal(typeof stream.destroyed, "boolean", moved("`stream.destroyed`"));
  assert.equal(typeof stream.rstCode, "number", moved("`stream.rstCode`"));
  assert.equal(first.sessionPing, "function", moved("`stream.session` (its ping)"));
  assert.ok(first.sendStatusWritable, moved("a replaceable `sendStatus` on the base call"));
});

test(`grpc-js ${grpcJsVersion} keeps the Server's handler look-up that unknown methods are routed through`, () => {
  const internals = new grpc.Server() as unknown as { _retrieveHandler?: unknown };
  assert.equal(
    typeof internals._retrieveHandler,
    "function",
    `grpc-js ${grpcJsVersion} moved Server._retrieveHandler: packages/runtime/src/server.ts wraps it so calls to unknown methods pass the auth check first; adapt it before upgrading`,
  );
});

test("a handler finds its own call's context explicitly, through interceptors that edit the metadata", async () => {
  const traceIds = ["1".repeat(32), "2".repeat(32), "3".repeat(32)];
  await Promise.all(traceIds.map((traceId) => call(`00-${traceId}-${"a".repeat(16)}-01`)));
  assert.deepEqual([...handlerContexts.slice(-3)].sort(), traceIds);
});

test("the observer tells its subscriber how each call ended, with the peer taken at the start", async () => {
  const before = ended.length;
  await call(`00-${"4".repeat(32)}-${"b".repeat(16)}-01`);
  await new Promise((resolve) => setTimeout(resolve, 50));
  const last = ended.at(-1);
  assert.equal(ended.length, before + 1);
  assert.equal(last?.code, grpc.status.OK);
  assert.equal(last?.method, "/test.Echo/Unary");
  assert.equal(last?.context?.trace.traceId, "4".repeat(32));
  assert.match(String(last?.peer), /^127\.0\.0\.1:\d+$/);
  assert.equal(last?.metadata?.get("x-verified-caller")[0], "someone");
  assert.deepEqual([last?.received, last?.sent], [1, 1]);
});
