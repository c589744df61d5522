#!/usr/bin/env bash
# The production bundle of one service: its dist/, its package.json and only the production
# dependencies it needs, workspace packages included as copies (with the .proto files and
# data they ship). The container images and the bundle test both make bundles with this
# script, so what is tested is what is shipped.
#   usage: scripts/bundle-service.sh <gateway|route|stats> <empty output directory>
# The workspace must be built first (pnpm turbo build).
set -euo pipefail
service="${1:?usage: $0 <gateway|route|stats> <output directory>}"
out="${2:?usage: $0 <gateway|route|stats> <output directory>}"
case "$service" in gateway | route | stats) ;; *) echo "unknown service: $service" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
# --legacy: copy workspace dependencies without switching the whole workspace to injected
# packages (which would make local builds of those packages invisible until reinstall).
pnpm --filter "@cloudrun-grpc/${service}" deploy --prod --legacy "$out"
