// Incoming: checks a Google ID token (or one from the local token authority, the same way)
// and says who the caller is, or why not. RS256 only, against the issuer's published keys
// (fetched once, cached, fetched again when a token names an unknown key), audience compared
// exactly, issuer from an allow-list, expiry and issue time with a small skew, and a bounded
// lifetime. Tokens already verified are remembered until they expire, so a caller that sends
// the same token on every call pays for one signature check, not one per call.
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  type JSONWebKeySet,
  type JWSHeaderParameters,
  type JWTPayload,
  errors as joseErrors,
  jwtVerify,
} from "jose";
import { rateLimited } from "./rate-limited.js";

/** Google's ID tokens: either spelling of the issuer, one key set. */
export const googleIssuers: Record<string, string> = {
  "https://accounts.google.com": "https://www.googleapis.com/oauth2/v3/certs",
  "accounts.google.com": "https://www.googleapis.com/oauth2/v3/certs",
};

export interface VerifierOptions {
  /** The service's own URL(s): a token's `aud` must equal one of them exactly. */
  audiences: string[];
  /** Allowed issuer → the URL of its JWKS. */
  issuers: Record<string, string>;
  /** Tolerance for `exp` and `iat`, in seconds. */
  clockSkewSeconds?: number;
  /** Longest accepted `exp - iat`; Google's ID tokens live one hour. */
  maxLifetimeSeconds?: number;
  /** Longer tokens are refused before any parsing. */
  maxTokenBytes?: number;
  /** How many verified tokens to remember. */
  cacheSize?: number;
  /** Least time between two fetches of a key set for an unknown key id, in ms. */
  keyRefetchCooldownMs?: number;
  /** Told when a key set could not be fetched (rate-limited: see `keyErrorLogIntervalMs`). */
  logger?: VerifierLogger;
  /** Least time between two warnings about failed key fetches, per issuer, in ms. */
  keyErrorLogIntervalMs?: number;
}

/** Just what the verifier logs (a pino logger fits). */
export interface VerifierLogger {
  warn(details: object, message: string): void;
}

export interface VerifiedCaller {
  email: string;
  /** When the token expires (ms since the epoch). */
  expiresAt: number;
}

/** Why a token was not accepted; the message names the check and never contains the token. */
export class TokenRejected extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = "TokenRejected";
  }
}

export class IdTokenVerifier {
  private readonly keySets = new Map<string, IssuerKeys>();
  private readonly verified = new Map<string, VerifiedCaller>();
  // Concurrent first checks of one token share one signature check.
  private readonly checking = new Map<string, Promise<VerifiedCaller>>();
  private readonly skew: number;
  private readonly maxLifetime: number;
  private readonly maxTokenBytes: number;
  private readonly cacheSize: number;
  /** Signature checks made so far (tokens not found among those already verified). */
  signatureChecks = 0;

  constructor(private readonly options: VerifierOptions) {
    if (options.audiences.length === 0) throw new Error("a verifier needs at least one audience");
    if (Object.keys(options.issuers).length === 0)
      throw new Error("a verifier needs at least one issuer");
    this.skew = options.clockSkewSeconds ?? 30;
    this.maxLifetime = options.maxLifetimeSeconds ?? 24 * 3600;
    this.maxTokenBytes = options.maxTokenBytes ?? 16 * 1024;
    this.cacheSize = options.cacheSize ?? 10_000;
    for (const [issuer, jwksUrl] of Object.entries(options.issuers)) {
      this.keySets.set(
        issuer,
        new IssuerKeys(new URL(jwksUrl), options.keyRefetchCooldownMs ?? 30_000, {
          issuer,
          logger: options.logger,
          intervalMs: options.keyErrorLogIntervalMs ?? 60_000,
        }),
      );
    }
  }

  /**
   * The caller of a token already verified and not expired, without a promise: the per-call
   * fast path (a caller sends the same token on every call). Undefined: call `verify`.
   */
  verifiedNow(token: string): VerifiedCaller | undefined {
    const known = this.verified.get(token);
    if (known === undefined) return undefined;
    if (known.expiresAt + this.skew * 1000 > Date.now()) return known;
    this.verified.delete(token);
    return undefined;
  }

  /** The verified caller, or a TokenRejected saying which check failed. */
  async verify(token: string): Promise<VerifiedCaller> {
    const known = this.verifiedNow(token);
    if (known) return known;
    let pending = this.checking.get(token);
    if (!pending) {
      pending = this.check(token).finally(() => this.checking.delete(token));
      this.checking.set(token, pending);
    }
    const caller = await pending;
    this.remember(token, caller);
    return caller;
  }

  private async check(token: string): Promise<VerifiedCaller> {
    this.signatureChecks += 1;
    if (token.length > this.maxTokenBytes) {
      throw new TokenRejected(`token is longer than ${this.maxTokenBytes} bytes`);
    }
    const parts = token.split(".");
    if (parts.length !== 3) throw new TokenRejected("token is not a JWT (an access token?)");
    if (parts[2] === "SIGNATURE_REMOVED_BY_GOOGLE") {
      // What Cloud Run passes on after checking the token itself: never trusted here.
      throw new TokenRejected(
        "token signature was removed by Cloud Run's front end (send the token in X-Serverless-Authorization too)",
      );
    }
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new TokenRejected("token header is malformed");
    }
    if (alg !== "RS256")
      throw new TokenRejected(`token algorithm ${JSON.stringify(alg)} is not RS256`);

