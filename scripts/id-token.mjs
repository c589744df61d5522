#!/usr/bin/env node
// An ID token for an audience, as a service account, minted by impersonation from this
// machine's Application Default Credentials (no key file):
//   node scripts/id-token.mjs <service account email> <audience>
// The token alone goes to stdout; a failure says why on stderr (Google's own reason) and exits 1.
//
// google-auth-library's Impersonated client calls the IAM Service Account Credentials API's
// generateIdToken, which needs only iam.serviceAccounts.getOpenIdToken on the account
// (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateIdToken),
// i.e. roles/iam.serviceAccountOpenIdTokenCreator: what client_token_creators get in infra/.
// `gcloud auth print-identity-token --impersonate-service-account` would not do: gcloud first
// mints an access token as the account, which needs roles/iam.serviceAccountTokenCreator
// (https://cloud.google.com/iam/docs/service-account-permissions), a broader role nobody here has.
// This is the token `pnpm test:deployed` gets from google-auth-library when ADC impersonates
// routeguide-client, minted the same way but with ADC left as the deployer's own login.
//
// IAM_CREDENTIALS_ENDPOINT: another endpoint for that API (a Private Service Connect endpoint,
// or a test's stand-in); default https://iamcredentials.googleapis.com.
import { GoogleAuth, Impersonated } from "google-auth-library";

const usage = "usage: node scripts/id-token.mjs <service account email> <audience>";
const [serviceAccount, audience, ...extra] = process.argv.slice(2);
if (!serviceAccount || !audience || extra.length > 0) {
  console.error(usage);
  process.exit(2);
}
if (!/^[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com$/.test(serviceAccount)) {
  console.error(
    `id-token: ${JSON.stringify(serviceAccount)} is not a service account email (…@<project>.iam.gserviceaccount.com)\n${usage}`,
  );
  process.exit(2);
}

// biome-ignore lint/suspicious/noUndeclaredEnvVars: read by this script, not by a turbo task
const endpoint = process.env.IAM_CREDENTIALS_ENDPOINT || undefined;
try {
  const auth = new GoogleAuth({ scopes: ["https://www.googleapis.com/auth/cloud-platform"] });
  const client = new Impersonated({
    sourceClient: await auth.getClient(),
    targetPrincipal: serviceAccount,
    ...(endpoint ? { endpoint } : {}),
  });
  // includeEmail: the services check the caller by the email claim.
  const token = await client.fetchIdToken(audience, { includeEmail: true });
  process.stdout.write(`${token}\n`);
} catch (error) {
  // A refused call carries Google's reason in the body, e.g. "Permission
  // 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist)."
  const reason = error?.response?.data?.error?.message ?? error?.message ?? String(error);
  const status = error?.response?.status;
  console.error(
    `id-token: no ID token for ${audience} as ${serviceAccount}${status ? ` (HTTP ${status})` : ""}: ${reason}`,
  );
  if (status === 403) {
    console.error(
      "id-token: your account needs roles/iam.serviceAccountOpenIdTokenCreator on that account " +
        "(client_token_creators in infra/terraform.tfvars); a new binding takes a minute or two to take effect.",
    );
  }
  process.exit(1);
}
