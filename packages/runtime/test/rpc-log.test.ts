// The per-call log lines and the call context, on a real grpc-js server and client over
// HTTP/2 on loopback: a front server whose handlers call a back server, both logged.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { currentCall, onCallEnd } from "../src/call-context.js";
import { observeCalls } from "../src/call-observer.js";
import { createLogger } from "../src/logger.js";
import { outgoingCalls } from "../src/outgoing-calls.js";
import { type IncomingRpcLogOptions, logCallEnds } from "../src/rpc-log.js";

/** What runService installs first on every server: the call observer, logging its ends. */
const observedAndLogged = (options: IncomingRpcLogOptions) =>
  observeCalls({ logger: options.logger, onEnd: logCallEnds(options) });

type Entry = Record<string, unknown> & {
  rpc?: Record<string, unknown>;
  message: string;
  severity: string;
};

function capturingLogger() {
  const entries: Entry[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line) entries.push(JSON.parse(line));
      done();
    },
  });
  return { logger: createLogger({ service: "test", level: "debug", destination }), entries };
}

const bytes = {
  requestSerialize: (value: Buffer) => value,
  requestDeserialize: (value: Buffer) => value,
  responseSerialize: (value: Buffer) => value,
  responseDeserialize: (value: Buffer) => value,
};
const echo: grpc.ServiceDefinition = {
  Unary: { path: "/test.Echo/Unary", requestStream: false, responseStream: false, ...bytes },
  Fail: { path: "/test.Echo/Fail", requestStream: false, responseStream: false, ...bytes },
  Hang: { path: "/test.Echo/Hang", requestStream: false, responseStream: false, ...bytes },
  Server: { path: "/test.Echo/Server", requestStream: false, responseStream: true, ...bytes },
  Client: { path: "/test.Echo/Client", requestStream: true, responseStream: false, ...bytes },
  Bidi: { path: "/test.Echo/Bidi", requestStream: true, responseStream: true, ...bytes },
};
const EchoClient = grpc.makeGenericClientConstructor(echo, "Echo");
type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

/** The x-call-id the back server's calls came with. */
const backCallIds: string[] = [];

/** What onCallEnd told handlers, by trace id. */
const endedWith = new Map<string, number>();
const recordEnd = () => {
  const traceId = currentCall()?.trace.traceId ?? "none";
  onCallEnd((code) => endedWith.set(traceId, code));
};

/** The trace id the handler's code sees at each point it runs (handler body, stream events). */
const seen: Record<string, string[]> = {};
const see = (where: string) => {
  const traceId = currentCall()?.trace.traceId ?? "none";
  seen[where] ??= [];
  seen[where].push(traceId);
};

async function listen(server: grpc.Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) =>
      error ? reject(error) : resolve(port),
    ),
  );
}

const front = capturingLogger();
const back = capturingLogger();
let sampleRate = 1;
let slowMs = 500;
let frontClient: Client;
let backClient: Client;
const servers: grpc.Server[] = [];
const unary = (client: Client, method: string, metadata = new grpc.Metadata(), ms = 5000) =>
  new Promise<Buffer>((resolve, reject) =>
    client[method]?.(
      Buffer.from("x"),
      metadata,
      { deadline: Date.now() + ms },
      (error: Error, value: Buffer) => (error ? reject(error) : resolve(value)),
    ),
  );

