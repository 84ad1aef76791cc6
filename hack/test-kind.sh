#!/usr/bin/env bash
# `make test-kind`: kind, for real. The images `make image` builds; a kind cluster from the node image
# built here (hack/kind.sh up: its own dockerd, the host's guards, a snapshot of the host); the README's
# install path as written and the kind suite (tests/kind); the integration suite against the operator
# installed in kind (hack/kind-e2e.sh, NMISIM_OPERATOR=external); then `hack/kind.sh down`, which deletes
# the cluster, stops its dockerd and fails unless the host is as it was. Needs root (as CI runs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_PREFIX=test-kind
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
cd "$ROOT"
if [[ $(id -u) != 0 ]]; then
  [[ -n ${CI:-} ]] && die "kind needs root here"
  say "skipped: kind needs root here (its dockerd and the host's rules)"
  exit 0
fi

t0=$SECONDS
hack/image.sh build            # nmisim-operator:dev and nmisim-clients:dev, with a dockerd of its own
helm=$(hack/helm.sh)
finish() {
  local rc=$?
  hack/kind.sh down || rc=1
  say "finished in $((SECONDS - t0)) s (exit $rc)"
  exit "$rc"
}
trap finish EXIT
hack/kind.sh up
# the user's environment: kind's kubeconfig, kind and helm on PATH, docker talking to kind's dockerd
KUBECONFIG=$(hack/kind.sh kubeconfig)
export KUBECONFIG NMISIM_KIND=1 DOCKER_HOST=unix://${NMISIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nmisim}/kind/docker/run/docker.sock
kind=$(hack/kind.sh kind-path)
export PATH=${kind%/*}:${helm%/*}:$ROOT/.venv/bin:$PATH
hack/kind.sh images nmisim-operator:dev nmisim-clients:dev   # `docker load` of what make image built
# as a kind user does after `make image` (docs/operations.md, "kind"); the README's serving block loads again
kind load docker-image nmisim-operator:dev nmisim-clients:dev
t1=$SECONDS
say "the kind suite: safety, the README's install path, the node agent"
.venv/bin/pytest -q -p no:cacheprovider tests/kind "$@"
say "kind suite passed in $((SECONDS - t1)) s"
t2=$SECONDS
KIND_CLUSTER_NAME=kind SKIP_BUILD=1 hack/kind-e2e.sh -q -p no:cacheprovider "$@"
say "integration suite against the operator in kind passed in $((SECONDS - t2)) s"
