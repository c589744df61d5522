// Watches share their reads: after a change, every open watch wants the latest aggregates.
// Watches asking for the same top N while a read started after the last change is still
// running get that read's answer, so N watches cost one query per change, not N.
import type { Snapshot, StatsStore } from "./store.js";

export class SharedSnapshots {
  private generation = 0;
  private readonly inFlight = new Map<number, { generation: number; read: Promise<Snapshot> }>();

  constructor(private readonly store: StatsStore) {
    store.onChange(() => {
      this.generation += 1;
    });
  }

  latest(topN: number): Promise<Snapshot> {
    const current = this.inFlight.get(topN);
    // Started after the last change: it already includes everything a new read would see.
    if (current && current.generation === this.generation) return current.read;
    const generation = this.generation;
    const read = this.store.snapshot({ topN }).then(({ snapshot }) => snapshot);
    this.inFlight.set(topN, { generation, read });
    const forget = () => {
      if (this.inFlight.get(topN)?.read === read) this.inFlight.delete(topN);
    };
    read.then(forget, forget);
    return read;
  }
}
