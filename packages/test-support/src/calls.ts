// Small promise helpers over grpc-js calls.
import type * as grpc from "@grpc/grpc-js";

export function unary<Response>(
  start: (callback: grpc.requestCallback<Response>) => unknown,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    start((error, response) => (error ? reject(error) : resolve(response as Response)));
  });
}

/** Reads a whole response stream. */
export async function collect<T>(
  stream: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<unknown, T>,
): Promise<T[]> {
  const messages: T[] = [];
  for await (const message of stream as AsyncIterable<T>) messages.push(message);
  return messages;
}

/** Resolves with the status error a call ends with; rejects if it succeeds. */
export async function failure(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error("expected the call to fail, but it succeeded");
}

export const deadline = (ms = 10_000): grpc.CallOptions => ({ deadline: Date.now() + ms });
