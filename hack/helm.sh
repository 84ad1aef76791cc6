#!/usr/bin/env bash
# Build Helm (helm.sh/helm/v3/cmd/helm) from Go modules into the tool cache outside the repository,
# for the chart in charts/nmisim/ and its tests. Idempotent: a binary that already reports the wanted
# version is not rebuilt (then this takes well under a second). Prints the binary's path on its last line.
#
#   hack/helm.sh            build helm if missing, print its path
#   hack/helm.sh --print    print the path only (no build; the file may not exist yet)
#
# HELM_VERSION must be a version the Go module proxy serves:
#   GOFLAGS=-mod=mod go list -m -versions helm.sh/helm/v3
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE_ROOT=${NMISIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nmisim}
DIR="$CACHE_ROOT/tools/helm-$HELM_VERSION"
BIN="$DIR/helm"
SRC="$DIR/src"

if [[ "${1:-}" == "--print" ]]; then echo "$BIN"; exit 0; fi

LOG_PREFIX=helm
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# `helm version --template` prints exactly the version it was built with (-X .../version.version).
if [[ -x "$BIN" ]] && [[ "$("$BIN" version --template '{{.Version}}' 2>/dev/null)" == "$HELM_VERSION" ]]; then
  echo "$BIN"
  exit 0
fi

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
command -v go >/dev/null || { say "go not found: install Go 1.26+ (helm v3.22 needs it)"; exit 1; }
mkdir -p "$SRC"
start=$SECONDS
say "building helm $HELM_VERSION into $DIR (first time: a few minutes on 2 cores)"

# --- a scratch module that requires helm.sh/helm/v3 at the wanted version (helm's own go.sum pins the rest).
cd "$SRC"
if [[ ! -f go.mod ]]; then
  go mod init local/nmisim-helm >/dev/null 2>&1
fi
if ! grep -q "helm.sh/helm/v3 $HELM_VERSION" go.mod; then
  say "resolving helm.sh/helm/v3@$HELM_VERSION"
  with_progress "go get" go get "helm.sh/helm/v3@$HELM_VERSION"
fi

# As helm's Makefile does: the version, and the Kubernetes version of `helm template`'s default
# .Capabilities (else 1.20) taken from the client-go it is built with (v0.N.x -> 1.N).
client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
k8s_minor=${client_go#v0.}; k8s_minor=${k8s_minor%%.*}
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor"

say "building helm (client-go $client_go)"
# A temporary name of this run's own: two builds at once (make test's and a unit test's) must not collide.
with_progress "go build" nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$BIN.tmp.$$" helm.sh/helm/v3/cmd/helm
mv "$BIN.tmp.$$" "$BIN"
got=$("$BIN" version --template '{{.Version}}')
[[ "$got" == "$HELM_VERSION" ]] || { say "built helm reports $got, not $HELM_VERSION"; exit 1; }
say "helm $HELM_VERSION ready in $(elapsed) ($(du -h "$BIN" | cut -f1))"
echo "$BIN"
