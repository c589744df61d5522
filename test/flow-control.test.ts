// The gateway forwards streams with flow control: a client that never reads must hold the
// writer back (HTTP/2 flow control all the way from route to the client) instead of making
// the gateway or route buffer the stream, and the system must get over it.
//
// The client is a bare node:http2 stream (support/raw-grpc.ts), not grpc-js: a grpc-js client
// that is not read buffers without limit on its own side, so it cannot play a reader that
// never reads. Every note is left at the same location, so route answers note k with the k-1
// earlier notes: the answers grow quadratically, and a gateway that kept reading the client's
// notes while its answers pile up would have to hold gigabytes.
import assert from "node:assert/strict";
import type { ClientHttp2Stream, IncomingHttpHeaders } from "node:http2";
import { after, before, test } from "node:test";
import { type Stack, startStack } from "@cloudrun-grpc/local-stack";
import type { gateway } from "@cloudrun-grpc/proto";
import { deadline, healthStatus, stackGatewayClient, targetOf, unary } from "./support/grpc.js";
import {
  cpuSeconds,
  encodeRouteChatRequest,
  GrpcMessageCounter,
  grpcFrame,
  openRawCall,
  residentBytes,
} from "./support/raw-grpc.js";
import { describeLocalOnly } from "./support/target.js";

const routeChat = "/gateway.v1.GatewayService/RouteChat";

// Notes as large as route takes (1 KiB of text). The size matters: the gateway's grpc-js
// client to route keeps every message it sends in a retry buffer (grpc.per_rpc_retry_buffer_size,
// 64 KiB per call on the gateway's channel to route) and acknowledges it at once, so the first
// 64 KiB of a chat are taken whatever the flow control: ~60 notes of 1 KiB.
const noteBytes = 1024;
const mib = 1024 * 1024;
// The most notes one test writes: far more than flow control lets through (below).
const maxNotes = 5000;

/** The i-th note: at `location`, its index then filler up to 1 KiB. */
const note = (index: number, location = { latitude: 1, longitude: 1 }) =>
  grpcFrame(encodeRouteChatRequest(location, `${index} `.padEnd(noteBytes, "x")));

// How long the writer must make no progress before we call it held back, and the hard bound
// on one observation so a test always ends.
const quietMs = 1500;
const observeLimitMs = 20_000;

// Every wait in these tests is bounded; this is the last resort if one is not.
const bounded = { timeout: 120_000 };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`'s value, or undefined if it takes longer than `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(resolve, ms, undefined);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves true on 'drain', false after `ms` (and removes its listener either way). */
function drained(stream: ClientHttp2Stream, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const onDrain = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      stream.off("drain", onDrain);
      resolve(false);
    }, ms);
    stream.once("drain", onDrain);
  });
}

interface Writer {
  /** Messages the stream took: their write callbacks completed (sent within HTTP/2 windows). */
  accepted: number;
  /** Messages handed to stream.write. */
  written: number;
}

/**
 * Writes notes from `writer.written` up to `to - 1`, honouring write()'s backpressure, until all
 * are accepted, or none has been for `quietMs` (the writer is held back), or `observeLimitMs`.
 */
async function writeUntilHeldBack(
  stream: ClientHttp2Stream,
  writer: Writer,
  to: number,
  makeNote: (index: number) => Buffer,
): Promise<void> {
  const started = Date.now();
  let lastProgress = started;
  let seen = writer.accepted;
  const over = () => {
    if (writer.accepted !== seen) {
      seen = writer.accepted;
      lastProgress = Date.now();
    }
    return Date.now() - lastProgress >= quietMs || Date.now() - started >= observeLimitMs;
  };
  while (writer.written < to && !over()) {
    const room = stream.write(makeNote(writer.written), (error) => {
      if (!error) writer.accepted += 1;
    });
    writer.written += 1;
    if (!room) {
      let drainedYet = false;
      while (!drainedYet && !over()) drainedYet = await drained(stream, 100);
    }
  }
  while (writer.accepted < writer.written && !over()) await sleep(100);
}

