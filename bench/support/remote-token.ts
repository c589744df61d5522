// The ID token `pnpm bench --gateway` sends: from Application Default Credentials through
// google-auth-library (on the metadata server path, GCE_METADATA_HOST, the local token
// authority's client identity), a token given with --token / BENCH_TOKEN, or none (--no-token).
// Each h2load run is a process of its own with the token in its headers, so the token only has
// to last one run: a fetched one is fetched again when it would not; a given one that would
// expire before the bench ends is refused before anything is measured.
import { Compute, GoogleAuth } from "google-auth-library";

export type TokenChoice = { kind: "adc" } | { kind: "given"; token: string } | { kind: "none" };

export class TokenProblem extends Error {}

interface Claims {
  exp?: number;
  email?: string;
  aud?: string;
}

/** The claims of a JWT, read without checking its signature (the server checks it). */
export function readClaims(token: string): Claims | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    return JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Claims;
  } catch {
    return undefined;
  }
}

/**
 * An ID token for `audience` from google-auth-library. GoogleAuth.getIdTokenClient is ADC's
 * client after a check that it can mint ID tokens (googleauth.js: getClient(), then
 * `'fetchIdToken' in client`, else "Cannot fetch ID token in this environment"); its
 * idTokenProvider is that client. With GCE_METADATA_HOST set the metadata server is asked
 * directly, as packages/auth-client/src/tokens.ts does: ADC would otherwise pick a developer's
 * gcloud login first, which cannot mint ID tokens.
 */
async function fetchIdToken(audience: string): Promise<string> {
  if (process.env.GCE_METADATA_HOST) return new Compute().fetchIdToken(audience);
  const client = await new GoogleAuth().getIdTokenClient(audience);
  return client.idTokenProvider.fetchIdToken(audience);
}

const marginSeconds = 30;
const clock = (seconds: number) => `${new Date(seconds * 1000).toISOString().slice(11, 19)} UTC`;

export class BenchToken {
  private current: string | undefined;

  constructor(
    readonly choice: TokenChoice,
    private readonly audience: string,
  ) {
    if (choice.kind === "given") this.current = choice.token;
  }

  /** Where the token comes from, for the bench's header line. */
  describe(): string {
    const email = this.current ? readClaims(this.current)?.email : undefined;
    const who = email ? ` as ${email}` : "";
    if (this.choice.kind === "none") return "no token (--no-token)";
    if (this.choice.kind === "given") return `the token given (--token or BENCH_TOKEN)${who}`;
    const from = process.env.GCE_METADATA_HOST
      ? `the metadata server at ${process.env.GCE_METADATA_HOST}`
      : "Application Default Credentials";
    return `an ID token for ${this.audience} from ${from}${who}`;
  }

  /** The caller's email in the token, if it has one. */
  email(): string | undefined {
    return this.current ? readClaims(this.current)?.email : undefined;
  }

  /**
   * The headers for a run that lasts `seconds` from now: the token in both headers the repo
   * sends it in (packages/auth-client/src/interceptors.ts: a Cloud Run front end checks
   * X-Serverless-Authorization and passes Authorization on untouched for the service's own
   * check). Throws TokenProblem when no token can last that long.
   */
  async headersFor(seconds: number): Promise<Record<string, string>> {
    if (this.choice.kind === "none") return {};
    const needed = Date.now() / 1000 + seconds + marginSeconds;
    if (this.choice.kind === "adc" && !lasts(this.current, needed)) {
      try {
        this.current = await fetchIdToken(this.audience);
      } catch (error) {
        throw new TokenProblem(
          `no ID token for ${this.audience} from ${process.env.GCE_METADATA_HOST ? `the metadata server at ${process.env.GCE_METADATA_HOST}` : "Application Default Credentials"}: ${(error as Error).message}; pass one with --token (e.g. from \`node scripts/id-token.mjs <service account> <gateway URL>\`), or --no-token for a public gateway`,
        );
      }
    }
    const token = this.current as string;
    const expiry = readClaims(token)?.exp;
    // A token that is no JWT, or has no expiry, is left to the checked call to judge.
    if (typeof expiry === "number" && expiry < needed) {
      throw new TokenProblem(
        this.choice.kind === "given"
          ? `the token given expires at ${clock(expiry)}, before this bench would end (about ${clock(needed)}): pass a fresh one, or leave --token out to use Application Default Credentials`
          : `a fresh ID token expires at ${clock(expiry)}, before a ${seconds} s run would end`,
      );
    }
    const header = `Bearer ${token}`;
    return { authorization: header, "x-serverless-authorization": header };
  }
}

function lasts(token: string | undefined, untilSeconds: number): boolean {
  const expiry = token ? readClaims(token)?.exp : undefined;
  return typeof expiry === "number" && expiry >= untilSeconds;
}
