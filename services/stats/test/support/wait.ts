// Waiting for something asynchronous (a NOTIFY, a reconnect) without sleeping a fixed time:
// poll until it holds, and fail with what was awaited when it does not within the bound.
import assert from "node:assert/strict";

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5_000,
): Promise<void> {
  const giveUpAt = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > giveUpAt) assert.fail(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(10);
  }
}

/** `promise`, or a failure saying what hung once `ms` have passed. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