describeLocalOnly("flow control through the gateway", () => {
  let stack: Stack;

  before(async () => {
    // route's own bound on a chat's notes (CHAT_MAX_NOTES, 1,000 by default) is raised out of
    // the way: it would end a chat that is not held back before the count below could tell.
    stack = await startStack({ env: { route: { CHAT_MAX_NOTES: "100000" } } });
  });
  after(async () => {
    await stack?.stop();
  });

  const pids = () => ({ gateway: stack.gateway.child.pid ?? 0, route: stack.route.child.pid ?? 0 });
  const resident = () => ({
    gateway: residentBytes(pids().gateway),
    route: residentBytes(pids().route),
  });
  /** CPU seconds the gateway and route each use in the next `ms`. */
  const cpuUsedIn = async (ms: number) => {
    const { gateway, route } = pids();
    const start = { gateway: cpuSeconds(gateway), route: cpuSeconds(route) };
    await sleep(ms);
    return { gateway: cpuSeconds(gateway) - start.gateway, route: cpuSeconds(route) - start.route };
  };

  test(
    "a client that never reads holds the writer back, and nothing buffers the chat",
    bounded,
    async () => {
      const before = resident();
      const call = openRawCall(
        stack.gateway.url,
        routeChat,
        await stack.auth?.tokenFor("client", stack.gateway.url),
      );
      let headers: IncomingHttpHeaders | undefined;
      call.stream.on("response", (received) => {
        headers = received;
      });
      const writer: Writer = { accepted: 0, written: 0 };
      try {
        // No 'data' listener and the stream stays paused: not one answer is read.
        await writeUntilHeldBack(call.stream, writer, maxNotes, (index) => note(index));
        const held = resident();
        const busy = await cpuUsedIn(1000);
        const growth = {
          gateway: (held.gateway - before.gateway) / mib,
          route: (held.route - before.route) / mib,
        };
        console.log(
          `flow control: ${writer.accepted} of ${writer.written} notes accepted; RSS growth ` +
            `gateway ${growth.gateway.toFixed(1)} MiB, route ${growth.route.toFixed(1)} MiB; ` +
            `CPU in the next second gateway ${busy.gateway.toFixed(2)} s, route ${busy.route.toFixed(2)} s`,
        );

        // The call is alive and well, just held: a normal response, not a status, no reset.
        assert.equal(headers?.[":status"], 200);
        assert.equal(headers?.["grpc-status"], undefined, "the chat ended with a status");
        assert.ok(!call.stream.closed && !call.stream.destroyed, "the chat was closed");

        // Measured with a 1 MiB retry buffer (grpc-js's default; 64 KiB now, see above, and
        // ~150 notes taken): 1,169 notes (1.2 MiB) are taken before the writer stalls: ~1,000 in
        // the gateway's grpc-js retry buffer, ~60 in each 64 KiB HTTP/2
        // stream window (client→gateway, gateway→route), a few in the 16 KiB / 16-message stream
        // buffers on each hop, and the ~20 notes route answered before its own answers (~160 of
        // them) filled the way back. 2,500 leaves more than twice that. A gateway that does not
        // pause reading the client while route is full takes all 5,000.
        assert.ok(
          writer.accepted < 2500,
          `${writer.accepted} notes accepted: the gateway kept reading a chat it could not send on`,
        );
        assert.ok(writer.written > writer.accepted, "the writer was never held back");

        // Held back means still, not slow: with the chat stuck, gateway and route have nothing
        // to do (measured: 0.00 s of CPU in that second). A gateway that reads route's answers
        // without pausing keeps both busy, route producing answers and the gateway buffering
        // them, and the writer can still look held back by the count alone: route, never held,
        // reads notes ever more slowly (note k takes k - 1 answers). Measured with such a
        // gateway: 1,169 notes accepted, then ~0.8 s of CPU each in that second.
        assert.ok(
          busy.gateway < 0.25,
          `gateway used ${busy.gateway.toFixed(2)} s of CPU while held`,
        );
        assert.ok(busy.route < 0.25, `route used ${busy.route.toFixed(2)} s of CPU while held`);

        // Memory. Measured growth: gateway 11 to 14 MiB (its 1 MiB retry buffer, windows and
        // garbage not yet collected), route under 2 MiB. The gateway that does not pause reading
        // route's answers had grown by 121 to 161 MiB when the writer stalled, and keeps growing
        // (answering 2,500 notes is ~3 GiB).
        assert.ok(growth.gateway < 64, `gateway grew ${growth.gateway.toFixed(1)} MiB`);
        assert.ok(growth.route < 64, `route grew ${growth.route.toFixed(1)} MiB`);
      } finally {
        await call.cancel();
      }

      // The system gets over it: every service is serving and a normal call works.
      for (const service of stack.services)
        assert.equal(await healthStatus(targetOf(service.url), ""), "SERVING", service.name);
      const client = await stackGatewayClient(stack);
      try {
        const response = await unary<gateway.GetFeatureResponse__Output>((done) =>
          client.GetFeature({ point: { latitude: 1, longitude: 1 } }, deadline(), done),
        );
        assert.deepEqual(response.feature?.location, { latitude: 1, longitude: 1 });
      } finally {
        client.close();
      }
    },
  );

  // Being held back must not be for good: a gateway that pauses and never resumes passes the
  // test above but loses the chat. Here the client stops reading, then reads everything.
  test("a client that stops reading and then reads again gets every answer", bounded, async () => {
    // Notes go to 50 locations in turn, so the chat stalls as above but its answers stay few
    // enough to read in full: note i is answered with the floor(i / 50) earlier notes there.
    const locations = 50;
    const notes = 2000;
    const makeNote = (index: number) =>
      note(index, { latitude: 1 + (index % locations), longitude: 1 });
    let expected = 0;
    for (let index = 0; index < notes; index += 1) expected += Math.floor(index / locations);

    const call = openRawCall(
      stack.gateway.url,
      routeChat,
      await stack.auth?.tokenFor("client", stack.gateway.url),
    );
    try {
      const writer: Writer = { accepted: 0, written: 0 };
      await writeUntilHeldBack(call.stream, writer, notes, makeNote);
      const heldAt = writer.accepted;
      assert.ok(heldAt < notes, `all ${notes} notes were accepted while nothing was read`);

      // Now read: the answers flow, route reads notes again, and the writer goes on.
      const answers = new GrpcMessageCounter();
      const trailers = new Promise<IncomingHttpHeaders>((resolve) =>
        call.stream.once("trailers", resolve),
      );
      const closed = new Promise((resolve) => call.stream.once("close", resolve));
      call.stream.on("data", (chunk: Buffer) => answers.push(chunk));
      call.stream.resume();
      await writeUntilHeldBack(call.stream, writer, notes, makeNote);
      assert.equal(writer.accepted, notes, `the writer stalled again at ${writer.accepted}`);
      call.stream.end();

      const ended = await within(
        Promise.all([trailers, closed]).then(([received]) => received),
        observeLimitMs,
      );
      console.log(
        `resume: held at ${heldAt} notes, then ${writer.accepted} accepted and ` +
          `${answers.count} of ${expected} answers read`,
      );
      assert.ok(ended, `the chat did not end; ${answers.count} of ${expected} answers read`);
      assert.equal(ended["grpc-status"], "0", String(ended["grpc-message"]));
      assert.equal(answers.count, expected);
      assert.equal(answers.leftover, 0);
    } finally {
      await call.cancel();
    }
  });
});
