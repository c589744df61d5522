// Idempotency keys: a client that cannot know whether a call was done (its connection broke
// mid-call: UNAVAILABLE, read ECONNRESET) repeats it with the same key, and what the call
// causes counts once. The key is the client's, so it is scoped by the client's identity: two
// clients that happen to choose the same key do not cancel each other out.
import { createHash } from "node:crypto";
import { idempotencyKeyHeader } from "@cloudrun-grpc/proto";
import type * as grpc from "@grpc/grpc-js";
import { invalidArgument } from "./errors.js";

/** 1 to 128 visible ASCII characters: a UUID, a hash, an order number. */
const keyPattern = /^[\x21-\x7e]{1,128}$/;

/**
 * The call's idempotency key, undefined when it has none. Throws INVALID_ARGUMENT for a key
 * that is empty, too long, not visible ASCII, or given twice.
 */
export function idempotencyKeyOf(metadata: grpc.Metadata): string | undefined {
  const values = metadata.get(idempotencyKeyHeader);
  if (values.length === 0) return undefined;
  const [key] = values;
  if (values.length > 1 || typeof key !== "string" || !keyPattern.test(key)) {
    throw invalidArgument(
      `${idempotencyKeyHeader} must be one value of 1 to 128 visible ASCII characters`,
    );
  }
  return key;
}

/**
 * A name for what a keyed call of `client` caused (`kind`, e.g. "route"): the same for every
 * repeat of the call, different for another client or kind. A hash, so its length is fixed
 * whatever the key and identity are.
 */
export function idempotentEventId(client: string, kind: string, key: string): string {
  // JSON: the three parts cannot run into each other, whatever they contain.
  const digest = createHash("sha256")
    .update(JSON.stringify([client, kind, key]))
    .digest("hex");
  return `key:${digest}`;
}
