// Events stats refuses travel in the contract (RecordEventsResponse.rejected, stats.proto), not
// in error text. Real processes, real HTTP/2: route (its feature data set holds names past
// stats' limits) queues look-ups while it cannot reach stats, then reaches it, and one batch
// mixes good and bad events: stats counts the good ones, route drops exactly the bad ones and
// sends none of them again. Then a client that knows only the .proto's field numbers calls RecordEvents
// on bare HTTP/2 and decodes the answer's bytes itself, as one in another language would.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { createServer, type Server, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { freePort, type ServiceProcess, startService } from "@cloudrun-grpc/local-stack";
import {
  createRouteGuideClient,
  createStatsClient,
  type RouteGuideServiceClient,
  type routeguide,
  type StatsServiceClient,
  type stats,
} from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { deadline, eventually, unary } from "./support/grpc.js";
import { grpcFrame } from "./support/raw-grpc.js";
import { describeLocalOnly } from "./support/target.js";

type Point = { latitude: number; longitude: number };

const unnamedPoint: Point = { latitude: 10_000_000, longitude: 10_000_000 };
const good = [
  { name: "Old Mill", location: { latitude: 400_000_000, longitude: -740_000_000 } },
  { name: "Stone Bridge", location: { latitude: 401_000_000, longitude: -741_000_000 } },
];
// route takes any non-empty name; stats allows at most 200 characters and no NUL.
const bad = [
  { name: "L".repeat(201), location: { latitude: 402_000_000, longitude: -742_000_000 } },
  { name: "Bad\u0000Name", location: { latitude: 403_000_000, longitude: -743_000_000 } },
];

interface LogLine {
  message?: string;
  severity?: string;
  [field: string]: unknown;
}

const parsed = (lines: string[]): LogLine[] =>
  lines.flatMap((line) => {
    try {
      return [JSON.parse(line) as LogLine];
    } catch {
      return [];
    }
  });

