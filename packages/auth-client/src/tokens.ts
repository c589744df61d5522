// Outgoing: an ID token for each peer, with audience = the peer's URL, minted for this
// service's own identity by google-auth-library (on Cloud Run: the metadata server; locally:
// the local token authority through GCE_METADATA_HOST; elsewhere: a key file or impersonation
// through Application Default Credentials). Tokens are cached and refreshed before they
// expire; concurrent first calls share one fetch; a call never waits for a fetch while a
// valid token is at hand.
import { Compute, GoogleAuth } from "google-auth-library";
import { decodeJwt } from "jose";

export interface IdTokenProvider {
  fetchIdToken(audience: string): Promise<string>;
}

export interface TokenSourceOptions {
  /** Refresh this long before expiry; Google's ID tokens live an hour. */
  refreshBeforeExpiryMs?: number;
  /** Shared Application Default Credentials (one per process is enough). */
  auth?: GoogleAuth;
  /** Where tokens come from; by default from `auth` (see `defaultProvider`). */
  provider?: () => Promise<IdTokenProvider>;
  /** A fetch that takes longer fails (and the next call tries again). */
  fetchTimeoutMs?: number;
}

/**
 * The credentials that mint our ID tokens. With GCE_METADATA_HOST set (the local stack points it
 * at its token authority) the metadata server is used directly, whatever other credentials the
 * machine has (a developer's gcloud login must not replace the local identity); otherwise
 * Application Default Credentials: the metadata server on Cloud Run, a key file or
 * impersonation elsewhere.
 */
async function defaultProvider(auth: GoogleAuth): Promise<IdTokenProvider> {
  if (process.env.GCE_METADATA_HOST) return new Compute();
  const client = await auth.getClient();
  if (!("fetchIdToken" in client)) {
    throw new Error("these credentials cannot mint ID tokens (use a service account)");
  }
  return client as unknown as IdTokenProvider;
}

// After a failed fetch, calls fail at once with its error for this long instead of each
// starting a fetch; a refresh of a still-valid token is tried at most this often.
const retryAfterFailureMs = 1_000;
const minRefreshIntervalMs = 30_000;

export class IdTokenSource {
  private current: { token: string; expiresAt: number } | undefined;
  private inflight: Promise<string> | undefined;
  private lastFailure: { at: number; error: Error } | undefined;
  private lastRefreshAttempt = 0;
  private readonly refreshBeforeMs: number;
  private readonly fetchTimeoutMs: number;
  private readonly provider: () => Promise<IdTokenProvider>;
  /** Tokens fetched so far (for tests and metrics). */
  fetches = 0;

  constructor(
    readonly audience: string,
    options: TokenSourceOptions = {},
  ) {
    this.refreshBeforeMs = options.refreshBeforeExpiryMs ?? 5 * 60_000;
    this.fetchTimeoutMs = options.fetchTimeoutMs ?? 10_000;
    const auth = options.auth ?? new GoogleAuth();
    this.provider = options.provider ?? (() => defaultProvider(auth));
  }

  /**
   * The cached token while it is valid (starting a refresh behind it when it is close to
   * expiry), or undefined when a fetch is needed. Synchronous: the per-call fast path.
   */
  cached(): string | undefined {
    const now = Date.now();
    if (!this.current || this.current.expiresAt - 10_000 <= now) return undefined;
    if (
      this.current.expiresAt - this.refreshBeforeMs <= now &&
      now - this.lastRefreshAttempt >= minRefreshIntervalMs
    ) {
      // Still valid for a while: use it, refresh behind the call (not on every call).
      this.lastRefreshAttempt = now;
      this.fetch().catch(() => {});
    }
    return this.current.token;
  }

  /** A valid token: the cached one, or a fresh one when it is about to expire. */
  async token(): Promise<string> {
    const cached = this.cached();
    if (cached) return cached;
    if (this.lastFailure && Date.now() - this.lastFailure.at < retryAfterFailureMs) {
      throw this.lastFailure.error;
    }
    return this.fetch();
  }

  private fetch(): Promise<string> {
    this.inflight ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      try {
        const provider = await this.provider();
        this.fetches += 1;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no ID token within ${this.fetchTimeoutMs} ms`)),
            this.fetchTimeoutMs,
          );
        });
        const token = await Promise.race([provider.fetchIdToken(this.audience), timeout]);
        const { exp } = decodeJwt(token);
        if (typeof exp !== "number") throw new Error("the ID token has no expiry");
        this.current = { token, expiresAt: exp * 1000 };
        this.lastFailure = undefined;
        return token;
      } catch (error) {
        this.lastFailure = { at: Date.now(), error: error as Error };
        throw error;
      } finally {
        clearTimeout(timer);
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }
}

/** One token source per audience, shared by every call to that peer. */
export class IdTokenSources {
  private readonly sources = new Map<string, IdTokenSource>();
  private readonly auth: GoogleAuth;

  constructor(private readonly options: TokenSourceOptions = {}) {
    this.auth = options.auth ?? new GoogleAuth();
  }

  forAudience(audience: string): IdTokenSource {
    let source = this.sources.get(audience);
    if (!source) {
      source = new IdTokenSource(audience, { ...this.options, auth: this.auth });
      this.sources.set(audience, source);
    }
    return source;
  }
}
