// How the front end answers a call it does not pass on: an HTTP status and a small HTML page,
// as Google's front end answers, no gRPC status. A gRPC client then reports the status it
// derives from the HTTP one (grpc-js, src/subchannel-call.ts mapHttpStatusCode: 401 →
// UNAUTHENTICATED, 403 → PERMISSION_DENIED, 404 → UNIMPLEMENTED, 429 and 504 → UNAVAILABLE,
// each "Received HTTP status code <n>").
import type { ServerHttp2Stream } from "node:http2";

export type RefusalStatus = 401 | 403 | 404 | 429 | 503 | 504;

const titles: Record<RefusalStatus, string> = {
  401: "Unauthorized",
  403: "Forbidden",
  404: "Page not found",
  429: "Too Many Requests",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** Answers `stream` with `status` and ends it; a no-op when its answer has begun. */
export function refuse(stream: ServerHttp2Stream, status: RefusalStatus, detail: string): void {
  if (stream.headersSent || stream.closed || stream.destroyed) return;
  const title = titles[status];
  const body = `<!DOCTYPE html>\n<html lang=en><title>${status} ${title}</title>\n<h1>Error: ${title}</h1>\n<p>${escapeHtml(detail)}</p>\n</html>\n`;
  const headers: Record<string, string | number> = {
    ":status": status,
    "content-type": "text/html; charset=UTF-8",
  };
  if (status === 401) headers["www-authenticate"] = 'Bearer error="invalid_token"';
  stream.respond(headers);
  stream.end(body);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"]/g, (char) => `&#${char.charCodeAt(0)};`);
}
