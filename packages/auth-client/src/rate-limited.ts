// Warnings a caller can cause at will (a bad claim, an unreachable key set) are written at most
// once per interval, so nobody can flood the logs; the next one says how many were held back.

/**
 * Wraps `warn`: called at most once per `intervalMs`, with how many calls it held back since
 * its last one (not counting this one).
 */
export function rateLimited<Args extends unknown[]>(
  intervalMs: number,
  warn: (heldBack: number, ...args: Args) => void,
): (...args: Args) => void {
  let lastAt = Number.NEGATIVE_INFINITY;
  let heldBack = 0;
  return (...args) => {
    const now = Date.now();
    if (now - lastAt < intervalMs) {
      heldBack += 1;
      return;
    }
    lastAt = now;
    warn(heldBack, ...args);
    heldBack = 0;
  };
}
