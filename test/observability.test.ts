// Issue 5: every log line of the three services is a Cloud Logging entry, one request's
// lines share its trace id on every hop it reaches (streams and route's reports to stats
// included), failures are logged with their status, and no line ever carries a token.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Stack } from "@cloudrun-grpc/local-stack";
import { startStack } from "@cloudrun-grpc/local-stack";
import type { GatewayServiceClient } from "@cloudrun-grpc/proto";
import * as grpc from "@grpc/grpc-js";
import { collect, deadline, failure, stackGatewayClient, unary } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";

type Service = "gateway" | "route" | "stats";
interface Entry {
  severity?: unknown;
  message?: unknown;
  time?: unknown;
  serviceContext?: { service?: string };
  "logging.googleapis.com/trace"?: string;
  "logging.googleapis.com/spanId"?: string;
  rpc?: { side: string; method: string; code: string; parentSpanId?: string; caller?: string };
  event?: { kind: string };
}
const severities = new Set([
  "DEFAULT",
  "DEBUG",
  "INFO",
  "NOTICE",
  "WARNING",
  "ERROR",
  "CRITICAL",
  "ALERT",
  "EMERGENCY",
]);

const point = { latitude: 407_838_351, longitude: -746_143_763 };
const area = {
  lo: { latitude: 400_000_000, longitude: -750_000_000 },
  hi: { latitude: 410_000_000, longitude: -740_000_000 },
};

