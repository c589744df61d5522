// The one fault proxy of the repository: a TCP proxy on 127.0.0.1 that a test puts between a
// client and a server (stats in front of PostgreSQL, route in front of stats) and breaks on
// purpose (`tc netem` does not work where the tests run). Every fault is a method call:
//
//   down() / up()     drop every connection and stop listening (connecting is refused), then
//                     listen again on the same port: the server went away and came back;
//   stall() / resume() connections stay open but nothing gets through either way (the server
//                     hangs), or only one way: stall("toClient") lets requests reach the
//                     server and holds its answers back (the answers are lost if the
//                     connections are then dropped); resume() delivers what was held back,
//                     in order, as after a pause;
//   delayMs = n       every chunk is delivered n ms after it arrived, either way, in order
//                     (a slow link; 0, the default, forwards at once);
//   drop()            close every open connection now (FIN), still listening: new ones work;
//   reset()           abort every open connection now with a TCP RST (resetAndDestroy);
//   resetEvery = n    reset every nth new connection as soon as it is accepted (0: none).
//
// Either end of a connection going away takes the other with it, as a real network path would.
import net, { type AddressInfo } from "node:net";

/** Which way bytes go: from the client to the server, or back. */
export type Direction = "toServer" | "toClient";

/** One way of one connection: chunks waiting for their time (or for resume()), in order. */
interface Lane {
  direction: Direction;
  to: net.Socket;
  queue: { at: number; chunk: Buffer }[];
  timer: NodeJS.Timeout | undefined;
}

export class FaultProxy {
  /** The port it listens on; kept across down() and up(), so clients find it again. */
  port = 0;
  /** Each chunk is delivered this many ms after it arrived (both ways); 0 forwards at once. */
  delayMs = 0;
  /** Resets every nth new connection as soon as it is accepted; 0 resets none. */
  resetEvery = 0;
  /** Chunks that arrived while stalled (to tell that something is in flight). */
  held = 0;
  /** Connections accepted so far, and how many of them were reset on accepting. */
  accepted = 0;
  refused = 0;
  private server: net.Server | undefined;
  private readonly stalled = new Set<Direction>();
  /** Every open socket, both ends of each connection. */
  private readonly sockets = new Set<net.Socket>();
  private readonly lanes = new Set<Lane>();

  constructor(private readonly upstream: { host: string; port: number }) {}

  /** Listens on 127.0.0.1: a free port the first time, the same port after down(). */
  async up(): Promise<void> {
    if (this.server) return;
    this.stalled.clear();
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
    this.drop();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Closes every open connection now (what was in flight is lost); still listening. */
  drop(): void {
    this.closeAll((socket) => socket.destroy());
  }

  /** Aborts every open connection now with a TCP RST (what was in flight is lost). */
  reset(): void {
    this.closeAll((socket) => socket.resetAndDestroy());
  }

  /** From now on, forwards nothing either way (or one way), on open and new connections alike. */
  stall(direction: Direction | "both" = "both"): void {
    if (direction !== "toClient") this.stalled.add("toServer");
    if (direction !== "toServer") this.stalled.add("toClient");
  }

  /** Forwards again both ways, starting with what was held back. */
  resume(): void {
    this.stalled.clear();
    for (const lane of this.lanes) this.pump(lane);
  }

  private closeAll(close: (socket: net.Socket) => void): void {
    for (const lane of this.lanes) clearTimeout(lane.timer);
    this.lanes.clear();
    for (const socket of this.sockets) if (!socket.destroyed) close(socket);
    this.sockets.clear();
  }

  private accept(client: net.Socket): void {
    this.accepted += 1;
    client.on("error", () => {});
    if (this.resetEvery > 0 && this.accepted % this.resetEvery === 0) {
      this.refused += 1;
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.upstream.port, this.upstream.host);
    for (const [from, to, direction] of [
      [client, upstream, "toServer"],
      [upstream, client, "toClient"],
    ] as const) {
      const lane: Lane = { direction, to, queue: [], timer: undefined };
      this.lanes.add(lane);
      this.sockets.add(from);
      from.on("data", (chunk: Buffer) => {
        if (this.stalled.has(direction)) this.held += 1;
        lane.queue.push({ at: Date.now() + this.delayMs, chunk });
        this.pump(lane);
      });
      from.on("close", () => {
        this.sockets.delete(from);
        this.lanes.delete(lane);
        clearTimeout(lane.timer);
        to.destroy();
      });
      from.on("error", () => {});
    }
  }

  /** Delivers a lane's chunks whose time has come, in order; waits for the next one. */
  private pump(lane: Lane): void {
    clearTimeout(lane.timer);
    lane.timer = undefined;
    if (this.stalled.has(lane.direction) || !this.lanes.has(lane)) return;
    const now = Date.now();
    while (lane.queue.length > 0 && (lane.queue[0]?.at ?? 0) <= now) {
      const next = lane.queue.shift() as { chunk: Buffer };
      if (!lane.to.destroyed) lane.to.write(next.chunk);
    }
    const head = lane.queue[0];
    if (head) lane.timer = setTimeout(() => this.pump(lane), head.at - now);
  }
}
