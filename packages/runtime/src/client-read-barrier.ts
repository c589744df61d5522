// A barrier in a client connection's byte stream: a PING that this server sends and the client
// acknowledges. HTTP/2 frames travel in order on a connection, so once the PING ACK has been
// read, so has everything the client sent before it acknowledged the PING (RFC 9113 §6.7: a
// PING ACK is sent on receipt).
//
// Why it matters: Node's HTTP/2 client (and so grpc-js) cancels a stream whose writable side is
// open by sending END_STREAM and then RST_STREAM, and when a write is in progress on the
// connection it holds the RST_STREAM back until that write completes (node_http2.cc,
// Http2Stream::SubmitRstStream and Http2Session::ClearOutgoing): measured here, 4 ms after the
// END_STREAM on an idle loopback connection with ten calls cancelled at once. A held RST_STREAM
// is handed to nghttp2 when that write completes, before the client's next write is made, so it
// leaves in the same write as the ACK of a PING that reached the client meanwhile, or earlier
// (nghttp2 puts the ACK first within a write: urgent frames lead). The server reads one write
// in one go, so once the ACK of a PING sent after the END_STREAM was read, one more turn of the
// event loop has read the reset that came with it (end-of-input.ts). Split across two reads by
// a real network, the reset could trail the ACK: there the barrier narrows the window.
//
// Through a proxy (Cloud Run's front end) the PING is answered by the proxy, so the barrier
// only covers what the proxy has already passed on: there it narrows the window, it does not
// close it (README: "Counting").
import type * as http2 from "node:http2";

interface SessionPings {
  /** Whether one of our PINGs is unacknowledged on the session. */
  inFlight: boolean;
  /** Waiters for the next PING: registered after the one in flight was sent. */
  waiting: ((acknowledged: boolean) => void)[];
}

const pings = new WeakMap<http2.Http2Session, SessionPings>();

/** An unanswered PING is given up after this long (a dead connection, a peer that never acks). */
export const pingTimeoutMs = 5_000;

/**
 * Resolves true once a PING sent on `session` after this call has been acknowledged, false if
 * none could be (session closed, refused, or no answer within 5 s). Concurrent callers share
 * PINGs: at most one of ours is outstanding per session (Node allows 10 by default).
 */
export function clientReadBarrier(
  session: http2.Http2Session,
  timeoutMs = pingTimeoutMs,
): Promise<boolean> {
  let state = pings.get(session);
  if (!state) {
    state = { inFlight: false, waiting: [] };
    pings.set(session, state);
  }
  const pending = state;
  return new Promise((resolve) => {
    pending.waiting.push(resolve);
    if (!pending.inFlight) sendPing(session, pending, timeoutMs);
  });
}

function sendPing(session: http2.Http2Session, state: SessionPings, timeoutMs: number): void {
  const waiters = state.waiting;
  state.waiting = [];
  state.inFlight = true;
  let settled = false;
  const settle = (acknowledged: boolean) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    state.inFlight = false;
    for (const waiter of waiters) waiter(acknowledged);
    if (state.waiting.length > 0 && !session.destroyed) sendPing(session, state, timeoutMs);
    else for (const waiter of state.waiting.splice(0)) waiter(false);
  };
  const timer = setTimeout(() => settle(false), timeoutMs);
  timer.unref();
  let sent = false;
  try {
    sent = !session.destroyed && session.ping((error) => settle(!error));
  } catch {
    sent = false;
  }
  if (!sent) settle(false);
}
