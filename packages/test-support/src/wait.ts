// Waiting for something asynchronous without sleeping a fixed time: poll until it holds, and
// fail with what was awaited when it does not within the bound.
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";

export async function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5_000,
): Promise<void> {
  const giveUpAt = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > giveUpAt) assert.fail(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await delay(10);
  }
}

/** `promise`, or a failure saying what hung once `ms` have passed. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  const giveUp = new AbortController();
  const deadline = delay(ms, undefined, { signal: giveUp.signal }).then(() => {
    throw new Error(`${what} did not settle within ${ms} ms`);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    giveUp.abort();
    deadline.catch(() => {});
  }
}