describeLocalOnly("events stats rejects", () => {
  const dir = mkdtempSync(join(tmpdir(), "rejected-reports-"));
  let route: ServiceProcess | undefined;
  let statsProcess: ServiceProcess | undefined;
  let link: Server | undefined;
  let routeClient: RouteGuideServiceClient | undefined;
  let statsClient: StatsServiceClient | undefined;
  after(async () => {
    routeClient?.close();
    statsClient?.close();
    link?.close();
    await route?.stop();
    await statsProcess?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a batch with invalid events: stats counts the rest, route drops exactly those and never resends them", async () => {
    const featuresFile = join(dir, "features.json");
    writeFileSync(featuresFile, JSON.stringify([...good, ...bad]));
    // stats is up and ready first, so it answers a batch as soon as one reaches it; route
    // reaches it through a link on a port that listens only later.
    statsProcess = await startService({ name: "stats" });
    const statsPort = statsProcess.port;
    const linkPort = await freePort();
    route = await startService({
      name: "route",
      env: { STATS_URL: `http://127.0.0.1:${linkPort}`, ROUTE_FEATURES_FILE: featuresFile },
    });
    routeClient = createRouteGuideClient(
      `127.0.0.1:${route.port}`,
      grpc.credentials.createInsecure(),
    );
    const client = routeClient;
    const getFeature = (point: Point) =>
      unary<routeguide.GetFeatureResponse__Output>((done) =>
        client.GetFeature({ point }, deadline(), done),
      );

    // The first report goes out alone and waits for stats; the next ones queue behind it and
    // go out together once it is reachable: good and bad in one batch.
    await getFeature(unnamedPoint);
    const answers = await Promise.all(
      [good[0], bad[0], good[1], bad[1]].map((feature) =>
        getFeature((feature as { location: Point }).location),
      ),
    );
    assert.deepEqual(
      answers.map((answer) => answer.feature?.name),
      [good[0]?.name, bad[0]?.name, good[1]?.name, bad[1]?.name],
      "every client call is answered, whatever stats will make of its report",
    );

    link = await openLink(linkPort, statsPort);
    statsClient = createStatsClient(`127.0.0.1:${statsPort}`, grpc.credentials.createInsecure());
    const reader = statsClient;
    const rejectionLines = () =>
      parsed(route?.lines ?? []).filter((line) =>
        line.message?.startsWith("stats rejected 2 report(s) of a batch as invalid"),
      );
    await eventually(
      async () => rejectionLines().length,
      (count) => count > 0,
      20_000,
    );
    const snapshot = (
      await unary<stats.GetStatsResponse__Output>((done) =>
        reader.GetStats({ topN: 10 }, deadline(), done),
      )
    ).snapshot;

    // Counted: the three good look-ups, each once; none of the bad ones.
    assert.equal(Number(snapshot?.featureLookups), 3);
    assert.deepEqual(
      snapshot?.topFeatures.map((entry) => [entry.name, Number(entry.lookups)]).sort(),
      [
        ["", 1],
        ["Old Mill", 1],
        ["Stone Bridge", 1],
      ],
    );

    // route said which reports it dropped and why, from the answer's fields.
    const [rejection, ...more] = rejectionLines();
    assert.equal(more.length, 0, "one batch held both bad events");
    assert.equal(rejection?.severity, "ERROR");
    const dropped = rejection?.events as { id: string; field: string; description: string }[];
    assert.equal(dropped.length, 2);
    for (const event of dropped) {
      assert.match(event.field, /^events\[\d+\]\.feature_looked_up\.feature\.name$/);
      assert.ok(event.description.startsWith(event.field), event.description);
      assert.ok(typeof event.id === "string" && event.id.length > 0, "names the event's id");
    }
    assert.deepEqual(
      dropped.map((event) => (event.description.includes("U+0000") ? "NUL" : "too long")).sort(),
      ["NUL", "too long"],
    );
    assert.ok(dropped.some((event) => event.description.includes("at most 200 characters")));

    // stats refused them in a batch with good events, once: route sent none of them again.
    const refusals = parsed(statsProcess.lines).filter((line) =>
      line.message?.startsWith("refused 2 invalid event(s) of a batch"),
    );
    assert.equal(refusals.length, 1, JSON.stringify(refusals));
    const refusal = refusals[0] as LogLine;
    assert.equal(refusal.severity, "WARNING");
    assert.ok(Number(refusal.events) >= 4, `the batch held the good events too: ${refusal.events}`);
    assert.equal(refusal.accepted, Number(refusal.events) - 2);
    assert.equal(
      parsed(statsProcess.lines).filter((line) => line.message?.startsWith("refused")).length,
      1,
      "no other batch was refused",
    );
  });

  test("a client with only the .proto's field numbers reads which events were rejected from the answer's bytes", async () => {
    assert.ok(statsProcess, "stats runs (the test before started it)");
    const request = Buffer.concat([
      field(1, lookupEvent("foreign-ok-1", "Foreign Mill", { latitude: 1, longitude: 2 })),
      field(1, Buffer.concat([field(1, "foreign-no-kind")])),
      field(1, lookupEvent("foreign-ok-2", "", { latitude: 3, longitude: 4 })),
      field(1, lookupEvent("foreign-off-map", "", { latitude: 900_000_001, longitude: 0 })),
    ]);
    const answer = await rawUnary(
      `http://127.0.0.1:${statsProcess.port}`,
      "/stats.v1.StatsService/RecordEvents",
      request,
    );
    assert.equal(answer.grpcStatus, "0", `grpc-status ${answer.grpcStatus}: ${answer.message}`);

    // RecordEventsResponse: 1 accepted (varint), 2 duplicates (varint), 3 rejected
    // (RejectedEvent: 1 index, varint; 2 field, string; 3 description, string).
    const response = readFields(answer.message);
    assert.deepEqual(response.varints.get(1), [2]);
    assert.equal(response.varints.get(2)?.[0] ?? 0, 0, "no duplicates (0 may be left out)");
    const rejected = (response.bytes.get(3) ?? []).map((bytes) => {
      const entry = readFields(bytes);
      return {
        index: entry.varints.get(1)?.[0] ?? 0,
        field: entry.bytes.get(2)?.[0]?.toString("utf8"),
        description: entry.bytes.get(3)?.[0]?.toString("utf8"),
      };
    });
    assert.deepEqual(rejected, [
      {
        index: 1,
        field: "events[1].kind",
        description:
          "events[1].kind must be route_recorded or feature_looked_up (the event has neither)",
      },
      {
        index: 3,
        field: "events[3].feature_looked_up.feature.location.latitude",
        description:
          "events[3].feature_looked_up.feature.location.latitude must be from -900000000 to " +
          "900000000 (E7 degrees), got 900000001",
      },
    ]);
  });
});

