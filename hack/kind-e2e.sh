#!/usr/bin/env bash
# The cluster tests against a kind cluster, with the operator running in it as a Deployment:
# build the image from operator/Dockerfile, load it into kind, install crds/ and manifests/, wait until
# the operator is Available, run tests/integration -m cluster with NMISIM_OPERATOR=external (tests that
# restart the operator process or need the embedded cluster skip themselves), delete the cluster.
#
#   hack/kind-e2e.sh [--help] [PYTEST_ARGS...]    extra arguments go to pytest, e.g. -k verdicts -x
#
# Needs docker (with a running engine), kind, kubectl (.venv/bin/kubectl from `make install`, or on PATH)
# and the test environment (.venv, `make install`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=kind-e2e

usage() {
  cat <<EOF
Usage: hack/kind-e2e.sh [--help] [PYTEST_ARGS...]

Creates a kind cluster, builds and loads the operator image, installs crds/ and manifests/, waits for
Deployment nmisim-system/nmisim-operator to be Available, runs the cluster tests against it
(NMISIM_OPERATOR=external) and deletes the cluster. Extra arguments are passed to pytest.

Environment:
  KIND_CLUSTER_NAME  cluster name (default: nmisim-e2e). An existing cluster of that name is reused and
                     never deleted.
  KIND_NODE_IMAGE    node image (default: kindest/node:v1.36.1; pin it with @sha256:...)
  KIND_WORKERS       worker nodes besides the control plane (default: 1; the tests want >= 2 nodes)
  KEEP_CLUSTER=1     keep the cluster (and its kubeconfig) afterwards
  SKIP_BUILD=1       do not build the image; load the existing nmisim-operator:dev
  WAIT_TIMEOUT       for CRDs and the Deployment (default: 180s)
  E2E_TESTS          what pytest runs (default: tests/integration)
  VENV               the test environment (default: <repo>/.venv)
EOF
}

for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
  esac
done

CLUSTER=${KIND_CLUSTER_NAME:-nmisim-e2e}
# The tag alone is not a pin: whoever runs this first with Docker should replace the default with
# kindest/node:v1.36.x@sha256:<digest> from the kind release notes (it cannot be looked up on machines
# without Docker, where this script was written).
NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.36.1}
WORKERS=${KIND_WORKERS:-1}
KEEP=${KEEP_CLUSTER:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-180s}
E2E_TESTS=${E2E_TESTS:-tests/integration}
VENV=${VENV:-$ROOT/.venv}
# The image manifests/deployment.yaml names (imagePullPolicy: IfNotPresent, so the loaded one is used).
IMAGE=nmisim-operator:dev
NAMESPACE=nmisim-system
DEPLOYMENT=nmisim-operator

LOG_PREFIX=$PROG
# Bold on a terminal only (NO_COLOR: lib.sh's switch, a shell variable here, not exported to children).
[[ -t 2 ]] || NO_COLOR=1
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"

