// WatchStats through a real gRPC server in this process: coalescing, and no subscription
// left behind when a watch ends.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  createStatsClient,
  type StatsServiceClient,
  type stats,
  statsService,
} from "@cloudrun-grpc/proto";
import { createLogger, type RunningGrpcServer, startGrpcServer } from "@cloudrun-grpc/runtime";
import * as grpc from "@grpc/grpc-js";
import { type StatsHandlers, statsHandlers } from "../src/handlers.js";
import { MemoryStatsStore, type StatsEvent } from "../src/store.js";

const coalesceMs = 200;
const logger = createLogger("test", "silent");

/** The in-memory store, counting live subscriptions. */
class CountingStore extends MemoryStatsStore {
  subscribers = 0;
  override onChange(listener: () => void): () => void {
    this.subscribers += 1;
    const unsubscribe = super.onChange(listener);
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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean, what: string) {
  const giveUpAt = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > giveUpAt) assert.fail(`timed out waiting until ${what}`);
    await sleep(10);
  }
}

describe("WatchStats", () => {
  let store: CountingStore;
  let handlers: StatsHandlers;
  let server: RunningGrpcServer;
  let client: StatsServiceClient;

  before(async () => {
    store = new CountingStore();
    handlers = statsHandlers({ store, logger, watchCoalesceMs: coalesceMs });
    server = await startGrpcServer({
      host: "127.0.0.1",
      port: 0,
      logger,
      shutdownGraceMs: 1000,
      services: [statsService(handlers.handlers)],
    });
    client = createStatsClient(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    await server?.shutdown();
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
    const before = updates[0]?.snapshot?.featureLookups ?? 0;
    // Five separate changes, 10 ms apart: all inside one coalescing window.
    for (let index = 0; index < 5; index += 1) {
      await store.record([lookup()]);
      await sleep(10);
    }
    await until(
      () => updates.at(-1)?.snapshot?.featureLookups === before + 5,
      "the burst is reported",
    );
    await sleep(coalesceMs * 2);
    assert.equal(updates.length, 2, "one update for the whole burst");
    call.cancel();
  });

  test("a cancelled watch leaves no subscription behind", async () => {
    const { call, updates } = watch();
    await until(() => updates.length === 1, "the first update arrives");
    assert.equal(store.subscribers, 1);
    call.cancel();
    await until(() => store.subscribers === 0, "the subscription is gone");
  });

  test("endWatches ends every open watch with UNAVAILABLE and unsubscribes", async () => {
    const first = watch();
    const second = watch();
    await until(
      () => first.updates.length === 1 && second.updates.length === 1,
      "both watches started",
    );
    handlers.endWatches();
    for (const { status } of [first, second]) {
      const ended = await status;
      assert.equal(ended.code, grpc.status.UNAVAILABLE);
      assert.equal(ended.details, "stats instance is shutting down; watch again");
    }
    await until(() => store.subscribers === 0, "the subscriptions are gone");
  });
});
