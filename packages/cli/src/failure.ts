// One readable line for a failed call. A call that never reached the gateway says so, with
// the reason, instead of grpc-js's status text, which nests the same sentence once per load
// balancer and ends in an empty "Resolution note".
import * as grpc from "@grpc/grpc-js";

// Node's error codes for a connection that could not be made, as a person would say them.
const reasons: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ETIMEDOUT: "connection timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
};

/**
 * Why a call could not reach its server, or undefined when it did (the call then failed
 * with a status of the server's). grpc-js 1.14 fails such a call with UNAVAILABLE and details
 * of its own making: "No connection established. Last error: <error>" from its load balancers
 * (src/load-balancer-pick-first.ts, wrapped once more by src/load-balancer-round-robin.ts,
 * our channels' policy), "Name resolution failed for target dns:<host>:<port>" from its DNS
 * resolver (src/resolver-dns.ts, which keeps no DNS error code), or "No addresses resolved".
 */
export function unreachableReason(error: unknown): string | undefined {
  const { code, details } = error as Partial<grpc.ServiceError>;
  if (code !== grpc.status.UNAVAILABLE || typeof details !== "string") return undefined;
  if (/^Name resolution failed for target |No addresses resolved/.test(details))
    return "the host name does not resolve";
  const at = details.lastIndexOf("Last error: ");
  if (!/No connection established/.test(details) || at < 0) return undefined;
  // The innermost error, without the empty note after it.
  const last = details
    .slice(at + "Last error: ".length)
    .replace(/\.? Resolution note: .*$/s, "")
    .replace(/^Error: /, "")
    .trim();
  const errno = /\b(E[A-Z_]+)\b/.exec(last)?.[1];
  return (errno && reasons[errno]) || last || "no connection";
}

/** The line a failed command prints: where it could not connect, or the call's status. */
export function describeFailure(command: string, url: string, error: unknown): string {
  const reason = unreachableReason(error);
  if (reason !== undefined) return `cannot reach ${url}: ${reason}`;
  const status = error as Partial<grpc.ServiceError>;
  // Node's errors have string codes (ECONNREFUSED); only a gRPC status has a numeric one.
  const code = typeof status.code === "number" ? `${grpc.status[status.code]}: ` : "";
  return `${command} failed: ${code}${status.details ?? status.message}`;
}
