// The https:// branch of the channel factory, for real: a TLS-terminating proxy (ALPN h2,
// certificate from a CA generated now) stands in for Cloud Run's front end before route, and
// the gateway reaches route through it as it would reach https://route-….run.app.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { connectGateway } from "@cloudrun-grpc/cli";
import { type ServiceProcess, startService } from "@cloudrun-grpc/local-stack";
import type { GatewayServiceClient, gateway } from "@cloudrun-grpc/proto";
import { until } from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import { deadline, failure, unary } from "./support/grpc.js";
import { describeLocalOnly } from "./support/target.js";
import {
  makeTestCertificates,
  startTlsProxy,
  type TestCertificates,
  type TlsProxy,
} from "./support/tls.js";

const somewhere = { latitude: 400_000_005, longitude: -740_000_005 };

describeLocalOnly("peers over https:// (TLS on a Cloud Run-like front end)", () => {
  let certs: TestCertificates;
  let stats: ServiceProcess;
  let route: ServiceProcess;
  let proxy: TlsProxy;
  const started: ServiceProcess[] = [];
  const clients: GatewayServiceClient[] = [];

  before(async () => {
    certs = makeTestCertificates();
    stats = await startService({ name: "stats" });
    route = await startService({ name: "route", env: { STATS_URL: stats.url } });
    proxy = await startTlsProxy(certs, route.port);
  });
  after(async () => {
    for (const client of clients) client.close();
    await Promise.all([...started, route, stats].filter(Boolean).map((service) => service.stop()));
    await proxy?.close();
  });

  async function gatewayTo(routeUrl: string, env: Record<string, string> = {}) {
    const service = await startService({
      name: "gateway",
      env: { ROUTE_URL: routeUrl, STATS_URL: stats.url, ...env },
    });
    started.push(service);
    const client = connectGateway(service.url, { kind: "none" });
    clients.push(client);
    return client;
  }

  test("a gateway that trusts the CA calls route through TLS with ALPN h2", async () => {
    const client = await gatewayTo(`https://localhost:${proxy.port}`, {
      GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: certs.caFile,
    });
    const before = proxy.negotiated.length;
    const answer = await unary<gateway.GetFeatureResponse__Output>((done) =>
      client.GetFeature({ point: somewhere }, deadline(), done),
    );
    assert.deepEqual(answer.feature, { name: "", location: somewhere });
    assert.ok(proxy.negotiated.length > before, "the call went through the TLS proxy");
    assert.ok(
      proxy.negotiated.every((protocol) => protocol === "h2"),
      `ALPN: ${proxy.negotiated}`,
    );
  });

  test("streams work through TLS too", async () => {
    const client = await gatewayTo(`https://localhost:${proxy.port}`, {
      GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: certs.caFile,
    });
    const summary = await unary<gateway.RecordRouteResponse__Output>((done) => {
      const stream = client.RecordRoute(deadline(), done);
      for (let index = 0; index < 200; index += 1) stream.write({ point: somewhere });
      stream.end();
    });
    assert.equal(summary.summary?.pointCount, 200);
  });

  test("a gateway that does not trust the certificate fails the call with UNAVAILABLE naming route; the certificate is in its log", async () => {
    const client = await gatewayTo(`https://localhost:${proxy.port}`);
    const error = await failure(
      unary((done) => client.GetFeature({ point: somewhere }, deadline(), done)),
    );
    assert.equal(error.code, grpc.status.UNAVAILABLE);
    // The client gets the gateway's own words; the peer's reason goes to the gateway's log.
    assert.equal(error.details, "route is unavailable: try again");
    const gateway = started.at(-1) as ServiceProcess;
    const clientLine = () =>
      gateway.lines
        .map((line) => JSON.parse(line))
        .find((entry) => entry.rpc?.side === "client" && entry.rpc?.code === "UNAVAILABLE");
    // The gateway writes its lines asynchronously: the line can reach this process's pipe
    // after the client's answer (one full run read the lines first).
    await until(() => clientLine() !== undefined, "the gateway logs its failed call to route");
    const logged = clientLine();
    assert.equal(logged?.severity, "WARNING");
    assert.match(logged?.rpc?.details ?? "", /certificate/i);
  });

  test("the CLI reaches a gateway behind TLS with an https:// URL", async () => {
    await gatewayTo(route.url);
    const gatewayBehindTls = started.at(-1) as ServiceProcess;
    const gatewayProxy = await startTlsProxy(certs, gatewayBehindTls.port);
    try {
      const cli = new URL("../packages/cli/dist/main.js", import.meta.url).pathname;
      const run = (env: Record<string, string>) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const child = spawn(
            process.execPath,
            [
              cli,
              // This stack runs without auth; the TLS path is what is tested here.
              "--no-token",
              "--gateway",
              `https://localhost:${gatewayProxy.port}`,
              "--timeout",
              "10",
              "get-feature",
              "40.0000005",
              "-74.0000005",
            ],
            { env: { PATH: process.env.PATH ?? "", ...env } },
          );
          let out = "";
          child.stdout.on("data", (chunk) => (out += chunk));
          child.stderr.on("data", (chunk) => (out += chunk));
          child.on("exit", (code) => resolve({ code, out }));
        });
      const trusted = await run({ GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: certs.caFile });
      assert.equal(trusted.code, 0, trusted.out);
      assert.match(trusted.out, /No named feature at 40\.0000, -74\.0000/);
      const untrusted = await run({});
      assert.equal(untrusted.code, 1);
      assert.match(
        untrusted.out,
        /^routeguide: cannot reach https:\/\/localhost:\d+: .*certificate/i,
      );
    } finally {
      await gatewayProxy.close();
    }
  });
});
