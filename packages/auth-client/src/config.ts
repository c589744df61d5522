// How a service is told about auth, from its environment (parsed with its other settings):
//   AUTH_MODE              verify (default): every call needs a verified ID token of an allowed
//                          invoker, and outgoing calls carry this service's own ID tokens;
//                          optional (a public gateway only): a call without a token is served
//                          as the anonymous caller; a token that is present must verify;
//                          off: neither (explicit, for benchmarks and experiments; never deploy,
//                          and refused where K_SERVICE says this is Cloud Run).
//   AUTH_AUDIENCES         this service's own URL(s), comma-separated: a token's aud must equal one.
//   AUTH_ALLOWED_INVOKERS  who may call it, comma-separated (from infra/topology.json): an email
//                          (every method of the service, and reflection), or
//                          email=Method1|Method2 (only those methods of the service's own API).
//   AUTH_ISSUER, AUTH_JWKS_URL   the token issuer and its keys; default: Google.
import * as grpc from "@grpc/grpc-js";
import { z } from "zod";
import { endUserPolicy } from "./end-user.js";
import { peerToken } from "./interceptors.js";
import {
  type AllowedInvoker,
  parseAllowedInvoker,
  serverAuthInterceptor,
  verifiedCaller,
  verifiedCallerKey,
} from "./server-auth.js";
import { IdTokenSources } from "./tokens.js";
import { googleIssuers, IdTokenVerifier } from "./verify.js";

/** A comma-separated variable as its trimmed, non-empty items (unset: none). */
export const commaList = z
  .string()
  .optional()
  .transform((raw) =>
    (raw ?? "")
      .split(",")
      .map((item) => item.trim())
      .filter((item) => item !== ""),
  );

export const authEnv = {
  AUTH_MODE: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      const mode = raw === undefined || raw.trim() === "" ? "verify" : raw.trim();
      if (mode === "verify" || mode === "optional" || mode === "off") return mode;
      ctx.addIssue({
        code: "custom",
        message: `must be verify, optional or off, got ${JSON.stringify(raw)}`,
      });
      return z.NEVER;
    }),
  AUTH_AUDIENCES: commaList,
  AUTH_ALLOWED_INVOKERS: commaList.transform((entries, ctx) => {
    const parsed: AllowedInvoker[] = [];
    const bad: string[] = [];
    for (const entry of entries) {
      const invoker = parseAllowedInvoker(entry);
      if (typeof invoker === "string") bad.push(invoker);
      else parsed.push(invoker);
    }
    // One line for the variable, naming every bad entry.
    if (bad.length > 0) {
      ctx.addIssue({ code: "custom", message: bad.join("; ") });
      return z.NEVER;
    }
    return parsed;
  }),
  AUTH_ISSUER: z.string().optional(),
  AUTH_JWKS_URL: z.string().optional(),
};

export interface AuthConfig {
  AUTH_MODE: "verify" | "optional" | "off";
  AUTH_AUDIENCES: string[];
  AUTH_ALLOWED_INVOKERS: AllowedInvoker[];
  AUTH_ISSUER?: string | undefined;
  AUTH_JWKS_URL?: string | undefined;
  /** Set by Cloud Run in every container (serverEnv reads it). */
  K_SERVICE?: string | undefined;
}

/**
 * A rule across variables, in the shape of runtime's EnvRule (this package does not depend on
 * runtime): it runs whenever the variables in `needs` parsed, whatever else failed, so a bad
 * STATS_URL no longer hides a missing AUTH_AUDIENCES.
 */
export interface ConfigRule<Config> {
  needs: readonly (keyof Config & string)[];
  check(config: Config, ctx: z.RefinementCtx): void;
}

/** The rules across the AUTH_* variables, for a schema that includes `authEnv`. */
export const authRules: readonly ConfigRule<AuthConfig>[] = [
  {
    needs: ["AUTH_MODE", "K_SERVICE"],
    check(config, ctx) {
      // Cloud Run sets K_SERVICE in every container: off there would serve anyone, unchecked.
      if (config.AUTH_MODE !== "off") return;
      if (config.K_SERVICE !== undefined && config.K_SERVICE.trim() !== "") {
        ctx.addIssue({
          code: "custom",
          path: ["AUTH_MODE"],
          message: `off is refused on Cloud Run (K_SERVICE=${JSON.stringify(config.K_SERVICE)} is set): use verify, or optional for a public gateway`,
        });
      }
    },
  },
  {
    needs: ["AUTH_MODE", "AUTH_AUDIENCES"],
    check(config, ctx) {
      if (config.AUTH_MODE === "off") return;
      const bad = config.AUTH_AUDIENCES.filter((audience) => {
        try {
          return new URL(audience).origin !== audience;
        } catch {
          return true;
        }
      });
      // One line for the variable, naming every bad audience.
      if (bad.length > 0) {
        ctx.addIssue({
          code: "custom",
          path: ["AUTH_AUDIENCES"],
          message: `must be URLs as callers name them, scheme://host[:port] without a trailing /, got ${bad.map((audience) => JSON.stringify(audience)).join(", ")}`,
        });
      }
      if (config.AUTH_AUDIENCES.length === 0) {
        ctx.addIssue({
          code: "custom",
          path: ["AUTH_AUDIENCES"],
          message: `is required with AUTH_MODE=${config.AUTH_MODE}: this service's own URL(s), e.g. https://route-xyz.a.run.app`,
        });
      }
    },
  },
  {
    needs: ["AUTH_MODE", "AUTH_ISSUER", "AUTH_JWKS_URL"],
    check(config, ctx) {
      if (config.AUTH_MODE === "off") return;
      if ((config.AUTH_ISSUER === undefined) !== (config.AUTH_JWKS_URL === undefined)) {
        ctx.addIssue({
          code: "custom",
          path: [config.AUTH_ISSUER === undefined ? "AUTH_ISSUER" : "AUTH_JWKS_URL"],
          message: "AUTH_ISSUER and AUTH_JWKS_URL go together (leave both unset for Google)",
        });
      }
    },
  },
];