before(async () => {
  const backServer = new grpc.Server({
    interceptors: [observedAndLogged({ logger: back.logger, sampleRate: 1 })],
  });
  backServer.addService(echo, {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      see("back unary");
      backCallIds.push(currentCall()?.callId ?? "none");
      done(null, call.request);
    },
  });
  const backPort = await listen(backServer);
  backClient = new EchoClient(`127.0.0.1:${backPort}`, grpc.credentials.createInsecure(), {
    interceptors: [
      outgoingCalls({
        peer: "back",
        rpcLog: {
          logger: front.logger,
          get sampleRate() {
            return sampleRate;
          },
        },
      }),
    ],
  }) as unknown as Client;

  const frontServer = new grpc.Server({
    interceptors: [
      observedAndLogged({
        logger: front.logger,
        get sampleRate() {
          return sampleRate;
        },
        get slowMs() {
          return slowMs;
        },
        callerOf: (metadata) => String(metadata.get("x-test-caller")[0] ?? ""),
      }),
    ],
  });
  frontServer.addService(echo, {
    // Calls the back server from a later tick, as real handlers do after an await.
    Unary: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      see("unary");
      recordEnd();
      setTimeout(() => {
        see("unary later");
        unary(backClient, "Unary").then((value) => done(null, value), done);
      }, 1);
    },
    Fail: (_call: unknown, done: grpc.sendUnaryData<Buffer>) =>
      done({ code: grpc.status.INVALID_ARGUMENT, details: "bad point" }),
    // Answers after 300 ms, whatever happened meanwhile.
    Hang: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      recordEnd();
      setTimeout(() => done(null, call.request), 300);
    },
    Server: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      see("server");
      for (let i = 0; i < 3; i += 1) call.write(Buffer.from([i]));
      call.end();
    },
    Client: (call: grpc.ServerReadableStream<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      see("client");
      call.on("data", () => see("client data"));
      call.on("end", () => {
        see("client end");
        done(null, Buffer.from("ok"));
      });
    },
    Bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      see("bidi");
      call.on("data", (message: Buffer) => {
        see("bidi data");
        call.write(message);
      });
      call.on("end", () => call.end());
    },
  });
  const frontPort = await listen(frontServer);
  frontClient = new EchoClient(
    `127.0.0.1:${frontPort}`,
    grpc.credentials.createInsecure(),
  ) as unknown as Client;
  servers.push(frontServer, backServer);
});

after(() => {
  frontClient.close();
  backClient.close();
  for (const server of servers) server.forceShutdown();
});

const traceId = (n: number) => `${String(n).padStart(2, "0")}${"a".repeat(30)}`;
/** A call in trace `id`, which its caller sampled (flag 01) unless told otherwise. */
const withTrace = (id: string, sampled = true) => {
  const metadata = new grpc.Metadata();
  metadata.set("traceparent", `00-${id}-b7ad6b7169203331-${sampled ? "01" : "00"}`);
  metadata.set("x-test-caller", "caller@example.com");
  return metadata;
};
const rpcLines = (entries: Entry[], id: string) =>
  entries.filter((entry) => entry.rpc && entry["logging.googleapis.com/trace"] === id);

