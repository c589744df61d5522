// Flow control helpers: never let a slow reader make us buffer a whole stream.
import type { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { StatusError, toStatus } from "./errors.js";

/**
 * Writes one message and, when the stream's buffer is full, waits until it drains.
 * Rejects with CANCELLED when the stream closes first (the peer went away).
 */
export async function writeWithBackpressure(stream: Writable, message: unknown): Promise<void> {
  if (stream.destroyed || stream.writableEnded) throw streamClosed();
  if (stream.write(message)) return;
  await new Promise<void>((resolve, reject) => {
    const settle = (drained: boolean) => {
      stream.off("drain", onDrain);
      stream.off("close", onClose);
      drained ? resolve() : reject(streamClosed());
    };
    const onDrain = () => settle(true);
    const onClose = () => settle(false);
    stream.on("drain", onDrain);
    stream.on("close", onClose);
  });
}

function streamClosed(): StatusError {
  return new StatusError(grpc.status.CANCELLED, "the call ended before the message was sent");
}

/** Ends a server stream with a status derived from `error` (a StatusError keeps its code). */
export function endWithError(
  call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
  error: unknown,
): void {
  if (call.cancelled || call.writableEnded) return;
  const status = toStatus(error);
  call.emit("error", { code: status.code, details: status.details });
}

/**
 * Writes one message and resolves only when grpc-js has passed it to HTTP/2 (the write's
 * callback), not merely buffered it: for a sender that wants at most one message in flight.
 */
export function writeAndWait(stream: Writable, message: unknown): Promise<void> {
  if (stream.destroyed || stream.writableEnded) return Promise.reject(streamClosed());
  return new Promise((resolve, reject) => {
    const onClose = () => reject(streamClosed());
    stream.once("close", onClose);
    stream.write(message, (error) => {
      stream.off("close", onClose);
      error ? reject(streamClosed()) : resolve();
    });
  });
}

type ServerStream =
  | grpc.ServerWritableStream<unknown, unknown>
  | grpc.ServerDuplexStream<unknown, unknown>;

/**
 * Long-lived server streams (watches) that a drain must end at once: each ends with
 * UNAVAILABLE so its client reconnects to another instance, and its `onEnd` (cancel the
 * upstream call, unsubscribe) runs.
 */
export class OpenStreams {
  private readonly streams = new Map<ServerStream, (() => void) | undefined>();

  add(call: ServerStream, onEnd?: () => void): void {
    this.streams.set(call, onEnd);
    call.on("close", () => this.streams.delete(call));
  }

  get size(): number {
    return this.streams.size;
  }

  endAll(details: string): void {
    for (const [call, onEnd] of this.streams) {
      endWithError(call, new StatusError(grpc.status.UNAVAILABLE, details));
      onEnd?.();
    }
    this.streams.clear();
  }
}
