// The calls a server is serving right now, so a drain can end the ones still running when the
// grace period is over with a status that tells their clients what to do (UNAVAILABLE: call
// again, another instance will answer) instead of a reset stream. The call observer
// (call-observer.ts) keeps the set, in its own pass over each call: a call is in it from its
// start until it ends.
import * as grpc from "@grpc/grpc-js";

/** What a drain needs of a call: a way to end it with a status. */
export interface OpenCall {
  sendStatus(status: grpc.StatusObject): void;
}

export class OpenCalls {
  private readonly calls = new Set<OpenCall>();

  get size(): number {
    return this.calls.size;
  }

  add(call: OpenCall): void {
    this.calls.add(call);
  }

  delete(call: OpenCall): void {
    this.calls.delete(call);
  }

  /** Ends every open call with `code` and `details`. */
  endAll(code: grpc.status, details: string): void {
    for (const call of this.calls)
      call.sendStatus({ code, details, metadata: new grpc.Metadata() });
    this.calls.clear();
  }
}
