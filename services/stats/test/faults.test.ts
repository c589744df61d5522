// The store when its PostgreSQL database is away, goes away, or hangs, through a proxy the
// test breaks: it answers UNAVAILABLE (never hangs, never crashes), readiness says it cannot
// serve, it comes back by itself, and nothing it acknowledged is lost.
import assert from "node:assert/strict";
import { after, afterEach, describe, test } from "node:test";
import { StatusError } from "@cloudrun-grpc/runtime";
import { FaultProxy, until, within } from "@cloudrun-grpc/test-support";
import * as grpc from "@grpc/grpc-js";
import type { StatsEvent } from "../src/store.js";
import { PostgresStores, postgresAdminUrl, waitUntilReady } from "./support/stores.js";

let nextId = 0;
const lookup = (): StatsEvent => ({
  id: `lookup-${++nextId}`,
  caller: "amy",
  kind: "featureLookedUp",
  name: "",
  location: { latitude: 1, longitude: 1 },
});
const route = (): StatsEvent => ({
  id: `route-${++nextId}`,
  caller: "amy",
  kind: "routeRecorded",
  summary: { pointCount: 2, featureCount: 0, distanceMeters: 10, elapsedSeconds: 1 },
});

/** What `promise` rejected with; fails the test if it resolved. */
async function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    (value) => assert.fail(`expected a rejection, got ${JSON.stringify(value)}`),
    (error: Error) => error,
  );
}

function assertUnavailable(error: Error, message: RegExp): void {
  assert.ok(error instanceof StatusError, `not a StatusError: ${error}`);
  assert.equal(error.code, grpc.status.UNAVAILABLE, error.message);
  assert.match(error.message, message);
}

const unavailable = /^stats database unavailable \(.+\): try again$/;