/** Retries `check` until it passes (lines are written when calls end, after the client's answer). */
async function settle(check: () => void = () => {}): Promise<void> {
  const until = Date.now() + 5000;
  for (;;) {
    try {
      check();
      return;
    } catch (error) {
      if (Date.now() > until) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

describe("per-call log lines and the call context", () => {
  test("a unary call: its handler's code runs in the incoming trace, and the call it makes continues it", async () => {
    const id = traceId(1);
    await unary(frontClient, "Unary", withTrace(id));
    await settle(() =>
      assert.equal(rpcLines(front.entries, id).length + rpcLines(back.entries, id).length, 3),
    );
    assert.deepEqual(seen.unary?.at(-1), id);
    assert.deepEqual(seen["unary later"]?.at(-1), id);
    assert.deepEqual(seen["back unary"]?.at(-1), id, "the back server got the trace on");
    assert.match(String(backCallIds.at(-1)), /^[0-9a-f]{32}$/, "each outgoing call has its id");

    const [server] = rpcLines(front.entries, id).filter((entry) => entry.rpc?.side === "server");
    assert.equal(server?.rpc?.method, "/test.Echo/Unary");
    assert.equal(server?.rpc?.code, "OK");
    assert.equal(server?.rpc?.caller, "caller@example.com");
    assert.equal(server?.rpc?.parentSpanId, "b7ad6b7169203331");
    assert.match(String(server?.rpc?.peer), /^127\.0\.0\.1:\d+$/);
    assert.equal(typeof server?.rpc?.durationMs, "number");
    assert.deepEqual([server?.rpc?.received, server?.rpc?.sent], [1, 1]);
    assert.equal(server?.severity, "INFO");

    // The client line of the outgoing call is the parent of the back server's line.
    const [client] = rpcLines(front.entries, id).filter((entry) => entry.rpc?.side === "client");
    const [backLine] = rpcLines(back.entries, id);
    assert.equal(client?.rpc?.peer, "back");
    assert.equal(client?.rpc?.code, "OK");
    assert.equal(client?.rpc?.parentSpanId, server?.["logging.googleapis.com/spanId"]);
    assert.equal(backLine?.rpc?.parentSpanId, client?.["logging.googleapis.com/spanId"]);
  });

  test("streams: every handler callback runs in the call's trace; messages are counted", async () => {
    const id = traceId(2);
    const server = frontClient.Server?.(
      Buffer.from("x"),
      withTrace(id),
    ) as grpc.ClientReadableStream<Buffer>;
    let got = 0;
    for await (const _ of server) got += 1;
    assert.equal(got, 3);

    const id3 = traceId(3);
    await new Promise<void>((resolve, reject) => {
      const call = frontClient.Client?.(withTrace(id3), (error: Error | null) =>
        error ? reject(error) : resolve(),
      ) as grpc.ClientWritableStream<Buffer>;
      for (let i = 0; i < 5; i += 1) call.write(Buffer.from([i]));
      call.end();
    });

    const id4 = traceId(4);
    const bidi = frontClient.Bidi?.(withTrace(id4)) as grpc.ClientDuplexStream<Buffer, Buffer>;
    for (let i = 0; i < 4; i += 1) bidi.write(Buffer.from([i]));
    bidi.end();
    let echoed = 0;
    for await (const _ of bidi) echoed += 1;
    assert.equal(echoed, 4);
    await settle(() =>
      assert.equal([id, id3, id4].filter((t) => rpcLines(front.entries, t).length > 0).length, 3),
    );

    assert.equal(seen.server?.at(-1), id);
    assert.deepEqual(seen["client data"]?.slice(-5), Array(5).fill(id3));
    assert.equal(seen["client end"]?.at(-1), id3);
    assert.deepEqual(seen["bidi data"]?.slice(-4), Array(4).fill(id4));
    const counts = (traceOf: string) => {
      const [line] = rpcLines(front.entries, traceOf);
      return [line?.rpc?.received, line?.rpc?.sent];
    };
    assert.deepEqual(counts(id), [1, 3]);
    assert.deepEqual(counts(id3), [5, 1]);
    assert.deepEqual(counts(id4), [4, 4]);
  });

  test("a call without trace context starts a trace; each call gets its own", async () => {
    await unary(frontClient, "Unary");
    await unary(frontClient, "Unary");
    const [first, second] = seen.unary?.slice(-2) ?? [];
    assert.match(String(first), /^[0-9a-f]{32}$/);
    assert.notEqual(first, second);
  });

  test("X-Cloud-Trace-Context is read when no traceparent comes", async () => {
    const metadata = new grpc.Metadata();
    metadata.set("x-cloud-trace-context", `${traceId(5)}/12345;o=1`);
    await unary(frontClient, "Unary", metadata);
    assert.equal(seen.unary?.at(-1), traceId(5));
  });

  test("failures are logged with their status; a deadline grpc-js enforces itself too", async () => {
    const failed = await unary(frontClient, "Fail", withTrace(traceId(6))).catch((e) => e);
    assert.equal(failed.code, grpc.status.INVALID_ARGUMENT);
    const hung = await unary(frontClient, "Hang", withTrace(traceId(7)), 100).catch((e) => e);
    assert.equal(hung.code, grpc.status.DEADLINE_EXCEEDED);
    await settle(() =>
      assert.equal(
        rpcLines(front.entries, traceId(6)).length + rpcLines(front.entries, traceId(7)).length,
        2,
      ),
    );
    const [fail] = rpcLines(front.entries, traceId(6));
    assert.equal(fail?.rpc?.code, "INVALID_ARGUMENT");
    assert.equal(fail?.rpc?.details, "bad point");
    assert.equal(fail?.severity, "WARNING");
    const [hang] = rpcLines(front.entries, traceId(7));
    assert.equal(hang?.rpc?.code, "DEADLINE_EXCEEDED");
  });

  test("onCallEnd tells a handler the status its client was sent, not the answer it gave too late", async () => {
    await unary(frontClient, "Unary", withTrace(traceId(13)));
    const late = await unary(frontClient, "Hang", withTrace(traceId(14)), 100).catch((e) => e);
    assert.equal(late.code, grpc.status.DEADLINE_EXCEEDED);
    const metadata = withTrace(traceId(15));
    const cancelled = new Promise((resolve) => {
      const call = frontClient.Hang?.(Buffer.from("x"), metadata, (error: grpc.ServiceError) =>
        resolve(error?.code),
      ) as grpc.ClientUnaryCall;
      setTimeout(() => call.cancel(), 50);
    });
    assert.equal(await cancelled, grpc.status.CANCELLED);
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(endedWith.get(traceId(13)), grpc.status.OK);
    assert.equal(endedWith.get(traceId(14)), grpc.status.DEADLINE_EXCEEDED);
    assert.equal(endedWith.get(traceId(15)), grpc.status.CANCELLED);
    const [line] = rpcLines(front.entries, traceId(15));
    assert.equal(line?.rpc?.code, "CANCELLED");
  });

  test("sampled down to 0, OK calls give no line but failures still do, on both sides", async () => {
    sampleRate = 0;
    try {
      const before = front.entries.length;
      await unary(frontClient, "Unary", withTrace(traceId(8), false));
      await unary(frontClient, "Fail", withTrace(traceId(9), false)).catch(() => {});
      await settle(() =>
        assert.ok(
          front.entries.slice(before).some((entry) => entry.rpc?.method === "/test.Echo/Fail"),
        ),
      );
      const rpc = front.entries.slice(before).filter((entry) => entry.rpc);
      assert.deepEqual(
        rpc.map((entry) => [entry.rpc?.method, entry.rpc?.code]),
        [["/test.Echo/Fail", "INVALID_ARGUMENT"]],
      );
    } finally {
      sampleRate = 1;
    }
  });

  test("sampled down to 0, a trace its caller sampled is still logged whole, on both sides", async () => {
    sampleRate = 0;
    try {
      const id = traceId(21);
      await unary(frontClient, "Unary", withTrace(id, true));
      await settle(() =>
        assert.deepEqual(
          [...rpcLines(front.entries, id), ...rpcLines(back.entries, id)]
            .map((entry) => `${entry.rpc?.side} ${entry.rpc?.method} ${entry.rpc?.code}`)
            .sort(),
          [
            "client /test.Echo/Unary OK",
            "server /test.Echo/Unary OK",
            "server /test.Echo/Unary OK",
          ],
        ),
      );
    } finally {
      sampleRate = 1;
    }
  });

  test("sampled down to 0, a unary call slower than the slow threshold is still logged", async () => {
    sampleRate = 0;
    slowMs = 200;
    try {
      const slow = traceId(22);
      const fast = traceId(23);
      await unary(frontClient, "Hang", withTrace(slow, false));
      await unary(frontClient, "Fail", withTrace(fast, false)).catch(() => {});
      await settle(() => assert.equal(rpcLines(front.entries, fast).length, 1));
      const lines = rpcLines(front.entries, slow);
      assert.equal(lines.length, 1, "the 300 ms call's line");
      assert.equal(lines[0]?.rpc?.method, "/test.Echo/Hang");
      assert.ok(Number(lines[0]?.rpc?.durationMs) >= 200);
      // A fast OK call of an unsampled trace, for contrast: no line.
      const quick = traceId(24);
      await unary(frontClient, "Unary", withTrace(quick, false));
      await unary(frontClient, "Fail", withTrace(traceId(25), false)).catch(() => {});
      await settle(() => assert.equal(rpcLines(front.entries, traceId(25)).length, 1));
      assert.equal(rpcLines(front.entries, quick).length, 0);
    } finally {
      sampleRate = 1;
      slowMs = 500;
    }
  });

  test("every server line is one finished call: one line per call, no more", async () => {
    const ids = [10, 11, 12].map(traceId);
    await Promise.all(ids.map((id) => unary(frontClient, "Unary", withTrace(id))));
    await settle(() =>
      assert.ok(
        ids.every((id) =>
          rpcLines(front.entries, id).some((entry) => entry.rpc?.side === "server"),
        ),
      ),
    );
    for (const id of ids) {
      const lines = rpcLines(front.entries, id).filter((entry) => entry.rpc?.side === "server");
      assert.equal(lines.length, 1, `trace ${id}: ${lines.length} lines`);
    }
  });
});
