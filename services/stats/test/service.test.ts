// stats built through its factory and served in-process (no child process): the handlers over
// a real PostgreSQL database, behind the real auth check, on real HTTP/2.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createStatsClient, type StatsServiceClient, type stats } from "@cloudrun-grpc/proto";
import {
  failure,
  type InProcessAuth,
  type InProcessService,
  inProcessServiceEmail,
  serveInProcess,
  startInProcessAuth,
  TestDatabases,
  unary,
} from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import { statsConfigSchema } from "../src/config.js";
import { createStatsService } from "../src/service.js";

describe("stats built in-process (createStatsService, served by startService)", () => {
  const databases = new TestDatabases("stats_service_test");
  let auth: InProcessAuth;
  let service: InProcessService;
  let client: StatsServiceClient;
  let url: string;

  const asRoute = () => auth.bearer(url, inProcessServiceEmail);
  const getStats = async () => {
    const metadata = await asRoute();
    return unary<stats.GetStatsResponse>((done) => client.getStats({ topN: 5 }, metadata, done));
  };
  const recordEvents = async (events: stats.Event[], metadata?: grpc.Metadata) => {
    const md = metadata ?? (await asRoute());
    return unary<stats.RecordEventsResponse>((done) => client.recordEvents({ events }, md, done));
  };

  before(async () => {
    auth = await startInProcessAuth();
    const database = await databases.create();
    service = await serveInProcess(statsConfigSchema, createStatsService, auth, {
      STATS_DATABASE_URL: database.url(),
    });
    url = service.url;
    client = createStatsClient(service.target, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await service?.stop();
    await databases.dropAll();
    await auth?.close();
  });

  const lookup = (id: string): stats.Event => ({
    id,
    caller: "ana@example.com",
    featureLookedUp: {
      feature: {
        name: "Mount Sample",
        location: { latitude: 407_838_351, longitude: -746_143_763 },
      },
    },
  });

  it("counts each event id once and serves the aggregates", async () => {
    const recorded = await recordEvents([lookup("e1"), lookup("e2"), lookup("e1")]);
    assert.equal(recorded.accepted, 2);
    const again = await recordEvents([lookup("e2")]);
    assert.deepEqual([again.accepted, again.duplicates], [0, 1]);
    const { snapshot } = await getStats();
    assert.equal(Number(snapshot?.featureLookups), 2);
    assert.deepEqual(
      snapshot?.callers?.map((c) => [c.caller, Number(c.featureLookups)]),
      [["ana@example.com", 2]],
    );
    assert.equal(snapshot?.topFeatures?.[0]?.name, "Mount Sample");
  });

  it("refuses an event without an id by its index and field, counting the rest of the batch", async () => {
    const before = Number((await getStats()).snapshot?.featureLookups);
    const answer = await recordEvents([
      { id: "", caller: "ana@example.com", featureLookedUp: { feature: {} } },
      lookup("e3"),
    ]);
    assert.equal(answer.accepted, 1);
    assert.deepEqual(
      answer.rejected?.map(({ index, field }) => ({ index, field })),
      [{ index: 0, field: "events[0].id" }],
    );
    assert.equal(Number((await getStats()).snapshot?.featureLookups), before + 1);
  });

  it("answers a call without a token UNAUTHENTICATED, one of a caller not allowed PERMISSION_DENIED", async () => {
    const anonymous = await failure(recordEvents([], new grpc.Metadata()));
    assert.equal(anonymous.code, grpc.status.UNAUTHENTICATED);
    const stranger = await failure(recordEvents([], await auth.bearer(url, "mallory@example.com")));
    assert.equal(stranger.code, grpc.status.PERMISSION_DENIED);
  });
});
