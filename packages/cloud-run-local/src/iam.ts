// IAM at the edge, before any instance sees the call (roles/run.invoker, checked by Cloud Run:
// https://cloud.google.com/run/docs/authenticating/service-to-service).
// - The token checked is the one in X-Serverless-Authorization when that header is present,
//   else the one in Authorization (GoogleCloudPlatform/cloud-run-proxy pull request 25: Cloud
//   Run uses X-Serverless-Authorization when both are present).
// - It must be an ID token whose signature verifies against its issuer's keys, not expired,
//   with the service's URL or one of its custom audiences as audience
//   (https://cloud.google.com/run/docs/configuring/custom-audiences), and its email must hold
//   the invoker role on the service.
// - The checked header reaches the container with the token's signature replaced by
//   SIGNATURE_REMOVED_BY_GOOGLE; the other header is passed on untouched.
// - invoker_iam_disabled turns the check off: every call passes, headers untouched
//   (https://cloud.google.com/run/docs/authenticating/public).
// Refusals: 403 when the caller may not invoke the service, which includes a call with no
// credentials at all; 401 when a token was sent that does not verify. (Cloud Run's
// troubleshooting page, https://cloud.google.com/run/docs/troubleshooting, lists both; the
// split between them is this front end's reading of it, to be checked at the first deploy.)
// The token verifier is the services' own (auth-client's IdTokenVerifier): the same checks,
// and its cache, so a caller sending the same token on every call pays one signature check.
import { IdTokenVerifier, TokenRejected } from "@cloudrun-grpc/auth-client";

export type EdgeDecision =
  | {
      allowed: true;
      /** Who called (the token's email), absent when the check is off. */
      caller?: string;
      /** The header that was checked and its new value (signature removed). */
      rewrite?: { header: string; value: string };
    }
  | { allowed: false; status: 401 | 403; reason: string };

export interface EdgeIamOptions {
  invokerIamDisabled: boolean;
  /** The service's URL and custom audiences: what a token's `aud` may be. */
  audiences: string[];
  issuer: string;
  jwksUrl: string;
  /** Emails that hold roles/run.invoker on the service. */
  invokers: Iterable<string>;
}

export const signatureRemoved = "SIGNATURE_REMOVED_BY_GOOGLE";

export class EdgeIam {
  private readonly verifier: IdTokenVerifier | undefined;
  private readonly invokers: Set<string>;

  constructor(options: EdgeIamOptions) {
    this.invokers = new Set(options.invokers);
    this.verifier = options.invokerIamDisabled
      ? undefined
      : new IdTokenVerifier({
          audiences: options.audiences,
          issuers: { [options.issuer]: options.jwksUrl },
        });
  }

  async check(headers: Record<string, string | string[] | undefined>): Promise<EdgeDecision> {
    if (!this.verifier) return { allowed: true };
    const serverless = headerValue(headers["x-serverless-authorization"]);
    const header = serverless ? "x-serverless-authorization" : "authorization";
    const value = serverless ?? headerValue(headers.authorization);
    if (!value) {
      return {
        allowed: false,
        status: 403,
        reason: "no ID token (Authorization or X-Serverless-Authorization)",
      };
    }
    const match = /^bearer\s+(\S+)$/i.exec(value.trim());
    if (!match)
      return { allowed: false, status: 401, reason: `${header} is not "Bearer <ID token>"` };
    const token = match[1] as string;
    let caller: string;
    try {
      caller = (this.verifier.verifiedNow(token) ?? (await this.verifier.verify(token))).email;
    } catch (error) {
      if (error instanceof TokenRejected) {
        return { allowed: false, status: 401, reason: `${header}: ${error.reason}` };
      }
      throw error;
    }
    if (!this.invokers.has(caller)) {
      return {
        allowed: false,
        status: 403,
        reason: `${caller} may not invoke this service (not an invoker)`,
      };
    }
    const [head, payload] = token.split(".");
    return {
      allowed: true,
      caller,
      rewrite: { header, value: `Bearer ${head}.${payload}.${signatureRemoved}` },
    };
  }
}

function headerValue(value: string | string[] | undefined): string | undefined {
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined || first === "" ? undefined : first;
}