/** A TCP link that listens on `port` and passes each connection on to `to` (both loopback). */
async function openLink(port: number, to: number): Promise<Server> {
  const server = createServer((socket) => {
    const upstream = tcpConnect(to, "127.0.0.1");
    socket.pipe(upstream).pipe(socket);
    socket.on("error", () => upstream.destroy());
    upstream.on("error", () => socket.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  return server;
}

// A protobuf writer and reader for this one contract, from the wire format alone.

function varint(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** A length-delimited field (wire type 2): a string or an embedded message. */
function field(number: number, value: string | Buffer): Buffer {
  const payload = typeof value === "string" ? Buffer.from(value, "utf8") : value;
  return Buffer.concat([varint((number << 3) | 2), varint(payload.length), payload]);
}

/** An int32 field (wire type 0) of a non-negative value; 0 is left out, as proto3 does. */
function int32(number: number, value: number): Buffer {
  return value === 0 ? Buffer.alloc(0) : Buffer.concat([varint(number << 3), varint(value)]);
}

/** stats.v1.Event { id = 1, feature_looked_up = 4 { feature = 1 { name = 1, location = 2 } } }. */
function lookupEvent(id: string, name: string, location: Point): Buffer {
  const point = Buffer.concat([int32(1, location.latitude), int32(2, location.longitude)]);
  const feature = Buffer.concat([name ? field(1, name) : Buffer.alloc(0), field(2, point)]);
  return Buffer.concat([field(1, id), field(4, field(1, feature))]);
}

interface Fields {
  varints: Map<number, number[]>;
  bytes: Map<number, Buffer[]>;
}

/** The fields of one message, by number (varints and length-delimited only: all this reads). */
function readFields(message: Buffer): Fields {
  const fields: Fields = { varints: new Map(), bytes: new Map() };
  let offset = 0;
  const readVarint = () => {
    let value = 0;
    let scale = 1;
    for (;;) {
      const byte = message[offset++];
      if (byte === undefined) throw new Error("truncated varint");
      value += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) return value;
      scale *= 128;
    }
  };
  while (offset < message.length) {
    const key = readVarint();
    const number = Math.floor(key / 8);
    const wireType = key % 8;
    if (wireType === 0) {
      fields.varints.set(number, [...(fields.varints.get(number) ?? []), readVarint()]);
    } else if (wireType === 2) {
      const length = readVarint();
      const value = message.subarray(offset, offset + length);
      offset += length;
      fields.bytes.set(number, [...(fields.bytes.get(number) ?? []), value]);
    } else {
      throw new Error(`field ${number}: wire type ${wireType} is not in this contract`);
    }
  }
  return fields;
}

/** One unary gRPC call on bare HTTP/2: the answer's one message and its grpc-status. */
function rawUnary(
  url: string,
  path: string,
  request: Buffer,
): Promise<{ grpcStatus: string | undefined; message: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
    });
    const chunks: Buffer[] = [];
    let grpcStatus: string | undefined;
    stream.on("response", (headers) => {
      // A trailers-only answer (a failure) carries its status in the headers.
      grpcStatus ??= headers["grpc-status"] as string | undefined;
    });
    stream.on("trailers", (trailers) => {
      grpcStatus = trailers["grpc-status"] as string | undefined;
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", reject);
    stream.on("end", () => {
      session.close();
      const body = Buffer.concat(chunks);
      // One length-prefixed message: flag (0, not compressed), 4-byte length, bytes.
      if (body.length > 0 && body[0] !== 0) reject(new Error("a compressed answer"));
      resolve({
        grpcStatus,
        message: body.subarray(5, 5 + (body.length >= 5 ? body.readUInt32BE(1) : 0)),
      });
    });
    stream.end(grpcFrame(request));
  });
}
