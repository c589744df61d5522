// HTTP/2 spoken frame by frame over a plain TCP socket, for tests that must do what node:http2
// (nghttp2) will not: open more streams than the server's SETTINGS_MAX_CONCURRENT_STREAMS
// allows (nghttp2 holds the extra ones back on the client's side). Only what those tests need:
// HEADERS (HPACK literals without Huffman or indexing, which every decoder takes), DATA,
// SETTINGS and its ACK; frames from the server are parsed by type, their header blocks not
// decoded.
import { connect, type Socket } from "node:net";

export const frameType = {
  data: 0x0,
  headers: 0x1,
  rstStream: 0x3,
  settings: 0x4,
  ping: 0x6,
  goaway: 0x7,
  windowUpdate: 0x8,
} as const;

const flags = { endStream: 0x1, ack: 0x1, endHeaders: 0x4 } as const;

/** SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2). */
export const settingsMaxConcurrentStreams = 0x3;

/** RFC 9113 §7 error codes the tests look for (or send). */
export const h2Error = {
  noError: 0x0,
  protocolError: 0x1,
  refusedStream: 0x7,
  cancel: 0x8,
} as const;

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

function frame(type: number, frameFlags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header.writeUInt8(type, 3);
  header.writeUInt8(frameFlags, 4);
  header.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([header, payload]);
}

/** An HPACK integer with an n-bit prefix (RFC 7541 §5.1). */
function hpackInteger(value: number, prefixBits: number, firstByte: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [firstByte | value];
  const bytes = [firstByte | max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return bytes;
}

/** A header block of literal fields without indexing, new names, no Huffman (RFC 7541 §6.2.2). */
export function headerBlock(headers: [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const nameBytes = Buffer.from(name);
    const valueBytes = Buffer.from(value);
    parts.push(
      Buffer.from([0x00, ...hpackInteger(nameBytes.length, 7, 0)]),
      nameBytes,
      Buffer.from(hpackInteger(valueBytes.length, 7, 0)),
      valueBytes,
    );
  }
  return Buffer.concat(parts);
}

/** Splits a byte stream into frames as they arrive. */
class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const frames: Frame[] = [];
    while (this.pending.length >= 9) {
      const length = this.pending.readUIntBE(0, 3);
      if (this.pending.length < 9 + length) break;
      frames.push({
        type: this.pending.readUInt8(3),
        flags: this.pending.readUInt8(4),
        streamId: this.pending.readUInt32BE(5) & 0x7fffffff,
        payload: this.pending.subarray(9, 9 + length),
      });
      this.pending = this.pending.subarray(9 + length);
    }
    return frames;
  }
}

/**
 * A client HTTP/2 connection (h2c, prior knowledge) driven frame by frame. Every frame the
 * server sends is kept in `frames`; `until` waits for a condition on them.
 */
export class RawH2Connection {
  readonly frames: Frame[] = [];
  closed = false;
  private readonly socket: Socket;
  private readonly waiters = new Set<() => void>();
  private nextStreamId = 1;

  private constructor(socket: Socket) {
    this.socket = socket;
    const reader = new FrameReader();
    socket.on("data", (chunk: Buffer) => {
      for (const received of reader.push(chunk)) {
        this.frames.push(received);
        // A PING must be answered, or the server may think the connection dead.
        if (received.type === frameType.ping && !(received.flags & flags.ack)) {
          socket.write(frame(frameType.ping, flags.ack, 0, received.payload));
        }
      }
      this.notify();
    });
    socket.on("close", () => {
      this.closed = true;
      this.notify();
    });
    socket.on("error", () => {});
  }

  /** Connects, sends the preface and an empty SETTINGS, and waits for the server's SETTINGS. */
  static async open(host: string, port: number): Promise<RawH2Connection> {
    const socket = connect({ host, port });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const connection = new RawH2Connection(socket);
    socket.write(
      Buffer.concat([
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        frame(frameType.settings, 0, 0, Buffer.alloc(0)),
      ]),
    );
    await connection.until(() => connection.serverSettings() !== undefined);
    return connection;
  }

  /** The values of the server's first (non-ACK) SETTINGS frame, by identifier. */
  serverSettings(): Map<number, number> | undefined {
    const settings = this.frames.find(
      (received) => received.type === frameType.settings && !(received.flags & flags.ack),
    );
    if (!settings) return undefined;
    const values = new Map<number, number>();
    for (let offset = 0; offset + 6 <= settings.payload.length; offset += 6) {
      values.set(settings.payload.readUInt16BE(offset), settings.payload.readUInt32BE(offset + 2));
    }
    return values;
  }

  /** Acknowledges the server's SETTINGS: from then on the server holds us to them. */
  ackSettings(): void {
    this.socket.write(frame(frameType.settings, flags.ack, 0, Buffer.alloc(0)));
  }

  /**
   * Opens a stream: HEADERS for a gRPC POST to `path` (more headers in `extra`), then `body`
   * as one DATA frame that ends the stream. Returns the stream's id.
   */
  request(authority: string, path: string, body: Buffer, extra: [string, string][] = []): number {
    const streamId = this.openStream(authority, path, extra);
    this.send(streamId, body, true);
    return streamId;
  }

  /**
   * Opens a stream with HEADERS for a gRPC POST to `path` and leaves it open: DATA frames follow
   * with `send`, and it ends with `send(…, true)` (END_STREAM) or `reset` (RST_STREAM alone).
   */
  openStream(authority: string, path: string, extra: [string, string][] = []): number {
    const streamId = this.nextStreamId;
    this.nextStreamId += 2;
    const block = headerBlock([
      [":method", "POST"],
      [":scheme", "http"],
      [":authority", authority],
      [":path", path],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ...extra,
    ]);
    this.socket.write(frame(frameType.headers, flags.endHeaders, streamId, block));
    return streamId;
  }

  /** One DATA frame on an open stream, ending the client's side of it when `end`. */
  send(streamId: number, body: Buffer, end = false): void {
    this.socket.write(frame(frameType.data, end ? flags.endStream : 0, streamId, body));
  }

  /**
   * RST_STREAM alone, with no END_STREAM before it: how gRPC's C-core and other clients cancel
   * a call (node:http2 sends END_STREAM first when a stream's writable side is still open).
   */
  reset(streamId: number, code: number = h2Error.cancel): void {
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(code, 0);
    this.socket.write(frame(frameType.rstStream, 0, streamId, payload));
  }

  /** Whether the server has ended `streamId` (a frame with END_STREAM, or RST_STREAM). */
  ended(streamId: number): boolean {
    return this.frames.some(
      (received) =>
        received.streamId === streamId &&
        (received.type === frameType.rstStream ||
          ((received.type === frameType.headers || received.type === frameType.data) &&
            (received.flags & flags.endStream) !== 0)),
    );
  }

  /** Resolves once `condition()` holds, checked after every batch of frames and on close. */
  until(condition: () => boolean): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (!condition()) return;
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
    });
  }

  /** The frames of one type, optionally on one stream. */
  framesOf(type: number, streamId?: number): Frame[] {
    return this.frames.filter(
      (received) =>
        received.type === type && (streamId === undefined || received.streamId === streamId),
    );
  }

  /** Closes the TCP connection (every stream on it ends) and waits until it is closed. */
  async close(): Promise<void> {
    if (this.closed) return;
    const closed = this.until(() => this.closed);
    this.socket.destroy();
    await closed;
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}
