import type { AddressInfo } from "node:net";
import { createServer } from "node:net";

/**
 * A port free right now on 127.0.0.1, for a service that must know its URL (its token
 * audience) before it starts.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}
