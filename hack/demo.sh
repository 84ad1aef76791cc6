#!/usr/bin/env bash
# `make demo`: the embedded cluster, nmisim's CRDs and defaults, the operator in the background, and a
# sample AKS-like cluster; then the operator's verdicts for every sample pod; where the real node runs, live
# requests from real pods to the node agent (hack/demo_live.py; NMISIM_DEMO_LIVE=0 skips them).
# Leaves everything running.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${NMISIM_CLUSTER_DIR:-$ROOT/.cluster}
export KUBECONFIG=$D/kubeconfig
PATH=$ROOT/.venv/bin:$PATH
LOG_PREFIX=demo
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
# step NAME: the time since the previous step, said and kept for the summary at the end
steps=() last=$SECONDS
step() { steps+=("$1 $((SECONDS - last)) s"); say "$1: $((SECONDS - last)) s"; last=$SECONDS; }

start=$SECONDS
"$ROOT/hack/cluster.sh" up
step "cluster"

say "installing nmisim's CRDs, the default SimulationConfig and the upstream default exceptions"
kubectl apply -f "$ROOT/crds/" >/dev/null
kubectl wait --for=condition=Established crd -l app.kubernetes.io/part-of=nmisim --timeout=60s >/dev/null
if [[ -n ${IN_CLUSTER:-} ]]; then
  # The operator as users run it: its image as a pod (on the real node), installed from manifests/.
  kubectl get node nmisim-node >/dev/null 2>&1 \
    || die "IN_CLUSTER=1 needs the real node (hack/cluster.sh up starts it where the machine can: root)"
  pidfile=$D/pids/operator.pid
  if [[ -s $pidfile ]] && kill -0 "$(<"$pidfile")" 2>/dev/null; then
    say "stopping the local operator process (the pod takes over)"
    kill -TERM "$(<"$pidfile")"; rm -f "$pidfile"
  fi
  say "kubectl apply -k manifests/ (the operator Deployment runs nmisim-operator:dev on the real node)"
  kubectl apply -k "$ROOT/manifests/" >/dev/null
  kubectl -n nmisim-system wait --for=condition=Available deployment/nmisim-operator --timeout=120s >/dev/null
  say "operator pod: $(kubectl -n nmisim-system get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].metadata.name} on {.items[0].spec.nodeName}')"
else
  # The manifests' parts that make sense outside a container: namespace, ServiceAccount, RBAC, defaults.
  # The operator itself runs here as a local process (fast); `make demo IN_CLUSTER=1` runs its image
  # as a pod on the real node instead, from `kubectl apply -k manifests/`.
  kubectl delete deployment nmisim-operator -n nmisim-system --ignore-not-found >/dev/null 2>&1 || true
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
  say "(make demo IN_CLUSTER=1 runs the operator as a pod on the real node instead)"
fi

step "CRDs, defaults and the operator"

say "applying the sample cluster (examples/demo/)"
if ! out=$(kubectl apply -f "$ROOT/examples/demo/" 2>&1 >/dev/null); then
  # a Job's pod template is immutable: a sample changed since the last demo recreates its Jobs
  [[ $out == *"field is immutable"* ]] || die "kubectl apply -f examples/demo/: $out"
  say "the sample's Job changed since the last demo: recreating it"
  kubectl delete jobs -A -l app.kubernetes.io/part-of=nmisim-demo --wait=true >/dev/null
  kubectl apply -f "$ROOT/examples/demo/" >/dev/null
fi

python "$ROOT/hack/demo.py" --timeout "${NMISIM_DEMO_TIMEOUT:-120}"
step "the sample and its verdicts"

# Where the real node runs: live requests from real pods to the node agent (nmisim serve), beside what
# nmisim request predicts. The images are built once (minutes) and then cached (a second).
if [[ ${NMISIM_DEMO_LIVE:-1} != 0 ]] && kubectl get node nmisim-node >/dev/null 2>&1; then
  "$ROOT/hack/image.sh" build
  python "$ROOT/hack/demo_live.py"
  step "live requests from real pods (NMI's 80 s hold of the unbound one included)"
elif [[ ${NMISIM_DEMO_LIVE:-1} == 0 ]]; then
  say "NMISIM_DEMO_LIVE=0: the live requests to nmisim serve are skipped"
else
  say "no real node here (needs root): the live requests to nmisim serve are skipped"
fi
# AWI=1 (make demo AWI=1), where the real node runs: one pod before and after, live, through AWI v1.6.0's
# real webhook and the simulated Entra (hack/awi.sh builds AWI once, ~7 min; then cached).
if [[ -n ${AWI:-} ]] && [[ ${NMISIM_DEMO_LIVE:-1} != 0 ]] && kubectl get node nmisim-node >/dev/null 2>&1; then
  "$ROOT/hack/awi.sh" all >/dev/null
  "$ROOT/hack/awi-up.sh" up
  python "$ROOT/hack/demo_awi.py"
  step "one pod before and after the migration, live (real webhook, simulated Entra)"
elif [[ -n ${AWI:-} ]]; then
  say "AWI=1 needs the real node and the live part (root; NMISIM_DEMO_LIVE unset): skipped"
fi
say "leaving NMI: what Azure Workload Identity will give every sample pod (nmisim migrate --cluster; docs/migration.md)"
nmisim migrate --cluster
step "the migration table"
summary=$(printf '%s; ' "${steps[@]}")
say "done in $((SECONDS - start)) s (${summary%; })"
