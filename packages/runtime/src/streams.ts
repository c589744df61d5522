// Flow control helpers: never let a slow reader make us buffer a whole stream.
import type { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { StatusError, toStatus } from "./errors.js";

/**
 * Writes one message and, when the stream's buffer is full, waits until it drains.
 * Rejects with CANCELLED when the stream closes first (the peer went away).
 */
export async function writeInOrder(stream: Writable, message: unknown): Promise<void> {
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
