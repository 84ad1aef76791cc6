#!/usr/bin/env bash
# Azure Workload Identity v1.6.0 (hack/awi.sh builds it) on the embedded cluster's real node, and the
# simulated Entra beside it, so real pods go through the real webhook, the real proxy and real SDKs.
#
#   hack/awi-up.sh up       import the three images into the real node's containerd; install the webhook
#                           from its patched deploy/azure-wi-webhook.yaml; let anyone read the cluster's OIDC
#                           discovery document and JWKS (as an AKS issuer URL is public); start
#                           `nmisim entra` on the node's bridge address, port 443; wait until a labelled
#                           pod is mutated (a server-side dry run) and the token endpoint answers
#   hack/awi-up.sh down     stop `nmisim entra`; delete the webhook's objects (the images stay on the node)
#   hack/awi-up.sh status   what runs
#   hack/awi-up.sh env      the settings the tests read (AWI_* and ENTRA_*), as NAME=VALUE lines
#
# Nothing here builds: `make awi` (hack/awi.sh all) does, and `make test` runs it where the real node runs.
# `hack/cluster.sh down` stops `nmisim entra` too (its pid is in .cluster/pids). Pods reach the simulated
# Entra as login.microsoftonline.com through a hostAliases entry of their own (docs/migration.md
# "Rehearse it in kind"); the host never resolves or dials that name.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${NMISIM_CLUSTER_DIR:-$ROOT/.cluster}
LOG_PREFIX=awi-up
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"

