// Message-by-message forwarding between a call we serve and the call we made to a peer,
// with flow control in both directions: when the side we write to is full, we stop reading
// the side we read from, so HTTP/2 flow control pushes back to the sender and the gateway
// never buffers a whole stream. Cancellation and deadline reach the peer call through
// grpc-js's `parent` call option, set where the peer call is made.
import type { Readable, Writable } from "node:stream";
import { callContextOf, endWithError, fromPeer, halfCloseSettled } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";

/**
 * Pipes `from` into `to`, pausing `from` while `to` is full; a message `map` turns into
 * undefined is not passed on. Does not end `to`. Returns a function that stops the pipe for
 * good (no later 'drain' resumes it).
 */
function pipeWithBackpressure<In, Out>(
  from: Readable,
  to: Writable,
  map: (message: In) => Out | undefined,
) {
  let stopped = false;
  const resume = () => {
    if (!stopped) from.resume();
  };
  const onData = (message: In) => {
    if (to.destroyed || to.writableEnded) return;
    const mapped = map(message);
    if (mapped === undefined || stopped) return;
    if (!to.write(mapped)) {
      from.pause();
      to.once("drain", resume);
    }
  };
  const stop = () => {
    stopped = true;
    from.off("data", onData);
    from.pause();
    to.off("drain", resume);
  };
  from.on("data", onData);
  to.once("close", stop);
  return stop;
}

/**
 * Forwards a peer's response stream to our caller, then its outcome: OK ends our stream,
 * any other status ends it with the same code and the peer named in the details.
 */
export function forwardResponses<In, Out>(
  peerName: string,
  upstream: grpc.ClientReadableStream<In> | grpc.ClientDuplexStream<unknown, In>,
  call: grpc.ServerWritableStream<unknown, Out> | grpc.ServerDuplexStream<unknown, Out>,
  map: (message: In) => Out,
): void {
  pipeWithBackpressure(upstream, call, map);
  let status: grpc.StatusObject | undefined;
  let allRead = false;
  const finish = () => {
    // Only when both the messages and the status have arrived, so no message is cut off.
    if (!status || !allRead) return;
    if (status.code === grpc.status.OK) call.end();
    else endWithError(call, fromPeer(peerName, status));
  };
  // The 'status' event carries the outcome; 'error' repeats it for non-OK codes.
  upstream.on("error", () => {});
  upstream.on("status", (received: grpc.StatusObject) => {
    status = received;
    finish();
  });
  upstream.on("end", () => {
    allRead = true;
    finish();
  });
}

export interface ForwardRequestsOptions<Out> {
  /** A message to send the peer after the caller's last one, when the caller's stream ends. */
  lastMessage?: () => Out | undefined;
}

/**
 * Forwards our caller's request stream to the peer and half-closes the peer call at the end.
 * A half-close that comes with a reset is the caller's cancel (a grpc-js client sends both:
 * end-of-input.ts): then the peer call is cancelled, never half-closed, so the peer cannot
 * finish a call its client abandoned. Returns a function that stops reading from the caller
 * (when the peer call is already over).
 */
export function forwardRequests<In, Out>(
  call: grpc.ServerReadableStream<In, unknown> | grpc.ServerDuplexStream<In, unknown>,
  upstream: grpc.ClientWritableStream<Out> | grpc.ClientDuplexStream<Out, unknown>,
  map: (message: In) => Out | undefined,
  options: ForwardRequestsOptions<Out> = {},
): () => void {
  // The served call's context, explicitly: 'end' can fire after a resume from the peer's
  // 'drain', in another call's async context.
  const served = callContextOf(call);
  const stop = pipeWithBackpressure(call, upstream, map);
  call.on("end", async () => {
    const complete = await halfCloseSettled(served);
    if (upstream.writableEnded || upstream.destroyed) return;
    if (!complete) {
      upstream.cancel();
      return;
    }
    const last = options.lastMessage?.();
    if (last !== undefined) upstream.write(last);
    upstream.end();
  });
  return stop;
}
