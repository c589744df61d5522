// The gateway's pass-through methods: their gateway.v1 request and response messages have the
// same wire layout as the peer method's (the same fields, numbers and types: a test compares
// the descriptors), so the gateway passes the bytes on unread, as a bare proxy does, instead
// of decoding every message and encoding it again (on a ListFeatures of 150 features or a
// RecordRoute of 1,000 points that work is most of a proxy's CPU). grpc-js takes a serializer
// and a deserializer per method (a service definition's request/response(De)serialize, a
// client's makeXRequest arguments): here they keep the bytes as they are.
import type * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import type { ServiceName } from "./index.js";

/** gateway.v1 method → the peer service and method it passes through to. */
export const passThroughMethods = {
  GetFeature: { service: "routeguide.v1.RouteGuideService", method: "GetFeature" },
  ListFeatures: { service: "routeguide.v1.RouteGuideService", method: "ListFeatures" },
  RecordRoute: { service: "routeguide.v1.RouteGuideService", method: "RecordRoute" },
  RouteChat: { service: "routeguide.v1.RouteGuideService", method: "RouteChat" },
  WatchStats: { service: "stats.v1.StatsService", method: "WatchStats" },
} as const satisfies Record<string, { service: ServiceName; method: string }>;

export type PassThroughMethod = keyof typeof passThroughMethods;

/** The peer method's path, as grpc-js's makeXRequest takes it. */
export function peerPath(method: PassThroughMethod): string {
  const { service, method: name } = passThroughMethods[method];
  return `/${service}/${name}`;
}

/** Bytes out as they came in: the serializer and deserializer of a pass-through message. */
export const keepBytes = (bytes: Buffer): Buffer => bytes;

/**
 * Checks that `bytes` is a well-formed protobuf message at its top level (every tag, length
 * and varint complete, no wire type that does not exist) and returns it; throws otherwise.
 * As a deserializer on the gateway's side it keeps grpc-js's answer to bytes that cannot be
 * parsed: INTERNAL "Error deserializing request", from the gateway itself. Fields inside
 * nested messages are left to the peer, which decodes them.
 */
export function wellFormed(bytes: Buffer): Buffer {
  const reader = protobuf.Reader.create(bytes);
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag >>> 3 === 0) throw new Error(`field number 0 at offset ${reader.pos}`);
    reader.skipType(tag & 7);
  }
  return bytes;
}

/** What a RecordRouteRequest's bytes carry, read without decoding the point. */
export interface RecordRouteRequestShape {
  hasPoint: boolean;
  endOfRoute: boolean;
}

// routeguide.v1.RecordRouteRequest (and gateway.v1's, the same): point = 1, end_of_route = 2.
const pointField = 1;
const endOfRouteField = 2;

/** A RecordRouteRequest whose known fields come with another wire type than the contract's. */
export class WrongWireType extends Error {
  constructor(readonly field: string) {
    super(`${field} has the wrong wire type`);
    this.name = "WrongWireType";
  }
}

const varint = 0;
const lengthDelimited = 2;

/**
 * Reads which of RecordRouteRequest's fields are set; throws on malformed bytes, and
 * WrongWireType when point or end_of_route come with another wire type than the contract's:
 * protobufjs's decoder (route's) reads a known field whatever its wire type, so bytes this
 * function read as "no end" could be an end_of_route to route.
 */
export function recordRouteRequestShape(bytes: Buffer): RecordRouteRequestShape {
  const reader = protobuf.Reader.create(bytes);
  const shape = { hasPoint: false, endOfRoute: false };
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === 0) throw new Error(`field number 0 at offset ${reader.pos}`);
    if (field === endOfRouteField) {
      if (wireType !== varint) throw new WrongWireType("end_of_route");
      // proto3: the last value of a repeated scalar wins.
      shape.endOfRoute = reader.bool();
    } else {
      if (field === pointField) {
        if (wireType !== lengthDelimited) throw new WrongWireType("point");
        shape.hasPoint = true;
      }
      reader.skipType(wireType);
    }
  }
  return shape;
}

/** RecordRouteRequest{end_of_route: true}, encoded. */
export const endOfRouteBytes: Buffer = Buffer.from(
  protobuf.Writer.create()
    .uint32((endOfRouteField << 3) | 0)
    .bool(true)
    .finish(),
);

/**
 * `definition` with the pass-through methods' messages kept as bytes: requests checked to be
 * well-formed (wellFormed), responses written as they came from the peer.
 */
export function withPassThrough(definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  // biome-ignore lint/suspicious/noExplicitAny: methods of either kind: messages, or bytes
  const copy: Record<string, grpc.MethodDefinition<any, any>> = { ...definition };
  for (const method of Object.keys(passThroughMethods)) {
    const original = definition[method];
    if (!original) throw new Error(`the gateway contract has no method ${method}`);
    copy[method] = {
      ...original,
      requestDeserialize: wellFormed,
      requestSerialize: keepBytes,
      responseSerialize: keepBytes,
      responseDeserialize: keepBytes,
    };
  }
  return copy as grpc.ServiceDefinition;
}