/**
 * For services that must never be public (route, stats): AUTH_MODE=optional would serve
 * callers without a token. Terraform refuses it too.
 */
export const refusePublicAuth: ConfigRule<Pick<AuthConfig, "AUTH_MODE">> = {
  needs: ["AUTH_MODE"],
  check(config, ctx) {
    if (config.AUTH_MODE === "optional") {
      ctx.addIssue({
        code: "custom",
        path: ["AUTH_MODE"],
        message: "optional is for a public gateway only: this service is never public",
      });
    }
  },
};

export const endUserEnv = {
  // The identities whose `x-end-user` is believed: the gateway's service account email
  // (comma-separated if ever more than one). Unset: none, every call counts as its caller's.
  AUTH_END_USER_FROM: commaList.transform((emails, ctx) => {
    const bad = emails.find((email) => !/^[^\s@]+@[^\s@]+$/.test(email));
    if (bad !== undefined) {
      // One issue for the variable, however many items are bad: one line per bad variable.
      ctx.addIssue({
        code: "custom",
        message: `must be service account emails (the gateway's), comma-separated, got ${JSON.stringify(bad)}`,
      });
      return z.NEVER;
    }
    return emails;
  }),
};

export interface EndUserConfig {
  AUTH_MODE: "verify" | "optional" | "off";
  AUTH_END_USER_FROM: string[];
}

/**
 * Whose `x-end-user` this service believes. None with AUTH_MODE=off: nothing is verified then,
 * so an immediate caller could claim to be the gateway too.
 */
export function endUserSources(config: EndUserConfig, logger?: AuthLogger): string[] {
  if (config.AUTH_MODE === "off") return [];
  if (config.AUTH_END_USER_FROM.length === 0) {
    logger?.warn(
      {},
      "AUTH_END_USER_FROM is empty: no end user is accepted, every call counts as its immediate caller's",
    );
  }
  return config.AUTH_END_USER_FROM;
}

export interface ServiceAuth {
  /** For the service's own server. */
  serverInterceptors: grpc.ServerInterceptor[];
  /** The ID token of the calls to the peer at `peerUrl` (the token's audience); none when auth is off. */
  peerToken(peerUrl: string): ReturnType<typeof peerToken> | undefined;
  /** The verified caller of a call, for its log line ("" when auth is off). */
  callerOf(metadata: grpc.Metadata): string;
}

/** Just what serviceAuth says at start (a pino logger fits). */
export interface AuthLogger {
  warn(details: object, message: string): void;
}

/**
 * A service's auth, from its config: the server's check (the token, the invoker, then the
 * end-user policy, in one interceptor), the token interceptor for each peer, and the caller of
 * a call. `AUTH_END_USER_FROM` absent (the gateway's config has none): no caller may name an
 * end user.
 */
export function serviceAuth(
  config: AuthConfig & Partial<Pick<EndUserConfig, "AUTH_END_USER_FROM">>,
  logger?: AuthLogger,
): ServiceAuth {
  if (config.AUTH_MODE === "off") {
    logger?.warn({ authMode: "off" }, "AUTH_MODE=off: calls are not checked and carry no tokens");
    return {
      serverInterceptors: [unverifiedCalls(logger)],
      peerToken: () => undefined,
      callerOf: () => "",
    };
  }
  const endUserFrom =
    config.AUTH_END_USER_FROM === undefined
      ? []
      : endUserSources(
          { AUTH_MODE: config.AUTH_MODE, AUTH_END_USER_FROM: config.AUTH_END_USER_FROM },
          logger,
        );
  if (config.AUTH_MODE === "verify" && config.AUTH_ALLOWED_INVOKERS.length === 0) {
    logger?.warn(
      {},
      "AUTH_ALLOWED_INVOKERS is empty: every call but health checks will be refused",
    );
  }
  const issuers =
    config.AUTH_ISSUER && config.AUTH_JWKS_URL
      ? { [config.AUTH_ISSUER]: config.AUTH_JWKS_URL }
      : googleIssuers;
  if (config.AUTH_MODE === "optional") {
    logger?.warn(
      { authMode: "optional" },
      "AUTH_MODE=optional: calls without a token are served as the anonymous caller",
    );
  }
  const verifier = new IdTokenVerifier({
    audiences: config.AUTH_AUDIENCES,
    issuers,
    ...(logger ? { logger } : {}),
  });
  const sources = new IdTokenSources();
  return {
    serverInterceptors: [
      serverAuthInterceptor({
        verifier,
        allowedInvokers: config.AUTH_ALLOWED_INVOKERS,
        anonymous: config.AUTH_MODE === "optional",
        onAccepted: endUserPolicy(endUserFrom, logger),
      }),
    ],
    peerToken: (peerUrl) => {
      const source = sources.forAudience(peerUrl);
      // Fetch the first token now, not on the first call; a failure shows on the calls.
      source.token().catch(() => {});
      return peerToken(source);
    },
    callerOf: verifiedCaller,
  };
}

/**
 * AUTH_MODE=off: nothing is verified, so nothing a caller says about identity is kept: its own
 * x-verified-caller (handlers would count the call for it) and any end-user claim (dropped,
 * with the policy's warning).
 */
function unverifiedCalls(logger?: AuthLogger): grpc.ServerInterceptor {
  const dropClaims = endUserPolicy([], logger);
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, accept) {
            metadata.remove(verifiedCallerKey);
            dropClaims(metadata, method.path);
            accept(metadata);
          },
        });
      },
    });
}
