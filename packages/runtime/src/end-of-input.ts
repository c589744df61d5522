// When is a client stream really over? A server learns that its client has sent everything
// from the half-close (END_STREAM), and that its client gave up from a reset (RST_STREAM). Some
// clients send both when they cancel:
//
// - grpc-js cancels a call with node:http2's `Http2Stream.close(NGHTTP2_CANCEL)`
//   (subchannel-call.ts, destroyHttp2Stream), and Node's closeStream() ends the writable side
//   first when it is still open (`if (!ending) stream.end()`, lib/internal/http2/core.js) and
//   submits RST_STREAM right after. On the wire: END_STREAM, then RST_STREAM.
// - gRPC's C-core (and Go, Java) send RST_STREAM alone.
//
// Node reads the two frames as they arrive, and holds the reset back behind a write in
// progress (client-read-barrier.ts); grpc-js passes the half-close to the handler at once. A
// handler that answered there would answer a cancelled call whose reset is on its way. So
// before a half-close is taken as the end of a complete request, this waits until everything
// the client sent before acknowledging a PING sent now has been read: a reset that came with
// the half-close is seen. One that the client sends later is a cancel after its request was
// complete, which no server can tell from a client that gave up while the answer was on its
// way (README: "Counting"). Where no PING can be acknowledged, the input already received is
// read instead (two more passes of the event loop's poll phase).
import { setImmediate as nextTurn } from "node:timers/promises";
import { type CallContext, callWasReset } from "./call-context.js";

/** Poll phases to let pass without a barrier: the reset may be in the next read. */
const pollsToSettle = 2;

/**
 * Resolves true if `call`'s request stream ended with a half-close that no reset followed (see
 * above); false if the client reset the stream.
 */
export async function halfCloseSettled(call: CallContext | undefined): Promise<boolean> {
  if (callWasReset(call)) return false;
  const barrierPassed = (await call?.readBarrier?.()) ?? false;
  // The ACK and a reset after it can share a read: its frames are handled after the ACK's
  // callback has run. An immediate scheduled from there runs before the next poll phase; each
  // further one runs after one.
  const turns = barrierPassed ? 1 : pollsToSettle + 1;
  for (let turn = 0; turn < turns; turn += 1) {
    if (callWasReset(call)) return false;
    await nextTurn();
  }
  return !callWasReset(call);
}
