// The edge, through real processes, real HTTP/2 over TLS and real ID tokens from the local
// authority: TLS with ALPN h2, one client connection spread over instances, the invoker check
// before any container sees a call, the header rewriting, invoker_iam_disabled and ingress.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { connect, constants } from "node:http2";
import { after, before, describe, test } from "node:test";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "@cloudrun-grpc/local-authority";
import * as grpc from "@grpc/grpc-js";
import { type CloudRunLocal, startCloudRunLocal } from "../src/index.js";
import {
  collectingLogger,
  type EchoClient,
  echoClient,
  fixture,
  identities,
  type LogLine,
  makeTestInfra,
  quickProbes,
  tokenFor,
  waitFor,
} from "./support.js";

/** A gRPC message frame of JSON, and the messages out of a frame stream. */
const frame = (value: unknown) => {
  const body = Buffer.from(JSON.stringify(value));
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
};
const firstMessage = (data: Buffer) =>
  JSON.parse(data.subarray(5, 5 + data.readUInt32BE(1)).toString());

describe("cloud-run-local: the edge", () => {
  let infra: ReturnType<typeof makeTestInfra>;
  let authority: LocalTokenAuthority;
  let local: CloudRunLocal;
  const log = collectingLogger();
  /** Every line the instances printed, with the instance. */
  const printed: { service: string; instance: string; line: string }[] = [];
  const clients: EchoClient[] = [];
  const client = (service: string) => {
    const made = echoClient(local.services[service]?.url as string, local.caPem);
    clients.push(made);
    return made;
  };
  const sawCall = (callId: string) => printed.some(({ line }) => line.includes(callId));

  before(async () => {
    infra = makeTestInfra();
    authority = await startLocalTokenAuthority({ identities });
    const service = { entry: fixture, ...quickProbes };
    local = await startCloudRunLocal({
      infraDir: infra.dir,
      variables: { project_id: "test-project" },
      services: { front: service, back: service, open: service },
      authority,
      logger: log.logger,
      onLine: (service, instance, line) => printed.push({ service, instance, line }),
    });
  });
  after(async () => {
    for (const made of clients) made.close();
    await local?.stop();
    await authority?.close();
    infra?.remove();
  });

  test("serves its URL over TLS with ALPN h2 and spreads one connection over instances", async () => {
    const url = local.services.front?.url as string;
    assert.match(url, /^https:\/\/localhost:\d+$/);
    const token = await tokenFor(authority, "tester", url);
    const session = connect(url, { ca: local.caPem });
    try {
      await new Promise<void>((resolve, reject) => {
        session.once("connect", () => resolve());
        session.once("error", reject);
      });
      assert.equal(session.alpnProtocol, "h2");
      // front takes one request per instance (max_concurrency = 1) and up to 3 instances: three
      // streams held open on this one connection are served by three instances.
      const streams = [1, 2, 3].map(() => {
        const stream = session.request({
          ":method": "POST",
          ":path": "/test.Echo/Hold",
          "content-type": "application/grpc",
          te: "trailers",
          authorization: `Bearer ${token}`,
        });
        stream.write(frame({}));
        const pid = new Promise<number>((resolve, reject) => {
          stream.once("data", (data: Buffer) => resolve(firstMessage(data).pid));
          stream.once("error", reject);
        });
        const status = new Promise<string>((resolve) =>
          stream.once("trailers", (trailers) => resolve(String(trailers["grpc-status"]))),
        );
        return { stream, pid, status };
      });
      const pids = await Promise.all(streams.map(({ pid }) => pid));
      assert.equal(new Set(pids).size, 3, `three instances, got pids ${pids.join(", ")}`);
      assert.equal(local.services.front?.instances().length, 3);
      for (const { stream } of streams) stream.end();
      assert.deepEqual(await Promise.all(streams.map(({ status }) => status)), ["0", "0", "0"]);
      assert.ok(
        log.lines.some(
          (line) =>
            line.event === "instance started" &&
            line.service === "front" &&
            String(line.reason).includes("waiting"),
        ),
      );
    } finally {
      session.close();
    }
  });

  test("holds a fast sender back while its client reads nothing (flow control end to end)", async () => {
    const url = local.services.front?.url as string;
    const token = await tokenFor(authority, "tester", url);
    const session = connect(url, { ca: local.caPem });
    try {
      const count = 128;
      const size = 32 * 1024;
      const stream = session.request({
        ":method": "POST",
        ":path": "/test.Echo/Flood",
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${token}`,
      });
      stream.end(frame({ count, size }));
      // Nothing read: the instance must come to wait, and stay waiting, far short of the 4 MB.
      stream.pause();
      const line = (event: string) =>
        printed.find(({ line }) => line.includes(`"event":"${event}"`));
      await waitFor(() => line("flood blocked") !== undefined, "the instance's writes to wait");
      // An absence can only be watched for a while: a front end that buffered instead of
      // passing the back-pressure on lets the instance write all 4 MB in a fraction of this.
      await assert.rejects(
        waitFor(() => line("flood written") !== undefined, "the flood to be written", 1_000),
        /gave up waiting/,
      );

      let pending = Buffer.alloc(0);
      let messages = 0;
      stream.on("data", (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
          pending = pending.subarray(5 + pending.readUInt32BE(1));
          messages += 1;
        }
      });
      const status = new Promise<string>((resolve) =>
        stream.once("trailers", (trailers) => resolve(String(trailers["grpc-status"]))),
      );
      stream.resume();
      assert.equal(await status, "0");
      await new Promise((resolve) => stream.once("close", resolve));
      assert.equal(messages, count);
      assert.ok(line("flood written"));
    } finally {
      session.close();
    }
  });

  test("refuses a call without a token, with a bad token or from a non-invoker, before any instance sees it", async () => {
    const front = client("front");
    const url = local.services.front?.url as string;
    const cases: {
      headers: Record<string, string>;
      code: grpc.status;
      http: number;
      reason: RegExp;
    }[] = [
      { headers: {}, code: grpc.status.PERMISSION_DENIED, http: 403, reason: /no ID token/ },
      {
        headers: {
          authorization: `Bearer ${await tokenFor(authority, "tester", "https://elsewhere.example")}`,
        },
        code: grpc.status.UNAUTHENTICATED,
        http: 401,
        reason: /audience/,
      },
      {
        headers: { authorization: `Bearer ${await tokenFor(authority, "stranger", url)}` },
        code: grpc.status.PERMISSION_DENIED,
        http: 403,
        reason: /stranger@.* may not invoke/,
      },
      // The header checked is X-Serverless-Authorization when present, whatever the other holds.
      {
        headers: {
          authorization: `Bearer ${await tokenFor(authority, "tester", url)}`,
          "x-serverless-authorization": `Bearer ${await tokenFor(authority, "stranger", url)}`,
        },
        code: grpc.status.PERMISSION_DENIED,
        http: 403,
        reason: /stranger@/,
      },
    ];
    for (const { headers, code, http, reason } of cases) {
      const callId = randomUUID();
      const error = (await front.call("Echo", {}, { ...headers, "x-call-id": callId }).then(
        () => assert.fail("the call passed"),
        (error: grpc.ServiceError) => error,
      )) as grpc.ServiceError;
      assert.equal(error.code, code, error.message);
      assert.equal(error.details, `Received HTTP status code ${http}`);
      const refusal = log.lines.findLast((line: LogLine) => line.event === "request refused");
      assert.equal(refusal?.status, http);
      assert.match(String(refusal?.reason), reason);
      assert.equal(sawCall(callId), false, "an instance saw the refused call");
    }
  });

  test("passes the checked header on with its signature removed, the other untouched, and the contract's variables", async () => {
    const front = client("front");
    const url = local.services.front?.url as string;
    const token = await tokenFor(authority, "tester", url);
    const [head, payload] = token.split(".");
    const removed = `Bearer ${head}.${payload}.SIGNATURE_REMOVED_BY_GOOGLE`;

    const onlyAuthorization = await front.call("Echo", {}, { authorization: `Bearer ${token}` });
    assert.equal(onlyAuthorization.authorization, removed);
    assert.equal(onlyAuthorization.serverlessAuthorization, undefined);

    const both = await front.call(
      "Echo",
      {},
      {
        authorization: `Bearer ${token}`,
        "x-serverless-authorization": `Bearer ${token}`,
      },
    );
    assert.equal(both.serverlessAuthorization, removed);
    assert.equal(both.authorization, `Bearer ${token}`);

    assert.equal(both.kService, "front");
    assert.equal(both.kConfiguration, "front");
    assert.match(String(both.kRevision), /^front-\d{5}-\w+$/);
    assert.match(String(both.port), /^\d+$/);
    assert.deepEqual(both.env, {
      AUTH_AUDIENCES: url,
      AUTH_ALLOWED_INVOKERS: identities.tester,
      LOG_LEVEL: "debug",
    });
  });

  test("serves a service with invoker_iam_disabled without a token, and leaves a token untouched", async () => {
    const open = client("open");
    const anonymous = await open.call("Echo", {});
    assert.equal(anonymous.authorization, undefined);
    const token = await tokenFor(authority, "stranger", local.services.open?.url as string);
    const withToken = await open.call("Echo", {}, { authorization: `Bearer ${token}` });
    assert.equal(withToken.authorization, `Bearer ${token}`);
  });

  test("an internal service refuses callers from outside and serves the services whose egress is the VPC", async () => {
    const backUrl = local.services.back?.url as string;
    const frontsToken = await tokenFor(authority, "front", backUrl);

    const callId = randomUUID();
    const error = (await client("back")
      .call("Echo", {}, { authorization: `Bearer ${frontsToken}`, "x-call-id": callId })
      .then(
        () => assert.fail("an outside call reached an internal service"),
        (error: grpc.ServiceError) => error,
      )) as grpc.ServiceError;
    assert.equal(error.code, grpc.status.UNIMPLEMENTED);
    assert.equal(error.details, "Received HTTP status code 404");
    assert.equal(sawCall(callId), false);
    assert.match(
      String(log.lines.findLast((line) => line.event === "request refused")?.reason),
      /ingress is internal/,
    );

    // front's Terraform sets vpc_egress: its calls to back are internal, and IAM checks them.
    const front = client("front");
    const frontUrl = local.services.front?.url as string;
    const testerToken = await tokenFor(authority, "tester", frontUrl);
    const forwarded = await front.call(
      "Forward",
      { token: frontsToken },
      { authorization: `Bearer ${testerToken}` },
    );
    const answer = forwarded.answer as Record<string, unknown>;
    assert.equal(answer?.kService, "back", JSON.stringify(forwarded));
    const [head, payload] = frontsToken.split(".");
    assert.equal(answer.authorization, `Bearer ${head}.${payload}.SIGNATURE_REMOVED_BY_GOOGLE`);
    // Through the VPC still, a caller that is not an invoker of back is refused by IAM.
    const strangers = await front.call(
      "Forward",
      { token: await tokenFor(authority, "stranger", backUrl) },
      { authorization: `Bearer ${testerToken}` },
    );
    assert.deepEqual(strangers, {
      code: grpc.status.PERMISSION_DENIED,
      details: "Received HTTP status code 403",
    });
  });

  test("refuses a connection that does not trust its CA", async () => {
    const session = connect(local.services.front?.url as string);
    const failure = await new Promise<Error>((resolve) => session.once("error", resolve));
    session.destroy(undefined, constants.NGHTTP2_NO_ERROR);
    assert.match(failure.message, /self[- ]signed|unable to (get|verify)/i);
  });
});
