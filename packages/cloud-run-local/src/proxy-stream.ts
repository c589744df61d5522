// One call, passed from the client's stream at the edge to a stream on the instance's h2c
// session: headers, then the messages both ways through node streams (pipe), so HTTP/2 flow
// control holds end to end (a slow reader stops the window updates on the other side), then the
// response's trailers; a reset on either side resets the other. A request counts on its
// instance until the instance's stream is closed.
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  constants,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import { refuse } from "./refusals.js";

export interface ProxiedCall {
  /** The request timeout passed: end the call as Cloud Run does (see edge.ts). */
  expire(): void;
}

/** Headers without the HTTP/2 pseudo-headers, but those in `keep` (the response's :status). */
function plainHeaders(headers: IncomingHttpHeaders, keep: string[] = []): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(":") && !keep.includes(name)) continue;
    out[name] = value;
  }
  return out;
}

export function proxyStream(
  incoming: ServerHttp2Stream,
  requestHeaders: OutgoingHttpHeaders,
  session: ClientHttp2Session,
  onInstanceDone: () => void,
): ProxiedCall {
  let upstream: ClientHttp2Stream;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    onInstanceDone();
  };
  try {
    upstream = session.request(requestHeaders);
  } catch {
    // The session went away between picking the instance and this call (it was shut down).
    finish();
    refuse(incoming, 503, "The request failed because the instance went away.");
    return { expire: () => {} };
  }
  let responded = false;
  let trailers: OutgoingHttpHeaders | undefined;

  upstream.on("error", () => {});
  incoming.on("error", () => {});
  incoming.pipe(upstream);

  upstream.on("response", (headers, flags) => {
    if (incoming.closed || incoming.destroyed) return;
    responded = true;
    const out = plainHeaders(headers, [":status"]);
    // A trailers-only answer (a gRPC error before any message) is headers with END_STREAM.
    if ((flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0) {
      incoming.respond(out, { endStream: true });
      return;
    }
    incoming.respond(out, { waitForTrailers: true });
    upstream.pipe(incoming);
  });
  upstream.on("trailers", (headers) => {
    trailers = plainHeaders(headers);
  });
  incoming.on("wantTrailers", () => {
    if (incoming.closed || incoming.destroyed) return;
    if (trailers) incoming.sendTrailers(trailers);
    else incoming.close(constants.NGHTTP2_NO_ERROR);
  });

  upstream.on("close", () => {
    finish();
    if (incoming.closed || incoming.destroyed) return;
    const code = upstream.rstCode ?? constants.NGHTTP2_INTERNAL_ERROR;
    if (!responded) {
      // The instance reset the call, crashed or went away before answering.
      refuse(incoming, 503, "The request failed because the instance did not answer.");
    } else if (code !== constants.NGHTTP2_NO_ERROR) {
      incoming.close(code);
    }
  });
  incoming.on("close", () => {
    // The client reset the call (or it ended at the edge): the instance's stream goes too.
    if (!upstream.closed && !upstream.destroyed) upstream.close(constants.NGHTTP2_CANCEL);
  });

  return {
    expire() {
      if (!incoming.headersSent) {
        refuse(
          incoming,
          504,
          "The request has been terminated because it has reached the maximum request timeout.",
        );
      } else if (!incoming.closed) {
        incoming.close(constants.NGHTTP2_NO_ERROR);
      }
      if (!upstream.closed && !upstream.destroyed) upstream.close(constants.NGHTTP2_CANCEL);
    },
  };
}
