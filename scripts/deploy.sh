#!/usr/bin/env bash
# From a clone to three running Cloud Run services, then one smoke call through the gateway.
#   usage: scripts/deploy.sh            (after cp infra/terraform.tfvars.example infra/terraform.tfvars)
# Needs gcloud (logged in: gcloud auth login and gcloud auth application-default login),
# terraform >= 1.5, pnpm and node. Images are built by Cloud Build, so no local Docker is needed,
# and deployed by digest. What is deployed is exactly what is committed: a dirty tree is refused
# (ALLOW_DIRTY=1 overrides). The images of a commit are tagged with it and built once (the
# repository's tags are immutable): deploying the same commit again reuses them. A dirty tree's
# images are tagged <commit>-dirty-<hash of the tree as git sees it, untracked files included>:
# every different set of changes gets images of its own, and the same changes deployed again
# reuse theirs.
#   DEPLOY_AUTO_APPROVE=1   apply without the interactive terraform prompt (CI)
#   DEPLOY_RETRY_SECONDS=N  the first wait before a retry, doubled each time (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "deploy: $*" >&2
  exit 1
}
for tool in gcloud terraform pnpm node git; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH (see README: Deploying to Cloud Run)"
done
[[ -f infra/terraform.tfvars ]] ||
  fail "infra/terraform.tfvars is missing: cp infra/terraform.tfvars.example infra/terraform.tfvars and fill it in"

commit="$(git rev-parse --short=12 HEAD)"
tag="$commit"
if [[ -n "$(git status --porcelain)" ]]; then
  [[ "${ALLOW_DIRTY:-}" == 1 ]] || fail "uncommitted changes: commit them (or ALLOW_DIRTY=1) so the image tag names what is deployed"
  # The tree a commit of everything would have, written through a copy of the index so the
  # real one is untouched.
  index="$(mktemp)"
  cp "$(git rev-parse --git-path index)" "$index"
  tree="$(GIT_INDEX_FILE="$index" git add -A && GIT_INDEX_FILE="$index" git write-tree)"
  rm -f "$index"
  tag="${commit}-dirty-${tree:0:12}"
fi
retry_seconds="${DEPLOY_RETRY_SECONDS:-15}"
[[ "$retry_seconds" =~ ^[0-9]+$ ]] || fail "DEPLOY_RETRY_SECONDS must be a whole number of seconds, got '${retry_seconds}'"
approve=()
[[ "${DEPLOY_AUTO_APPROVE:-}" == 1 ]] && approve=(-auto-approve)
tf() { terraform -chdir=infra "$@"; }
# An expression evaluated against the configuration and state (strings come back quoted).
tf_eval() { echo "$1" | tf console | tr -d '"'; }

# New IAM bindings, and new service accounts as members of them, typically take effect within
# two minutes and can take seven or more (https://cloud.google.com/iam/docs/access-change-propagation).
# Six attempts with waits of 15, 30, 60, 120 and 240 s span almost eight minutes. Every attempt's
# output and errors are shown as they come.
propagation_attempts=6
retry() {
  local attempts="$1" what="$2" wait="$retry_seconds" attempt
  shift 2
  for ((attempt = 1; ; attempt++)); do
    "$@" && return 0
    ((attempt < attempts)) || return 1
    echo "deploy: ${what} failed (attempt ${attempt}/${attempts}); retrying in ${wait} s" >&2
    sleep "$wait"
    wait=$((wait * 2))
  done
}

echo "==> terraform init"
tf init -input=false

# The builder's account and roles, created by the bootstrap below if they are not there yet.
builder_resources=(
  google_service_account.builder
  google_artifact_registry_repository_iam_member.builder_writes_images
  google_project_iam_member.builder_writes_logs
  google_storage_bucket_iam_member.builder_reads_source
)
# Before the first apply there is no state, and `terraform state list` says so and fails: that
# only means nothing exists yet.
known="$(tf state list 2>/dev/null || true)"
build_attempts=1
for address in "${builder_resources[@]}"; do
  grep -qxF "$address" <<<"$known" || build_attempts=$propagation_attempts
done

# The repository must exist before images can be pushed, and the services need the images:
# so the APIs, the repository and the builder identity go first.
echo "==> bootstrap: APIs, Artifact Registry repository, builder service account"
tf apply -input=false "${approve[@]}" \
  -target=google_project_service.apis \
  -target=google_artifact_registry_repository_iam_member.builder_writes_images \
  -target=google_project_iam_member.builder_writes_logs \
  -target=google_storage_bucket_iam_member.builder_reads_source

image_base="$(tf_eval local.image_base)"
project="$(tf_eval var.project_id)"
services=(gateway route stats)

