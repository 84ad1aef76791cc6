#!/usr/bin/env bash
# `make demo`: the embedded cluster, nmisim's CRDs and defaults, the operator in the background, and a
# sample AKS-like cluster; then the operator's verdicts for every sample pod. Leaves everything running.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${NMISIM_CLUSTER_DIR:-$ROOT/.cluster}
export KUBECONFIG=$D/kubeconfig
PATH=$ROOT/.venv/bin:$PATH
say() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }

start=$SECONDS
"$ROOT/hack/cluster.sh" up

say "installing nmisim's CRDs, the default SimulationConfig and the upstream default exceptions"
kubectl apply -f "$ROOT/crds/" >/dev/null
kubectl wait --for=condition=Established crd -l app.kubernetes.io/part-of=nmisim --timeout=60s >/dev/null
# The manifests' parts that make sense outside a container: namespace, ServiceAccount, RBAC, defaults.
# (The operator itself runs here as a local process; `kubectl apply -k manifests/` deploys it in a
# cluster that can run its image.)
for f in namespace serviceaccount rbac simulationconfig exceptions; do
  kubectl apply -f "$ROOT/manifests/$f.yaml" >/dev/null
done

pidfile=$D/pids/operator.pid
if [[ -s $pidfile ]] && kill -0 "$(<"$pidfile")" 2>/dev/null; then
  say "operator already running (pid $(<"$pidfile"))"
else
  say "starting the operator in the background (log: $D/logs/operator.log)"
  mkdir -p "$D/pids" "$D/logs"
  setsid nmisim run --standalone --all-namespaces --metrics-port "${NMISIM_METRICS_PORT:-0}" \
    >>"$D/logs/operator.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
fi

say "applying the sample cluster (examples/demo/)"
kubectl apply -f "$ROOT/examples/demo/" >/dev/null

python "$ROOT/hack/demo.py" --timeout "${NMISIM_DEMO_TIMEOUT:-120}"
say "done in $((SECONDS - start)) s"
