// A TCP proxy in front of the PostgreSQL server that a test can break: cut it (every
// connection dropped, nothing listening: the database went away), bring it back on the same
// port, or stall it (connections stay open, nothing gets through: the database hangs) and
// resume it (what was held back is delivered, as after a pause).
import net, { type AddressInfo } from "node:net";

export class CuttableProxy {
  /** The port it listens on; kept across down() and up(), so clients find it again. */
  port = 0;
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private stalled = false;
  /** Chunks held back while stalled (to tell that a query is in flight). */
  held = 0;
  private readonly heldBack: { to: net.Socket; chunk: Buffer }[] = [];

  constructor(private readonly upstream: { host: string; port: number }) {}

  /** Listens on 127.0.0.1: a free port the first time, the same port after down(). */
  async up(): Promise<void> {
    if (this.server) return;
    this.stalled = false;
    const server = net.createServer((client) => this.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Drops every connection and stops listening: connecting is refused until up(). */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    this.heldBack.length = 0;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** From now on, forwards nothing either way, on open connections and new ones alike. */
  stall(): void {
    this.stalled = true;
  }

  /** Forwards again, starting with what was held back. */
  resume(): void {
    this.stalled = false;
    for (const { to, chunk } of this.heldBack.splice(0)) if (!to.destroyed) to.write(chunk);
  }

  private accept(client: net.Socket): void {
    const upstream = net.connect(this.upstream.port, this.upstream.host);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(from);
      from.on("data", (chunk) => {
        if (!this.stalled) {
          to.write(chunk);
          return;
        }
        this.held += 1;
        this.heldBack.push({ to, chunk });
      });
      // Either end going away takes the other with it, as a real network path would.
      from.on("close", () => {
        this.sockets.delete(from);
        to.destroy();
      });
      from.on("error", () => {});
    }
  }
}