# --- prerequisites: one line naming everything that is missing, with where to get it.
missing=()
command -v docker >/dev/null 2>&1 || missing+=("docker (https://docs.docker.com/engine/install/)")
command -v kind >/dev/null 2>&1 || missing+=("kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
if [[ -x "$VENV/bin/kubectl" ]]; then
  KUBECTL=$VENV/bin/kubectl
elif command -v kubectl >/dev/null 2>&1; then
  KUBECTL=$(command -v kubectl)
else
  missing+=("kubectl (\`make install\` puts one in .venv/bin)")
fi
if ((${#missing[@]})); then
  joined=$(printf '%s, ' "${missing[@]}")
  die "missing ${joined%, }"
fi
[[ -x "$VENV/bin/pytest" ]] || die "no test environment at $VENV: run \`make install\` first"
[[ "$WORKERS" =~ ^[0-9]+$ ]] || die "KIND_WORKERS must be a number, not '$WORKERS'"
docker info >/dev/null 2>&1 || die "docker is installed but its engine does not answer (\`docker info\` fails)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nmisim-kind-e2e.XXXXXX")
export KUBECONFIG=$WORK/kubeconfig
CREATED=0

# shellcheck disable=SC2317  # called by the EXIT trap only
cleanup() {
  local rc=$?
  trap - EXIT
  if ((CREATED)) && [[ "$KEEP" != 1 ]]; then
    say "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || say "could not delete kind cluster $CLUSTER"
    rm -rf "$WORK"
  elif ((CREATED)) && [[ -s "$KUBECONFIG" ]]; then
    say "cluster $CLUSTER kept; export KUBECONFIG=$KUBECONFIG"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

diagnose() { # what a failed wait or test run needs to be understood
  say "operator pods, events and log:"
  "$KUBECTL" -n "$NAMESPACE" get pods -o wide >&2 || true
  "$KUBECTL" -n "$NAMESPACE" describe pods -l app.kubernetes.io/component=operator >&2 || true
  "$KUBECTL" -n "$NAMESPACE" logs "deployment/$DEPLOYMENT" --tail=100 >&2 || true
}

# --- the cluster
existing=$(kind get clusters 2>/dev/null || true)
if grep -qx -- "$CLUSTER" <<<"$existing"; then
  say "reusing existing kind cluster $CLUSTER (it will not be deleted)"
else
  say "creating kind cluster $CLUSTER ($NODE_IMAGE; nodes: 1 control plane, $WORKERS worker(s))"
  config=$'kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n'
  for ((i = 0; i < WORKERS; i++)); do config+=$'- role: worker\n'; done
  CREATED=1
  printf '%s' "$config" | kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config - --wait 120s
fi
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
"$KUBECTL" get --raw /readyz >/dev/null
"$KUBECTL" wait --for=condition=Ready nodes --all --timeout="$WAIT_TIMEOUT"

# --- the operator image
cd "$ROOT"
if [[ "$SKIP_BUILD" == 1 ]]; then
  say "SKIP_BUILD=1: using the existing image $IMAGE"
else
  say "building $IMAGE from operator/Dockerfile"
  docker build -f operator/Dockerfile -t "$IMAGE" .
fi
say "loading $IMAGE into $CLUSTER"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# --- CRDs, then the kustomize base
say "installing crds/"
"$KUBECTL" apply -f crds/
"$KUBECTL" wait --for=condition=Established crd -l app.kubernetes.io/part-of=nmisim --timeout="$WAIT_TIMEOUT"
say "installing manifests/"
"$KUBECTL" apply -k manifests/
if ((!CREATED)); then
  # Same tag, maybe a new image: start a fresh pod so the one just loaded runs.
  "$KUBECTL" -n "$NAMESPACE" rollout restart "deployment/$DEPLOYMENT"
  "$KUBECTL" -n "$NAMESPACE" rollout status "deployment/$DEPLOYMENT" --timeout="$WAIT_TIMEOUT" ||
    { diagnose; die "deployment $NAMESPACE/$DEPLOYMENT did not roll out within $WAIT_TIMEOUT"; }
fi
say "waiting for deployment $NAMESPACE/$DEPLOYMENT to be Available"
if ! "$KUBECTL" -n "$NAMESPACE" wait --for=condition=Available "deployment/$DEPLOYMENT" \
  --timeout="$WAIT_TIMEOUT"; then
  diagnose
  die "deployment $NAMESPACE/$DEPLOYMENT not Available within $WAIT_TIMEOUT"
fi

# --- the tests, against this cluster and the operator running in it
say "running $E2E_TESTS -m cluster against $CLUSTER (NMISIM_OPERATOR=external)"
rc=0
# E2E_TESTS may name several paths: split on whitespace on purpose.
# shellcheck disable=SC2086
PATH="$VENV/bin:$PATH" KUBECONFIG="$KUBECONFIG" NMISIM_OPERATOR=external \
  "$VENV/bin/pytest" $E2E_TESTS -m cluster "$@" || rc=$?
if ((rc)); then
  diagnose
  say "tests failed (pytest exit $rc)"
fi
exit "$rc"
