// Outgoing: an ID token for each peer, with audience = the peer's URL, minted for this
// service's own identity by google-auth-library (on Cloud Run: the metadata server; locally:
// the local token authority through GCE_METADATA_HOST; elsewhere: a key file or impersonation
// through Application Default Credentials). Tokens are cached and refreshed before they
// expire; concurrent first calls share one fetch; a call never waits for a fetch while a
// valid token is at hand.
import { GoogleAuth } from "google-auth-library";
import { decodeJwt } from "jose";

export interface TokenSourceOptions {
  /** Refresh this long before expiry; Google's ID tokens live an hour. */
  refreshBeforeExpiryMs?: number;
  /** Shared Application Default Credentials (one per process is enough). */
  auth?: GoogleAuth;
}

interface IdTokenProvider {
  fetchIdToken(audience: string): Promise<string>;
}

export class IdTokenSource {
  private current: { token: string; expiresAt: number } | undefined;
  private inflight: Promise<string> | undefined;
  private readonly refreshBeforeMs: number;
  private readonly auth: GoogleAuth;
  /** Tokens fetched so far (for tests and metrics). */
  fetches = 0;

  constructor(
    readonly audience: string,
    options: TokenSourceOptions = {},
  ) {
    this.refreshBeforeMs = options.refreshBeforeExpiryMs ?? 5 * 60_000;
    this.auth = options.auth ?? new GoogleAuth();
  }

  /** A valid token: the cached one, or a fresh one when it is about to expire. */
  async token(): Promise<string> {
    const now = Date.now();
    if (this.current && this.current.expiresAt - this.refreshBeforeMs > now)
      return this.current.token;
    if (this.current && this.current.expiresAt - 10_000 > now) {
      // Still valid for a while: use it, refresh behind the call.
      this.fetch().catch(() => {});
      return this.current.token;
    }
    return this.fetch();
  }

  private fetch(): Promise<string> {
    this.inflight ??= (async () => {
      try {
        const client = await this.auth.getClient();
        if (!("fetchIdToken" in client)) {
          throw new Error("these credentials cannot mint ID tokens (use a service account)");
        }
        this.fetches += 1;
        const token = await (client as unknown as IdTokenProvider).fetchIdToken(this.audience);
        const { exp } = decodeJwt(token);
        if (typeof exp !== "number") throw new Error("the ID token has no expiry");
        this.current = { token, expiresAt: exp * 1000 };
        return token;
      } finally {
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
