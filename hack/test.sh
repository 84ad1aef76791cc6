#!/usr/bin/env bash
# `make test` after lint: every test against the embedded cluster, in two phases on one cluster.
#
#   1. unit, integration and real-node tests, with the operator run by the tests as a local process
#      (authenticated as the manifests' ServiceAccount);
#   2. where the real node runs: the install path for real (tests/incluster: the operator image from
#      manifests/ as a pod on the real node), then the cluster e2e suite (tests/integration) with
#      NMISIM_OPERATOR=external against that pod, the same suite hack/kind-e2e.sh runs on kind.
#
# A cluster this script started is stopped afterwards, and `cluster.sh down` then checks that the real
# node left the host as it found it (it exits 1 otherwise). NMISIM_REAL_NODE=1 (CI) makes a missing
# real node a failure. Extra arguments go to pytest in both phases.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${NMISIM_CLUSTER_DIR:-$ROOT/.cluster}
export KUBECONFIG=${KUBECONFIG:-$D/kubeconfig}
export PATH=$ROOT/.venv/bin:$PATH
PYTEST=$ROOT/.venv/bin/pytest
LOG_PREFIX='test'
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"

started=0
if [[ $KUBECONFIG == "$D/kubeconfig" ]]; then
  status=$("$ROOT/hack/cluster.sh" status)
  [[ $status == *"kube-apiserver"*running* ]] || started=1
  "$ROOT/hack/cluster.sh" up
fi
finish() {
  local rc=$?
  if ((started)) && [[ -z ${NMISIM_KEEP_CLUSTER:-} ]]; then
    "$ROOT/hack/cluster.sh" down || rc=1
  fi
  exit "$rc"
}
trap finish EXIT

real_node=0
kubectl get node nmisim-node >/dev/null 2>&1 && real_node=1

t0=$SECONDS
say "phase 1: unit, integration and real-node tests (operator as a local process)"
"$PYTEST" -q -m 'not faults and not incluster' "$@"
say "phase 1 passed in $((SECONDS - t0)) s"

if ((real_node)); then
  t1=$SECONDS
  say "phase 2: the operator image as a pod on the real node; the e2e suite against it (NMISIM_OPERATOR=external)"
  NMISIM_OPERATOR=external "$PYTEST" -q -m 'cluster and not faults' tests/incluster tests/integration "$@"
  say "phase 2 passed in $((SECONDS - t1)) s"
elif [[ ${NMISIM_REAL_NODE:-auto} == 1 ]]; then
  die "NMISIM_REAL_NODE=1 but the cluster has no real node"
else
  say "phase 2 skipped: no real node on this machine (hack/cluster.sh said why)"
fi
