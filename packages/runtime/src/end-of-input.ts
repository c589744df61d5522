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
// Node reads the two frames as they arrive; grpc-js then passes the half-close to the handler
// at once. A handler that answered there would answer a cancelled call whose reset is already
// in this process's socket buffer, or about to be. So before a half-close is taken as the end
// of a complete request, the input that has already arrived is read: two more passes of the
// event loop's poll phase, where Node reads sockets. Not a timer: a reset that the client sent
// with its half-close is seen; one sent later is a cancel after the request was complete, which
// no server can tell from a client that gave up while the answer was on its way (README:
// "Counting").
import { setImmediate as nextTurn } from "node:timers/promises";
import { type CallContext, callWasReset } from "./call-context.js";

/** Poll phases to let pass: the reset may arrive in the read after the half-close's. */
const pollsToSettle = 2;

/**
 * Resolves true if `call`'s request stream ended with a half-close that no reset followed once
 * the input already received was read; false if the client reset the stream.
 */
export async function halfCloseSettled(call: CallContext | undefined): Promise<boolean> {
  // An immediate scheduled from a nextTick (where stream 'end' handlers run) runs before the
  // next poll phase; each further one runs after one.
  for (let turn = 0; turn <= pollsToSettle; turn += 1) {
    if (callWasReset(call)) return false;
    await nextTurn();
  }
  return !callWasReset(call);
}
