// The request timeout (request_timeout_seconds = 1 in the tests' Terraform): a call still open
// at the timeout is ended by the front end, with 504 before its answer began and a reset after,
// and the instance's stream is cancelled; the client's connection carries on.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "@cloudrun-grpc/local-authority";
import * as grpc from "@grpc/grpc-js";
import { type CloudRunLocal, startCloudRunLocal } from "../src/index.js";
import {
  collectingLogger,
  type EchoClient,
  echoClient,
  fixture,
  holdOpen,
  identities,
  makeTestInfra,
  quickProbes,
  tokenFor,
  waitFor,
} from "./support.js";

describe("cloud-run-local: the request timeout", () => {
  let infra: ReturnType<typeof makeTestInfra>;
  let authority: LocalTokenAuthority;
  let local: CloudRunLocal;
  let client: EchoClient;
  let headers: Record<string, string>;
  const log = collectingLogger();
  const printed: string[] = [];
  const cancelled = (method: string) =>
    printed.filter(
      (line) => line.includes('"event":"cancelled"') && line.includes(`"method":"${method}"`),
    ).length;

  before(async () => {
    infra = makeTestInfra();
    authority = await startLocalTokenAuthority({ identities });
    local = await startCloudRunLocal({
      infraDir: infra.dir,
      variables: { project_id: "test-project" },
      services: { slow: { entry: fixture, ...quickProbes } },
      authority,
      logger: log.logger,
      onLine: (_, __, line) => printed.push(line),
    });
    const url = local.services.slow?.url as string;
    assert.equal(local.services.slow?.definition.requestTimeoutSeconds, 1);
    client = echoClient(url, local.caPem);
    headers = { authorization: `Bearer ${await tokenFor(authority, "tester", url)}` };
  });
  after(async () => {
    client?.close();
    await local?.stop();
    await authority?.close();
    infra?.remove();
  });

  test("ends a call not yet answered with 504 at the timeout", async () => {
    const began = Date.now();
    const error = (await client.call("Sleep", {}, headers).then(
      () => assert.fail("Sleep answered"),
      (error: grpc.ServiceError) => error,
    )) as grpc.ServiceError;
    const elapsed = Date.now() - began;
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    assert.equal(error.details, "Received HTTP status code 504");
    assert.ok(elapsed >= 1_000 && elapsed < 5_000, `ended after ${elapsed} ms`);
    await waitFor(() => cancelled("Sleep") === 1, "the instance's call to be cancelled");
    assert.ok(
      log.lines.some((line) => line.event === "request timed out" && line.answered === false),
    );
  });

  test("resets a stream already answered at the timeout; the connection carries on", async () => {
    const began = Date.now();
    const open = await holdOpen(client, headers);
    await open.pid;
    const status = await open.ended;
    const elapsed = Date.now() - began;
    assert.equal(status.code, grpc.status.INTERNAL);
    assert.match(status.details, /RST_STREAM with code 0/);
    assert.ok(elapsed >= 1_000 && elapsed < 5_000, `ended after ${elapsed} ms`);
    await waitFor(() => cancelled("Hold") === 1, "the instance's stream to be cancelled");
    assert.ok(
      log.lines.some((line) => line.event === "request timed out" && line.answered === true),
    );
    // The same client connection serves the next call: no GOAWAY reached it.
    const answer = await client.call("Echo", {}, headers);
    assert.equal(answer.kService, "slow");
  });
});
