// WatchStats through a real gRPC server in this process, on a real store (PostgreSQL, changes
// announced by NOTIFY after commit): coalescing, and no subscription left behind when a watch
// ends. (PostgreSQL rather than PGlite only because it opens in milliseconds, not seconds.)
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  createStatsClient,
  type StatsServiceClient,
  type stats,
  statsService,
} from "@cloudrun-grpc/proto";
import { type RunningGrpcServer, startGrpcServer } from "@cloudrun-grpc/runtime";
import { until } from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import { type StatsHandlers, statsHandlers } from "../src/handlers.js";
import type { StatsEvent, StatsStore } from "../src/store.js";
import { PostgresStores, testLogger } from "./support/stores.js";

// Wide enough that five quick changes in a row always fall inside one window.
const coalesceMs = 400;

/** The store, counting its live subscriptions. */
class CountingStore implements StatsStore {
  subscribers = 0;
  constructor(private readonly inner: StatsStore) {}
  record(events: StatsEvent[]) {
    return this.inner.record(events);
  }
  snapshot(query: Parameters<StatsStore["snapshot"]>[0]) {
    return this.inner.snapshot(query);
  }
  onChange(listener: () => void): () => void {
    this.subscribers += 1;
    const unsubscribe = this.inner.onChange(listener);
    let done = false;
    return () => {
      if (!done) this.subscribers -= 1;
      done = true;
      unsubscribe();
    };
  }
}

let nextId = 0;
const lookup = (): StatsEvent => ({
  id: `event-${nextId++}`,
  caller: "test",
  kind: "featureLookedUp",
  name: "",
  location: { latitude: 1, longitude: 1 },
});

describe("WatchStats", () => {
  const stores = new PostgresStores();
  let store: CountingStore;
  let handlers: StatsHandlers;
  let server: RunningGrpcServer;
  let client: StatsServiceClient;
  /** Subscriptions that are not a watch's (the handlers may hold their own). */
  let baseline: number;

  before(async () => {
    store = new CountingStore((await stores.fresh()).store);
    handlers = statsHandlers({ store, logger: testLogger, watchCoalesceMs: coalesceMs });
    baseline = store.subscribers;
    server = await startGrpcServer({
      host: "127.0.0.1",
      port: 0,
      logger: testLogger,
      shutdownGraceMs: 1000,
      services: [statsService(handlers.handlers)],
    });
    client = createStatsClient(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    await server?.shutdown();
    await stores.cleanup();
  });

  function watch() {
    const call = client.WatchStats({ topN: 1 });
    const updates: stats.WatchStatsResponse__Output[] = [];
    call.on("data", (update: stats.WatchStatsResponse__Output) => updates.push(update));
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("error", () => {});
    return { call, updates, status };
  }

  test("sends the current aggregates at once, then one update per burst of changes", async () => {
    const { call, updates } = watch();
    await until(() => updates.length === 1, "the first update arrives");
    const before = Number(updates[0]?.snapshot?.featureLookups ?? 0);
    let changes = 0;
    const unsubscribe = store.onChange(() => {
      changes += 1;
    });
    // Five separate changes (five transactions, five notifications), one after the other.
    for (let index = 0; index < 5; index += 1) await store.record([lookup()]);
    await until(() => changes === 5, "the store announced five changes");
    unsubscribe();
    await until(
      () => Number(updates.at(-1)?.snapshot?.featureLookups) === before + 5,
      "the burst is reported",
    );
    await sleep(coalesceMs * 2);
    assert.equal(updates.length, 2, "one update for the whole burst");
    call.cancel();
  });

  test("a cancelled watch leaves no subscription behind", async () => {
    const { call, updates } = watch();
    await until(() => updates.length === 1, "the first update arrives");
    assert.equal(store.subscribers, baseline + 1);
    call.cancel();
    await until(() => store.subscribers === baseline, "the subscription is gone");
  });

  test("endWatches ends every open watch with UNAVAILABLE and unsubscribes", async () => {
    const first = watch();
    const second = watch();
    await until(
      () => first.updates.length === 1 && second.updates.length === 1,
      "both watches started",
    );
    assert.equal(store.subscribers, baseline + 2);
    handlers.endWatches();
    for (const { status } of [first, second]) {
      const ended = await status;
      assert.equal(ended.code, grpc.status.UNAVAILABLE);
      assert.equal(ended.details, "stats instance is shutting down; watch again");
    }
    await until(() => store.subscribers === baseline, "the subscriptions are gone");
  });
});
