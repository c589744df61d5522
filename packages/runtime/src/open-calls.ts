// The calls a server is serving right now, so a drain can end the ones still running when the
// grace period is over with a status that tells their clients what to do (UNAVAILABLE: call
// again, another instance will answer) instead of a reset stream.
import * as grpc from "@grpc/grpc-js";

export class OpenCalls {
  private readonly calls = new Set<grpc.ServerInterceptingCall>();

  get size(): number {
    return this.calls.size;
  }

  /** The interceptor that keeps the set: a call is in it from its start until it ends. */
  interceptor(): grpc.ServerInterceptor {
    return (_method, call) => {
      const intercepting: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
        start: (next) => {
          this.calls.add(intercepting);
          // grpc-js reports onCancel once after every call, however it ended.
          next({ onCancel: () => this.calls.delete(intercepting) });
        },
      });
      return intercepting;
    };
  }

  /** Ends every open call with `code` and `details`. */
  endAll(code: grpc.status, details: string): void {
    for (const call of this.calls)
      call.sendStatus({ code, details, metadata: new grpc.Metadata() });
    this.calls.clear();
  }
}