    const issuer = unverifiedIssuer(token);
    const keySet = issuer === undefined ? undefined : this.keySets.get(issuer);
    if (!keySet) throw new TokenRejected("token issuer is not allowed");

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, (header) => keySet.keyFor(header), {
        algorithms: ["RS256"],
        issuer,
        audience: this.options.audiences,
        clockTolerance: this.skew,
        maxTokenAge: this.maxLifetime,
        requiredClaims: ["exp", "iat"],
      }));
    } catch (error) {
      throw new TokenRejected(describeJoseError(error));
    }
    // jose accepts an array `aud` that merely contains one of ours; a token minted for several
    // services at once is not one for this service: `aud` must be one string (or a
    // one-element array) equal to one of our audiences.
    const aud =
      Array.isArray(payload.aud) && payload.aud.length === 1 ? payload.aud[0] : payload.aud;
    if (typeof aud !== "string" || !this.options.audiences.includes(aud)) {
      throw new TokenRejected("token audience is not this service alone");
    }
    const {
      exp,
      iat,
      email,
      email_verified: emailVerified,
    } = payload as JWTPayload & {
      email?: unknown;
      email_verified?: unknown;
    };
    if (typeof exp !== "number" || typeof iat !== "number" || exp - iat > this.maxLifetime) {
      throw new TokenRejected(`token lifetime is over ${this.maxLifetime} s`);
    }
    if (typeof email !== "string" || email === "")
      throw new TokenRejected("token has no email claim");
    if (emailVerified !== true) throw new TokenRejected("token email is not verified");
    return { email, expiresAt: exp * 1000 };
  }

  private remember(token: string, caller: VerifiedCaller): void {
    if (this.verified.size >= this.cacheSize) {
      // Oldest first: Map keeps insertion order.
      const oldest = this.verified.keys().next().value;
      if (oldest !== undefined) this.verified.delete(oldest);
    }
    this.verified.set(token, caller);
  }
}

function unverifiedIssuer(token: string): string | undefined {
  try {
    const payload = JSON.parse(
      Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"),
    );
    return typeof payload?.iss === "string" ? payload.iss : undefined;
  } catch {
    throw new TokenRejected("token payload is malformed");
  }
}

function describeJoseError(error: unknown): string {
  if (error instanceof joseErrors.JWTExpired) return "token has expired";
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === "aud") return "token audience is not this service";
    if (error.claim === "iat") return "token issue time is in the future or too old";
    if (error.claim === "nbf") return "token is not valid yet";
    return `token claim ${JSON.stringify(error.claim)} failed: ${error.reason}`;
  }
  if (error instanceof joseErrors.JWKSNoMatchingKey) return "token key id is unknown to the issuer";
  if (error instanceof joseErrors.JWSSignatureVerificationFailed)
    return "token signature is invalid";
  if (error instanceof KeysUnavailable) return "issuer keys are unreachable";
  if (error instanceof joseErrors.JWSInvalid || error instanceof joseErrors.JWTInvalid)
    return "token is malformed";
  return "token is invalid";
}

/** The issuer's keys could not be had (fetch failed, timed out, or answered nonsense). */
class KeysUnavailable extends Error {}

/**
 * One issuer's published keys. Fetched on first use, again every 10 minutes and when a token
 * names an unknown key id, but at most once per `cooldownMs` (so tokens with made-up key ids
 * cannot make us hammer the issuer). When a refresh fails, the keys already held stay in use
 * for up to a day; with none held, every token is refused (fail closed).
 */
class IssuerKeys {
  private keys: ReturnType<typeof createLocalJWKSet> | undefined;
  private fetchedAt = 0;
  private lastAttempt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<void> | undefined;
  private static readonly freshForMs = 10 * 60_000;
  private static readonly usableForMs = 24 * 3600_000;

  /** A failed fetch: one warning per interval at most, counting the failures in between. */
  private readonly failed: (reason: string) => void;

  constructor(
    private readonly url: URL,
    private readonly cooldownMs: number,
    log: { issuer: string; logger?: VerifierLogger; intervalMs: number },
  ) {
    this.failed = rateLimited(log.intervalMs, (heldBack, reason: string) =>
      log.logger?.warn(
        {
          issuer: log.issuer,
          jwksUrl: this.url.href,
          reason,
          failures: heldBack + 1,
          keysHeld: this.keys !== undefined,
        },
        this.keys
          ? "token keys could not be refreshed: keeping the keys held"
          : "token keys could not be fetched: every token is refused until they are",
      ),
    );
  }

  async keyFor(header: JWSHeaderParameters) {
    const now = Date.now();
    if (!this.keys || now - this.fetchedAt > IssuerKeys.freshForMs) await this.refresh();
    if (!this.keys || Date.now() - this.fetchedAt > IssuerKeys.usableForMs) {
      throw new KeysUnavailable("no usable keys");
    }
    try {
      return await this.keys(header);
    } catch (error) {
      if (!(error instanceof joseErrors.JWKSNoMatchingKey)) throw error;
      await this.refresh();
      return this.keys(header);
    }
  }

  /** Fetches the key set unless one was tried within the cooldown; failures keep what we had. */
  private refresh(): Promise<void> {
    if (Date.now() - this.lastAttempt < this.cooldownMs) return this.inflight ?? Promise.resolve();
    this.lastAttempt = Date.now();
    this.inflight ??= (async () => {
      try {
        const response = await fetch(this.url, { signal: AbortSignal.timeout(5_000) });
        if (!response.ok) {
          this.failed(`HTTP ${response.status}`);
          return;
        }
        const jwks = (await response.json()) as JSONWebKeySet;
        if (!Array.isArray(jwks?.keys)) {
          this.failed("the answer is not a JWKS");
          return;
        }
        this.keys = createLocalJWKSet(jwks);
        this.fetchedAt = Date.now();
      } catch (error) {
        // Unreachable or not JSON: keep the keys we have (if any), and say so.
        this.failed((error as Error)?.message ?? String(error));
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }
}