NS=azure-workload-identity-system
DEPLOY=azure-wi-webhook-controller-manager
MWC=azure-wi-webhook-mutating-webhook-configuration
DISCOVERY_CRB=nmisim-oidc-discovery
POD_SUBNET=${NMISIM_NODE_SUBNET:-10.89.0.0/24}
NODE_IP=${POD_SUBNET%.*/*}.1    # hack/node.sh's bridge address
ENTRA_PORT=443
ENTRA_HOST=login.microsoftonline.com
ISSUER_HOST=kubernetes.default.svc  # hack/cluster.sh: --service-account-issuer=https://kubernetes.default.svc
CTR_SOCK=$D/node/run/containerd.sock
PIDFILE=$D/pids/entra.pid
ENV_FILE=$D/awi.env
TIMEOUT=${NMISIM_AWI_TIMEOUT:-180}
NMISIM=$ROOT/.venv/bin/nmisim

kubectl_bin() {
  if [[ -x "$ROOT/.venv/bin/kubectl" ]]; then echo "$ROOT/.venv/bin/kubectl"; else command -v kubectl; fi
}
kc() { "$(kubectl_bin)" --kubeconfig "$D/kubeconfig" "$@"; }

paths() { # the build's paths (hack/awi.sh --print); dies when a part is not built
  eval "$("$ROOT/hack/awi.sh" --print)"
  local f
  for f in "$AWI_WEBHOOK_TAR" "$AWI_PROXY_TAR" "$AWI_PROXY_INIT_TAR" "$AWI_MANIFEST" \
    "$AWI_ENTRA_CA_DIR/server.crt" "$AWI_ENTRA_CA_DIR/server.key"; do
    [[ -s $f ]] || die "$f is missing: run \`make awi\` (hack/awi.sh all) first"
  done
}

tenant() { sed -n 's/^  AZURE_TENANT_ID: "\(.*\)"$/\1/p' "$AWI_MANIFEST"; }

# node_has IMAGE: the real node's containerd holds IMAGE (no `| grep -q`: under pipefail, ctr's SIGPIPE fails it)
node_has() { ctr --address "$CTR_SOCK" -n k8s.io images ls -q | grep -x "$1" >/dev/null; }

import_images() {
  if ! [[ -S $CTR_SOCK ]] || ! ctr --address "$CTR_SOCK" version >/dev/null 2>&1; then
    die "the real node's containerd is not running (hack/cluster.sh up starts it; it needs root)"
  fi
  local name tar image have
  for name in WEBHOOK PROXY PROXY_INIT; do
    tar=AWI_${name}_TAR image=AWI_${name}_IMAGE
    have=$(basename "$(readlink -f "${!tar}")")$(stat -c %Y "${!tar}")
    if [[ -s "$D/node/loaded-awi-$name" && "$(<"$D/node/loaded-awi-$name")" == "$have" ]] \
      && node_has "${!image}"; then
      continue
    fi
    ctr --address "$CTR_SOCK" -n k8s.io images import "${!tar}" >/dev/null
    node_has "${!image}" || die "importing ${!tar} gave no image ${!image}"
    echo "$have" > "$D/node/loaded-awi-$name"
    say "loaded ${!image} into the real node"
  done
}

# A labelled pod (ServiceAccount default, namespace default) as the webhook would admit it: server-side
# dry run, nothing is stored. Mutated when the webhook's projected token variable is in it.
PROBE='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"nmisim-awi-probe","labels":{"azure.workload.identity/use":"true"}},
"spec":{"containers":[{"name":"c","image":"nmisim-base:dev"}]}}'
mutates() { kc create --dry-run=server -n default -o json -f - <<<"$PROBE" 2>/dev/null | grep -q AZURE_FEDERATED_TOKEN_FILE; }

entra_running() { [[ -s $PIDFILE ]] && kill -0 "$(<"$PIDFILE")" 2>/dev/null; }
entra_answers() { # the tenant's discovery document over TLS, checked against the simulated Entra's CA
  entra_running || die "nmisim entra exited (see $D/logs/entra.log): $(tail -n 3 "$D/logs/entra.log")"
  curl -sf --max-time 2 --cacert "$AWI_ENTRA_CA_DIR/ca.crt" --resolve "$ENTRA_HOST:$ENTRA_PORT:$NODE_IP" \
    "https://$ENTRA_HOST/$(tenant)/v2.0/.well-known/openid-configuration" >/dev/null 2>&1
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_entra() {
  entra_running && return 0
  # shellcheck disable=SC1091
  source "$D/ports.env"
  local metrics; metrics=$(free_port)
  mkdir -p "$D/pids" "$D/logs"
  # --reload 2: the tests add federated credentials and see them used within seconds
  setsid "$NMISIM" entra --cluster --kubeconfig "$D/kubeconfig" --listen "$NODE_IP:$ENTRA_PORT" \
    --tls-cert "$AWI_ENTRA_CA_DIR/server.crt" --tls-key "$AWI_ENTRA_CA_DIR/server.key" \
    --issuer-ca "$D/pki/ca.crt" --issuer-address "$ISSUER_HOST=127.0.0.1:$API_PORT" \
    --metrics-listen "127.0.0.1:$metrics" --reload 2 >>"$D/logs/entra.log" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  {
    echo "AWI_NAMESPACE=$NS"
    echo "AWI_TENANT_ID=$(tenant)"
    echo "AWI_PROXY_IMAGE=$AWI_PROXY_IMAGE"
    echo "AWI_BIN=$AWI_BIN"
    echo "ENTRA_ADDRESS=$NODE_IP:$ENTRA_PORT"
    echo "ENTRA_HOST=$ENTRA_HOST"
    echo "ENTRA_METRICS=http://127.0.0.1:$metrics/metrics"
    echo "ENTRA_LOG=$D/logs/entra.log"
    echo "ENTRA_CA=$AWI_ENTRA_CA_DIR/ca.crt"
    echo "ISSUER=https://$ISSUER_HOST"
  } > "$ENV_FILE"
}

up() {
  local t0=$SECONDS
  if ! [[ -s $D/kubeconfig ]] || ! kc get --raw /readyz >/dev/null 2>&1; then die "no cluster runs in $D (hack/cluster.sh up)"; fi
  kc get node nmisim-node >/dev/null 2>&1 || die "the cluster has no real node (hack/cluster.sh up, as root)"
  paths
  import_images
  kc apply -f "$AWI_MANIFEST" >/dev/null
  # the simulated Entra reads /.well-known/openid-configuration and /openid/v1/jwks without credentials,
  # as Entra reads an AKS cluster's public issuer URL
  kc create clusterrolebinding "$DISCOVERY_CRB" --clusterrole=system:service-account-issuer-discovery \
    --group=system:unauthenticated --dry-run=client -o yaml | kc apply -f - >/dev/null
  say "webhook installed from $AWI_MANIFEST (tenant $(tenant)); waiting for it to mutate a labelled pod"
  WAIT_INTERVAL=1 wait_until "$TIMEOUT" "the webhook to mutate a labelled pod (kubectl -n $NS logs deploy/$DEPLOY)" mutates
  start_entra
  WAIT_INTERVAL=0.5 wait_until 30 "nmisim entra to answer on $NODE_IP:$ENTRA_PORT (see $D/logs/entra.log)" entra_answers
  say "up in $((SECONDS - t0)) s: webhook $AWI_VERSION mutating, simulated Entra at https://$ENTRA_HOST ($NODE_IP:$ENTRA_PORT)"
}

down() {
  if entra_running; then
    local pid; pid=$(<"$PIDFILE")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$ENV_FILE"
  if [[ -s $D/kubeconfig ]] && kc get --raw /readyz >/dev/null 2>&1; then
    eval "$("$ROOT/hack/awi.sh" --print)"
    # the webhook configuration first: no pod admitted meanwhile meets a webhook that is going away
    kc delete mutatingwebhookconfiguration "$MWC" --ignore-not-found >/dev/null
    [[ -s $AWI_MANIFEST ]] && kc delete -f "$AWI_MANIFEST" --ignore-not-found --wait=true --timeout=120s >/dev/null
    kc delete clusterrolebinding "$DISCOVERY_CRB" --ignore-not-found >/dev/null
  fi
  say "stopped"
}

status() {
  if entra_running; then echo "  nmisim entra             running (pid $(<"$PIDFILE"))"; else echo "  nmisim entra             stopped"; fi
  kc get deploy "$DEPLOY" -n "$NS" --no-headers 2>/dev/null | awk '{printf "  %-24s %s ready\n", "webhook", $2}' || true
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) [[ -s $ENV_FILE ]] || die "not up (hack/awi-up.sh up)"; cat "$ENV_FILE" ;;
  *) die "usage: $0 up|down|status|env" ;;
esac
