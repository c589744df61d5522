#!/usr/bin/env bash
# From a clone to three running Cloud Run services, then one smoke call through the gateway.
#   usage: scripts/deploy.sh            (after cp infra/terraform.tfvars.example infra/terraform.tfvars)
# Needs gcloud (logged in: gcloud auth login and gcloud auth application-default login),
# terraform >= 1.5, and pnpm (for the smoke call with the CLI). Images are built by Cloud Build,
# so no local Docker is needed. The images are tagged with the git commit: what is deployed is
# exactly what is committed (a dirty tree is refused; ALLOW_DIRTY=1 overrides, tagging -dirty).
#   DEPLOY_SKIP_BUILD=1  reuse the images already pushed for this commit
#   DEPLOY_AUTO_APPROVE=1 apply without the interactive terraform prompt (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "deploy: $*" >&2
  exit 1
}
for tool in gcloud terraform pnpm git; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH (see README: Deploying to Cloud Run)"
done
[[ -f infra/terraform.tfvars ]] ||
  fail "infra/terraform.tfvars is missing: cp infra/terraform.tfvars.example infra/terraform.tfvars and fill it in"

tag="$(git rev-parse --short=12 HEAD)"
if [[ -n "$(git status --porcelain)" ]]; then
  [[ "${ALLOW_DIRTY:-}" == 1 ]] || fail "uncommitted changes: commit them (or ALLOW_DIRTY=1) so the image tag names what is deployed"
  tag="${tag}-dirty"
fi
approve=()
[[ "${DEPLOY_AUTO_APPROVE:-}" == 1 ]] && approve=(-auto-approve)
tf() { terraform -chdir=infra "$@"; }
# An expression evaluated against the configuration and state (strings come back quoted).
tf_eval() { echo "$1" | tf console -var "image_tag=${tag}" | tr -d '"'; }

echo "==> terraform init"
tf init -input=false

# The repository must exist before images can be pushed, and the services need the images:
# so the APIs, the repository and the builder identity go first.
echo "==> bootstrap: APIs, Artifact Registry repository, builder service account"
tf apply -input=false "${approve[@]}" -var "image_tag=${tag}" \
  -target=google_project_service.apis \
  -target=google_artifact_registry_repository_iam_member.builder_writes_images \
  -target=google_project_iam_member.builder_writes_logs \
  -target=google_storage_bucket_iam_member.builder_reads_source

image_base="$(tf_eval local.image_base)"
project="$(tf_eval var.project_id)"

if [[ "${DEPLOY_SKIP_BUILD:-}" != 1 ]]; then
  echo "==> build and push ${image_base}/{gateway,route,stats}:${tag} with Cloud Build"
  gcloud builds submit --project "$project" --config infra/cloudbuild.yaml \
    --service-account "$(tf_eval google_service_account.builder.id)" \
    --gcs-source-staging-dir "gs://$(tf_eval google_storage_bucket.build_source.name)/source" \
    --substitutions "_IMAGE_BASE=${image_base},_TAG=${tag}" .
fi

# stats' IAM database user may log in but owns nothing: before stats first starts (its
# startup probe waits for its migrations), grant it what it needs, once. Idempotent.
echo "==> Cloud SQL for stats: instance, database, IAM user (the first time takes ~10 minutes)"
tf apply -input=false "${approve[@]}" -var "image_tag=${tag}" \
  -target=google_sql_database.stats \
  -target=google_sql_user.stats \
  -target=google_project_iam_member.stats_database_access
node services/stats/scripts/grant-database.mjs \
  "$(tf_eval google_sql_database_instance.stats.connection_name)" \
  "$(tf_eval google_sql_database.stats.name)" \
  "$(tf_eval google_sql_user.stats.name)"

echo "==> terraform apply (services, identities, invoker bindings, network)"
tf apply -input=false "${approve[@]}" -var "image_tag=${tag}"

gateway_url="$(tf output -raw gateway_url)"
client="$(tf output -raw client_service_account_email)"
echo "==> smoke call: every gateway method through ${gateway_url}, as ${client}"
# A Google-signed ID token for the gateway's URL, minted by impersonation (no key file). The
# caller needs roles/iam.serviceAccountOpenIdTokenCreator on the client account
# (client_token_creators in terraform.tfvars).
# New IAM bindings (token creator, invoker) take a minute or two to reach every check, so the
# first deploy's smoke call is tried for up to five minutes.
pnpm --silent build >/dev/null
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  if token="$(gcloud auth print-identity-token --impersonate-service-account "$client" \
    --audiences "$gateway_url" --include-email 2>/dev/null)" &&
    ROUTEGUIDE_TOKEN="$token" pnpm --silent cli --gateway "$gateway_url" --timeout 60 demo; then
    echo "==> deployed: ${gateway_url}"
    exit 0
  fi
  echo "smoke call failed (attempt ${attempt}/10): IAM bindings may still be propagating; retrying in 30 s" >&2
  sleep 30
done
fail "the smoke call through ${gateway_url} kept failing: see the errors above and the services' logs"
