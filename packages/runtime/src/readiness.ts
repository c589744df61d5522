// Whether a service can do its work right now (e.g. stats while its database is reachable).
// The server reports it in grpc.health.v1 under the service's own name, which Cloud Run's
// startup probe asks for; the empty name (the process itself, asked by the liveness probe)
// stays SERVING, so an outage of a dependency never gets healthy processes restarted.

export class Readiness {
  private readonly listeners = new Set<(ready: boolean) => void>();

  constructor(private current = false) {}

  get ready(): boolean {
    return this.current;
  }

  set(ready: boolean): void {
    if (ready === this.current) return;
    this.current = ready;
    for (const listener of this.listeners) listener(ready);
  }

  /** Calls `listener` on every change; returns the function that unsubscribes. */
  subscribe(listener: (ready: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
