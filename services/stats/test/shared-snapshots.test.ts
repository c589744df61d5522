// N watches after a change cost one read, never a stale one.
import assert from "node:assert/strict";
import { test } from "node:test";
import { SharedSnapshots } from "../src/shared-snapshots.js";
import type { Snapshot, SnapshotQuery, StatsStore } from "../src/store.js";

/** A store whose reads are counted and finish when the test says so. */
function countingStore() {
  let version = 0;
  const listeners = new Set<() => void>();
  const pending: (() => void)[] = [];
  const reads: SnapshotQuery[] = [];
  const store: StatsStore = {
    record: async () => ({ accepted: 0, duplicates: 0 }),
    snapshot: (query) => {
      reads.push(query);
      const seen = version;
      return new Promise((resolve) => {
        pending.push(() =>
          resolve({
            snapshot: { version: seen, topFeatures: [], callers: [] } as unknown as Snapshot,
            lookupsWithin: 0,
          }),
        );
      });
    },
    onChange: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
  return {
    store,
    reads,
    change() {
      version += 1;
      for (const listener of listeners) listener();
    },
    finishAll() {
      for (const finish of pending.splice(0)) finish();
    },
  };
}

test("watches asking for the same top N share one read started after the last change", async () => {
  const fake = countingStore();
  const shared = new SharedSnapshots(fake.store);
  const answers = Promise.all(Array.from({ length: 50 }, () => shared.latest(10)));
  fake.finishAll();
  assert.equal(fake.reads.length, 1);
  assert.ok((await answers).every((snapshot) => snapshot.version === 0));
});

test("a change while a read runs starts a new read: nobody gets aggregates older than the change", async () => {
  const fake = countingStore();
  const shared = new SharedSnapshots(fake.store);
  const before = shared.latest(10);
  fake.change();
  const after = shared.latest(10);
  fake.finishAll();
  assert.equal(fake.reads.length, 2);
  assert.equal((await before).version, 0);
  assert.equal((await after).version, 1);
});

test("different top N are different reads; a finished read is not reused", async () => {
  const fake = countingStore();
  const shared = new SharedSnapshots(fake.store);
  const ten = shared.latest(10);
  const five = shared.latest(5);
  fake.finishAll();
  await Promise.all([ten, five]);
  assert.equal(fake.reads.length, 2);
  const again = shared.latest(10);
  fake.finishAll();
  await again;
  assert.equal(fake.reads.length, 3);
});