/** Retries `check` until it passes (lines arrive after the calls end), up to `timeoutMs`. */
async function untilPasses(check: () => void, { timeoutMs = 10_000 } = {}): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      check();
      return;
    } catch (error) {
      if (Date.now() >= until) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

let traceCounter = 0;
/** A fresh trace id, and the metadata of a call made in it (as a caller's own span). */
function newTrace(): { id: string; metadata: grpc.Metadata } {
  traceCounter += 1;
  const id = `${process.pid.toString(16).padStart(8, "0")}${String(traceCounter).padStart(24, "0")}`;
  const metadata = new grpc.Metadata();
  metadata.set("traceparent", `00-${id}-00f067aa0ba902b7-01`);
  return { id, metadata };
}

describeLocalOnly("observability across gateway, route and stats", () => {
  const output: { service: Service; line: string; stream: "stdout" | "stderr" }[] = [];
  let stack: Stack;
  let client: GatewayServiceClient;

  /** The parsed stdout entries of `service` so far. */
  const entries = (service: Service): Entry[] =>
    output
      .filter((out) => out.service === service && out.stream === "stdout")
      .map((out) => JSON.parse(out.line) as Entry);
  const inTrace = (service: Service, traceId: string) =>
    entries(service).filter((entry) => entry["logging.googleapis.com/trace"] === traceId);
  const serverLine = (service: Service, traceId: string, method: string) =>
    inTrace(service, traceId).find(
      (entry) => entry.rpc?.side === "server" && entry.rpc.method.endsWith(`/${method}`),
    );

  before(async () => {
    stack = await startStack({
      // Every OK call gets its line here, whatever its trace: the default keeps one trace in
      // ten (runtime's rpc-log test checks which lines a sample keeps).
      env: { all: { LOG_RPC_SAMPLE_RATE: "1" } },
      onLine: (service, line, stream) => output.push({ service, line, stream }),
    });
    client = await stackGatewayClient(stack);
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  test("one trace id spans every hop of every gateway method, streams included", async () => {
    const traces: Record<string, { id: string; reaches: Service[] }> = {};
    const inNewTrace = (name: string, reaches: Service[]) => {
      const trace = newTrace();
      traces[name] = { id: trace.id, reaches };
      return trace.metadata;
    };

    await unary((done) =>
      client.GetFeature(
        { point },
        inNewTrace("GetFeature", ["gateway", "route", "stats"]),
        deadline(),
        done,
      ),
    );
    await collect(
      client.ListFeatures(
        { rectangle: area },
        inNewTrace("ListFeatures", ["gateway", "route"]),
        deadline(),
      ),
    );
    await unary((done) => {
      const call = client.RecordRoute(
        inNewTrace("RecordRoute", ["gateway", "route", "stats"]),
        deadline(),
        done,
      );
      for (let i = 0; i < 20; i += 1) {
        call.write({ point: { latitude: 407_000_000 + i * 1000, longitude: -746_000_000 } });
      }
      call.end();
    });
    const chat = client.RouteChat(inNewTrace("RouteChat", ["gateway", "route"]), deadline());
    for (let i = 0; i < 3; i += 1) chat.write({ note: { location: point, message: `note ${i}` } });
    chat.end();
    await collect(chat);
    await unary((done) =>
      client.GetStats({ topN: 3 }, inNewTrace("GetStats", ["gateway", "stats"]), deadline(), done),
    );
    await unary((done) =>
      client.DescribeArea(
        { rectangle: area, topN: 3 },
        inNewTrace("DescribeArea", ["gateway", "route", "stats"]),
        deadline(),
        done,
      ),
    );
    // A watch is ended by its client after the first update: logged as CANCELLED.
    const watch = client.WatchStats({ topN: 1 }, inNewTrace("WatchStats", ["gateway", "stats"]));
    await new Promise<void>((resolve, reject) => {
      watch.once("data", () => resolve());
      watch.once("error", reject);
    });
    watch.cancel();
    watch.on("error", () => {});

    // Route reports to stats in batches, off the client's path: wait for those lines.
    for (const [method, { id, reaches }] of Object.entries(traces)) {
      await untilPasses(
        () => {
          const missing = reaches.filter((service) => inTrace(service, id).length === 0);
          assert.deepEqual(
            missing,
            [],
            `${method} (trace ${id}) has no line from ${missing.join(", ")}`,
          );
        },
        { timeoutMs: 15_000 },
      );
      const gatewayLine = serverLine("gateway", id, method);
      assert.ok(gatewayLine, `gateway's line for ${method}`);
      assert.equal(gatewayLine.rpc?.code, method === "WatchStats" ? "CANCELLED" : "OK");
      assert.equal(
        gatewayLine.rpc?.parentSpanId,
        "00f067aa0ba902b7",
        "the caller's span is the parent",
      );
      assert.match(String(gatewayLine.rpc?.caller), /^local-client@/, "the verified caller");
    }

    // Each hop's server line is a child of the caller's client line.
    const { id } = traces.DescribeArea as { id: string };
    const gatewayToRoute = inTrace("gateway", id).find(
      (entry) => entry.rpc?.side === "client" && entry.rpc.method.endsWith("/ListFeatures"),
    );
    const routeLine = serverLine("route", id, "ListFeatures");
    assert.ok(gatewayToRoute && routeLine);
    assert.equal(routeLine.rpc?.parentSpanId, gatewayToRoute["logging.googleapis.com/spanId"]);
    assert.match(String(routeLine.rpc?.caller), /^gateway-svc@/);

    // Route's reports reach stats as events logged in the request's own trace.
    const recorded = inTrace("stats", (traces.RecordRoute as { id: string }).id);
    assert.deepEqual(
      recorded.map((entry) => entry.event?.kind),
      ["routeRecorded"],
    );
  });

  test("a request without trace context gets one, continued on every hop; X-Cloud-Trace-Context is read too", async () => {
    const before = entries("gateway").length;
    await unary((done) => client.GetFeature({ point }, deadline(), done));
    let line: Entry | undefined;
    await untilPasses(() => {
      line = entries("gateway")
        .slice(before)
        .find((entry) => entry.rpc?.side === "server" && entry.rpc.method.endsWith("/GetFeature"));
      assert.ok(line, "gateway's line for the call");
    });
    const started = line?.["logging.googleapis.com/trace"];
    assert.match(String(started), /^[0-9a-f]{32}$/);
    assert.equal(line?.rpc?.parentSpanId, undefined);
    await untilPasses(() => assert.ok(serverLine("route", String(started), "GetFeature")));

    const cloud = new grpc.Metadata();
    const cloudTrace = "105445aa7843bc8bf206b12000100000";
    cloud.set("x-cloud-trace-context", `${cloudTrace}/1;o=1`);
    await unary((done) => client.GetFeature({ point }, cloud, deadline(), done));
    await untilPasses(() => {
      assert.ok(serverLine("gateway", cloudTrace, "GetFeature"));
      assert.ok(serverLine("route", cloudTrace, "GetFeature"));
    });
  });

  test("failed calls are logged with their status code, on each hop they reach", async () => {
    const invalid = newTrace();
    const refused = await failure(
      unary((done) =>
        client.GetFeature(
          { point: { latitude: 1_000_000_000, longitude: 0 } },
          invalid.metadata,
          deadline(),
          done,
        ),
      ),
    );
    assert.equal(refused.code, grpc.status.INVALID_ARGUMENT);

    // A deadline shorter than the stream needs: the client gives up, both hops log it.
    const slow = newTrace();
    const routeLimit = await failure(
      unary((done) => {
        const call = client.RecordRoute(slow.metadata, deadline(300), done);
        call.write({ point });
        // Never ended: the deadline passes with the stream open.
      }),
    );
    assert.equal(routeLimit.code, grpc.status.DEADLINE_EXCEEDED);

    await untilPasses(() => {
      const line = serverLine("gateway", invalid.id, "GetFeature");
      assert.equal(line?.rpc?.code, "INVALID_ARGUMENT");
      assert.equal(line?.severity, "WARNING");
      assert.equal(serverLine("gateway", slow.id, "RecordRoute")?.rpc?.code, "DEADLINE_EXCEEDED");
      // Route's line is there too. Its code depends on a race route cannot see: when the
      // gateway's call to route passes its deadline, grpc-js (Node's HTTP/2) half-closes the
      // stream just before resetting it, so route may take the route as complete and answer
      // OK before the reset, or see the reset or its own deadline first (see the README's
      // known limits).
      assert.match(
        String(serverLine("route", slow.id, "RecordRoute")?.rpc?.code),
        /^(DEADLINE_EXCEEDED|CANCELLED|OK)$/,
      );
    });
  });

  test("no line carries a token or an authorization value, for good and bad tokens alike", async () => {
    const auth = stack.auth;
    assert.ok(auth, "the stack runs with auth");
    const good = await auth.tokenFor("client", stack.gateway.url);
    const wrongAudience = await auth.tokenFor("client", "https://elsewhere.example");
    const forged = `${good.slice(0, good.lastIndexOf(".") + 1)}${"A".repeat(43)}`;
    const { connectGateway } = await import("@cloudrun-grpc/cli");
    for (const [token, expected] of [
      [good, grpc.status.OK],
      [wrongAudience, grpc.status.UNAUTHENTICATED],
      [forged, grpc.status.UNAUTHENTICATED],
      ["not-a-jwt", grpc.status.UNAUTHENTICATED],
    ] as const) {
      const caller = connectGateway(stack.gateway.url, { kind: "token", token });
      const trace = newTrace();
      const result = await unary((done) =>
        caller.GetFeature({ point }, trace.metadata, deadline(), done),
      ).then(
        () => grpc.status.OK,
        (error: grpc.ServiceError) => error.code,
      );
      caller.close();
      assert.equal(result, expected);
      await untilPasses(() =>
        assert.equal(
          serverLine("gateway", trace.id, "GetFeature")?.rpc?.code,
          grpc.status[expected],
        ),
      );
    }
    const secrets = [good, wrongAudience, forged, good.split(".")[2] as string];
    for (const { service, line } of output) {
      for (const secret of secrets)
        assert.ok(!line.includes(secret), `${service} logged a token: ${line}`);
      // No JWT at all (any token starts with a base64 JSON header) and no authorization value.
      assert.ok(!/eyJ[\w-]{10,}\.[\w-]{10,}/.test(line), `${service} logged a JWT: ${line}`);
      assert.ok(!/bearer /i.test(line), `${service} logged an authorization value: ${line}`);
    }
  });

  test("every line of every service is a Cloud Logging entry", () => {
    assert.ok(output.length > 50, `only ${output.length} lines`);
    for (const { service, line, stream } of output) {
      assert.equal(stream, "stdout", `${service} wrote to stderr: ${line}`);
      let entry: Entry;
      try {
        entry = JSON.parse(line);
      } catch {
        assert.fail(`${service} wrote a line that is not JSON: ${line}`);
      }
      assert.ok(severities.has(String(entry.severity)), `${service}: severity ${entry.severity}`);
      assert.equal(typeof entry.message, "string", `${service}: ${line}`);
      assert.ok(!Number.isNaN(Date.parse(String(entry.time))), `${service}: time in ${line}`);
      assert.equal(entry.serviceContext?.service, service);
      const traceId = entry["logging.googleapis.com/trace"];
      if (traceId !== undefined) {
        assert.match(traceId, /^[0-9a-f]{32}$/);
        assert.match(String(entry["logging.googleapis.com/spanId"]), /^[0-9a-f]{16}$/);
      }
    }
  });
});