describe("stats store faults (PostgreSQL through a proxy the test breaks)", () => {
  const stores = new PostgresStores();
  const upstream = new URL(postgresAdminUrl);
  const proxies: FaultProxy[] = [];
  const proxy = async () => {
    const made = new FaultProxy({
      host: upstream.hostname,
      port: Number(upstream.port || 5432),
    });
    proxies.push(made);
    await made.up();
    return made;
  };
  // Proxies first: a store's connections through them are dropped, so it closes at once.
  afterEach(async () => {
    for (const made of proxies.splice(0)) await made.down();
    await stores.release();
  });
  after(() => stores.cleanup());

  test("database unreachable at start: not ready, calls answer UNAVAILABLE with the reason, ready by itself once reachable", async () => {
    const db = await stores.database();
    const away = await proxy();
    await away.down(); // its port, with nothing listening yet
    const { store, readiness } = await db.open({ port: away.port, waitReady: false });
    const changes: boolean[] = [];
    readiness.subscribe((ready) => changes.push(ready));

    // The first attempt is refused at once; from then on the answer carries the reason.
    const event = lookup();
    let error = new Error("no answer yet");
    await until(async () => {
      error = await rejection(store.record([event]));
      return /ECONNREFUSED/.test(error.message);
    }, "the refused connection is the reason given");
    assertUnavailable(
      error,
      /^stats database unavailable \(connect ECONNREFUSED 127\.0\.0\.1:\d+\): try again$/,
    );
    assertUnavailable(await rejection(store.snapshot({ topN: 1 })), /ECONNREFUSED/);
    assert.equal(readiness.ready, false);

    await away.up();
    await waitUntilReady({ store, readiness }, "the database once reachable");
    assert.deepEqual(changes, [true]);
    // The refused report never reached the database: retried, it counts, once.
    assert.deepEqual(await store.record([event]), { accepted: 1, duplicates: 0 });
    assert.deepEqual(await store.record([event]), { accepted: 0, duplicates: 1 });
  });

  test("connection lost while running: UNAVAILABLE and not ready, back by itself, nothing acknowledged lost", async () => {
    const db = await stores.database();
    const path = await proxy();
    const { store, readiness } = await db.open({ port: path.port, timeoutMs: 1_000 });
    const acknowledged: StatsEvent[] = [];
    for (let index = 0; index < 5; index += 1) {
      const batch = [lookup(), route()];
      assert.deepEqual(await store.record(batch), { accepted: 2, duplicates: 0 });
      acknowledged.push(...batch);
    }
    const changes: boolean[] = [];
    readiness.subscribe((ready) => changes.push(ready));

    await path.down();
    const refused = [lookup()];
    assertUnavailable(await rejection(store.record(refused)), unavailable);
    await until(() => !readiness.ready, "readiness turns false");
    assertUnavailable(await rejection(store.snapshot({ topN: 1 })), unavailable);

    await path.up();
    await waitUntilReady({ store, readiness }, "the database once back");
    assert.deepEqual(changes, [false, true]);
    const { snapshot } = await store.snapshot({ topN: 10 });
    assert.equal(snapshot.featureLookups, 5);
    assert.equal(snapshot.routesRecorded, 5);
    // Straight from the database: exactly the acknowledged ids, nothing else.
    const ledger = await db.query<{ id: string }>("select id from counted_events");
    assert.deepEqual(ledger.map(({ id }) => id).sort(), acknowledged.map(({ id }) => id).sort());
    assert.deepEqual(await store.record(refused), { accepted: 1, duplicates: 0 });
  });

  test("connection lost with a record in flight: that call answers UNAVAILABLE, the process lives on, the store comes back", async () => {
    const db = await stores.database();
    const path = await proxy();
    const { store, readiness } = await db.open({ port: path.port, timeoutMs: 5_000 });
    await store.record([lookup()]);

    // Hold the next statement in the proxy, so the cut finds it on the wire.
    path.stall();
    const inFlight = [lookup()];
    const answer = rejection(store.record(inFlight));
    await until(() => path.held > 0, "the record's statement is in flight");
    await path.down();
    assertUnavailable(await answer, unavailable);
    await until(() => !readiness.ready, "readiness turns false");

    await path.up();
    await waitUntilReady({ store, readiness }, "the database once back");
    // It never reached the database: retried, it counts once.
    assert.deepEqual(await store.record(inFlight), { accepted: 1, duplicates: 0 });
    assert.equal((await store.snapshot({ topN: 1 })).snapshot.featureLookups, 2);
  });

  test("a stuck database: calls fail UNAVAILABLE within about the timeout, never hang; once it answers again the store serves by itself, exactly once", async () => {
    const timeoutMs = 500;
    const db = await stores.database();
    const path = await proxy();
    const { store } = await db.open({ port: path.port, timeoutMs });
    const acknowledged = [lookup()];
    await store.record(acknowledged);

    // Connections stay open, nothing comes back.
    path.stall();
    // One timeout for the stuck statement, one more for the ROLLBACK after it, and slack.
    const bound = 4 * timeoutMs;
    const failed = [lookup()];
    const stuck = await within(
      rejection(store.record([failed[0] as StatsEvent])),
      bound,
      "a record on a stuck database",
    );
    assertUnavailable(stuck, /^stats database did not answer in time: try again$/);
    // Later calls too (by then the store may have given its connections up as lost).
    for (let call = 0; call < 3; call += 1) {
      const event = lookup();
      failed.push(event);
      const error = await within(
        rejection(store.record([event])),
        bound,
        "a later record on a stuck database",
      );
      assertUnavailable(
        error,
        /^stats database (did not answer in time|unavailable \(.+\)): try again$/,
      );
    }

    // The database answers again (what was held back arrives late): no cut, no restart, the
    // store gets going by itself. Until then, calls keep failing UNAVAILABLE.
    path.resume();
    const next = lookup();
    await until(
      async () => {
        try {
          await store.record([next]);
          return true;
        } catch (error) {
          assertUnavailable(error as Error, /try again$/);
          return false;
        }
      },
      "a record succeeds again",
      15_000,
    );
    acknowledged.push(next);
    // The failed reports, retried, count once each (whether or not a failed one got through).
    for (const event of failed) await store.record([event]);
    const expected = [...acknowledged, ...failed].map(({ id }) => id).sort();
    const ledger = await db.query<{ id: string }>("select id from counted_events");
    assert.deepEqual(ledger.map(({ id }) => id).sort(), expected);
    const { snapshot } = await store.snapshot({ topN: 1 });
    assert.equal(snapshot.featureLookups, expected.length);
  });
});
