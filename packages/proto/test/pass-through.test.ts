// The gateway forwards the pass-through methods' bytes unread: that is right only while each
// gateway.v1 message has exactly the peer's wire layout. These tests compare the descriptors,
// so a contract change that breaks the equivalence fails here, naming the field.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { MessageTypeDefinition, ServiceDefinition } from "@grpc/proto-loader";

// biome-ignore lint/suspicious/noExplicitAny: descriptors only, never values
type AnyMessageType = MessageTypeDefinition<any, any>;

import {
  endOfRouteBytes,
  packageDefinition,
  passThroughMethods,
  recordRouteRequestShape,
  serviceNames,
  wellFormed,
} from "../src/index.js";

interface FieldDescriptor {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName: string;
}

function messageType(name: string): AnyMessageType {
  const definition = packageDefinition[name];
  assert.ok(definition && "type" in definition, `no message ${name} in the contracts`);
  return definition as AnyMessageType;
}

const typeNameOf = (definition: AnyMessageType) => (definition.type as { name: string }).name;

/**
 * Where two messages' wire layouts differ (undefined when they are the same): every field
 * number in either has the same type and label in the other, and message-typed fields have
 * the same layout in turn.
 */
function layoutDifference(a: string, b: string, seen = new Set<string>()): string | undefined {
  if (a === b || seen.has(`${a}|${b}`)) return undefined;
  seen.add(`${a}|${b}`);
  const fields = (name: string) =>
    new Map(
      ((messageType(name).type as { field: FieldDescriptor[] }).field ?? []).map((field) => [
        field.number,
        field,
      ]),
    );
  const left = fields(a);
  const right = fields(b);
  for (const number of new Set([...left.keys(), ...right.keys()])) {
    const x = left.get(number);
    const y = right.get(number);
    if (!x || !y) return `field ${number} is in ${x ? a : b} only`;
    if (x.type !== y.type || x.label !== y.label) {
      return `field ${number}: ${x.label} ${x.type} in ${a}, ${y.label} ${y.type} in ${b}`;
    }
    if (x.type === "TYPE_MESSAGE" || x.type === "TYPE_ENUM") {
      const inner = layoutDifference(resolve(x.typeName, a), resolve(y.typeName, b), seen);
      if (inner) return `field ${number} (${x.name}): ${inner}`;
    }
  }
  return undefined;
}

/**
 * A field's type name as the loader keeps it: fully qualified, or (for a type of the same
 * package) relative to the message that has the field.
 */
function resolve(typeName: string, within: string): string {
  const name = typeName.replace(/^\./, "");
  return name in packageDefinition ? name : `${packageName(within)}.${name}`;
}

function methodTypes(service: string, method: string) {
  const definition = packageDefinition[service] as ServiceDefinition;
  const found = definition[method];
  assert.ok(found, `no method ${service}/${method}`);
  return {
    request: `${packageName(service)}.${typeNameOf(found.requestType)}`,
    response: `${packageName(service)}.${typeNameOf(found.responseType)}`,
    requestStream: found.requestStream,
    responseStream: found.responseStream,
  };
}

const packageName = (service: string) => service.split(".").slice(0, -1).join(".");

describe("the gateway's pass-through methods", () => {
  for (const [method, peer] of Object.entries(passThroughMethods)) {
    test(`gateway.v1 ${method}'s messages have ${peer.service}/${peer.method}'s wire layout`, () => {
      const ours = methodTypes(serviceNames.gateway, method);
      const theirs = methodTypes(peer.service, peer.method);
      assert.equal(ours.requestStream, theirs.requestStream, "request streaming differs");
      assert.equal(ours.responseStream, theirs.responseStream, "response streaming differs");
      assert.equal(layoutDifference(ours.request, theirs.request), undefined);
      assert.equal(layoutDifference(ours.response, theirs.response), undefined);
    });
  }

  test("the comparison finds a difference where there is one (GetStats is not passed through)", () => {
    const ours = methodTypes(serviceNames.gateway, "GetStats");
    const theirs = methodTypes(serviceNames.stats, "GetStats");
    assert.match(
      layoutDifference(ours.request, theirs.request) ?? "",
      /field 2 is in stats\.v1\.GetStatsRequest only/,
    );
  });
});

describe("reading pass-through bytes", () => {
  const point = Buffer.from([0x0a, 0x04, 0x08, 0x02, 0x10, 0x02]);

  test("wellFormed keeps good bytes and throws on bytes that cannot be parsed", () => {
    assert.equal(wellFormed(point), point);
    assert.equal(wellFormed(Buffer.alloc(0)).length, 0);
    const malformed = [
      Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
      Buffer.from([0x0a, 0x10, 0x08, 0x01]),
      Buffer.from([0x0f, 0x01]),
      Buffer.from([0xff, 0xff, 0xff, 0xff]),
      Buffer.from([0x00, 0x01]),
    ];
    for (const bytes of malformed) assert.throws(() => wellFormed(bytes), bytes.toString("hex"));
  });

  test("recordRouteRequestShape tells a point from the end of the route", () => {
    assert.deepEqual(recordRouteRequestShape(point), { hasPoint: true, endOfRoute: false });
    assert.deepEqual(recordRouteRequestShape(endOfRouteBytes), {
      hasPoint: false,
      endOfRoute: true,
    });
    assert.deepEqual(recordRouteRequestShape(Buffer.concat([point, endOfRouteBytes])), {
      hasPoint: true,
      endOfRoute: true,
    });
    // A known field with another wire type is refused: route's decoder would read field 2
    // sent length-delimited (12 02 78 00) as end_of_route = true.
    assert.throws(() => recordRouteRequestShape(Buffer.from([0x12, 0x02, 0x78, 0x00])), {
      name: "WrongWireType",
      message: "end_of_route has the wrong wire type",
    });
    assert.throws(() => recordRouteRequestShape(Buffer.from([0x08, 0x01])), {
      name: "WrongWireType",
      message: "point has the wrong wire type",
    });
    // The last value of a field wins, as in any protobuf decoder; unknown fields are skipped.
    assert.deepEqual(recordRouteRequestShape(Buffer.from([0x10, 0x01, 0x78, 0x05, 0x10, 0x00])), {
      hasPoint: false,
      endOfRoute: false,
    });
  });
});