# Prints the digest the image's tag names; exits 3 if there is no such image (gcloud says
# NOT_FOUND), 1 on any other error, which it shows.
# gcloud artifacts docker images describe: https://cloud.google.com/sdk/gcloud/reference/artifacts/docker/images/describe
# (its image_summary.digest is the manifest's sha256 digest).
digest_of() {
  local errors digest status=0
  errors="$(mktemp)"
  digest="$(gcloud artifacts docker images describe "$1" --project "$project" \
    --format 'value(image_summary.digest)' 2>"$errors")" || status=$?
  if ((status != 0)); then
    if grep -qiE 'NOT_FOUND|not found' "$errors"; then
      rm -f "$errors"
      return 3
    fi
    cat "$errors" >&2
    rm -f "$errors"
    return 1
  fi
  rm -f "$errors"
  [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || {
    echo "deploy: no sha256 digest for $1 (gcloud printed '${digest}')" >&2
    return 1
  }
  echo "$digest"
}

build=1
found=0
for service in "${services[@]}"; do
  if digest="$(digest_of "${image_base}/${service}:${tag}")"; then
    printf -v "digest_${service}" '%s' "$digest"
    found=$((found + 1))
  else
    status=$?
    ((status == 3)) || fail "could not look up ${image_base}/${service}:${tag} (gcloud's error is above)"
  fi
done
if ((found == ${#services[@]})); then
  build=0
  echo "==> the images tagged ${tag} are already pushed: deploying them"
elif ((found > 0)); then
  # A build that stopped while pushing: the tags it pushed cannot be pushed again.
  tag="${tag}-$(date -u +%Y%m%d%H%M%S)"
fi

if ((build)); then
  echo "==> build and push ${image_base}/{gateway,route,stats}:${tag} with Cloud Build"
  ((build_attempts == 1)) ||
    echo "    the builder's account or roles are new: a build refused while IAM propagates is retried"
  # gcloud builds submit flags: https://cloud.google.com/sdk/gcloud/reference/builds/submit
  # (--service-account takes projects/<project>/serviceAccounts/<email>, the account's id).
  retry "$build_attempts" "the build" \
    gcloud builds submit --project "$project" --config infra/cloudbuild.yaml \
    --service-account "$(tf_eval google_service_account.builder.id)" \
    --gcs-source-staging-dir "gs://$(tf_eval google_storage_bucket.build_source.name)/source" \
    --substitutions "_IMAGE_BASE=${image_base},_TAG=${tag}" . ||
    fail "the build failed: Cloud Build's errors are above"
  for service in "${services[@]}"; do
    digest="$(digest_of "${image_base}/${service}:${tag}")" ||
      fail "${image_base}/${service}:${tag} is not in the repository after the build"
    printf -v "digest_${service}" '%s' "$digest"
  done
fi
# digest_gateway, digest_route and digest_stats are set above (printf -v).
images="image_digests={gateway=\"${digest_gateway}\",route=\"${digest_route}\",stats=\"${digest_stats}\"}"
echo "==> deploying gateway@${digest_gateway} route@${digest_route} stats@${digest_stats}"

# stats' IAM database user may log in but owns nothing: before stats first starts (its
# startup probe waits for its migrations), grant it what it needs, once. Idempotent.
echo "==> Cloud SQL for stats: instance, database, IAM user (the first time takes ~10 minutes)"
tf apply -input=false "${approve[@]}" -var "$images" \
  -target=google_sql_database.stats \
  -target=google_sql_user.stats
node services/stats/scripts/grant-database.mjs \
  "$(tf_eval google_sql_database_instance.stats.connection_name)" \
  "$(tf_eval google_sql_database.stats.name)" \
  "$(tf_eval google_sql_user.stats.name)"

echo "==> terraform apply (services, identities, invoker bindings, network)"
tf apply -input=false "${approve[@]}" -var "$images"

gateway_url="$(tf output -raw gateway_url)"
client="$(tf output -raw client_service_account_email)"
echo "==> smoke call: every gateway method through ${gateway_url}, as ${client}"
pnpm --silent build >/dev/null
# A Google-signed ID token for the gateway's URL as routeguide-client, minted by impersonation
# with google-auth-library (scripts/id-token.mjs: needs roles/iam.serviceAccountOpenIdTokenCreator
# on the account, i.e. the deployer in client_token_creators), then every gateway method once.
# The first deploy's bindings (token creator, invoker) are new: a refusal is retried.
smoke() {
  local token
  # GOOGLE_CLOUD_PROJECT: google-auth-library looks for a project before it makes the client,
  # and without one asks `gcloud config config-helper`, a Python start of seconds per call
  # (googleauth.js, getProjectId's order: env, key file, Cloud SDK, metadata server).
  token="$(GOOGLE_CLOUD_PROJECT="$project" node scripts/id-token.mjs "$client" "$gateway_url")" || return 1
  ROUTEGUIDE_TOKEN="$token" pnpm --silent cli --gateway "$gateway_url" --timeout 60 demo
}
retry "$propagation_attempts" "the smoke call" smoke ||
  fail "the smoke call through ${gateway_url} kept failing: see the errors above and the services' logs"
echo "==> deployed: ${gateway_url}"
