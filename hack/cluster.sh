#!/usr/bin/env bash
# The embedded local cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
# (fake nodes that run pods without containers), all on 127.0.0.1, all state in .cluster/; and, where the
# machine can (root, a kernel with bridges and netfilter), one real node `nmisim-node` (containerd, runc,
# CNI bridge, kubelet, kube-proxy) that runs real containers: hack/node.sh.
#
#   hack/cluster.sh up                 start (a no-op when already up)
#   hack/cluster.sh down               stop exactly the processes `up` started, by pid
#   hack/cluster.sh status             what runs, where
#   hack/cluster.sh restart COMPONENT  stop and start one component, keeping its data and port
#   hack/cluster.sh stop COMPONENT     stop one component (fault tests)
#   hack/cluster.sh start COMPONENT    start one stopped component
#   hack/cluster.sh env                print `export KUBECONFIG=…`
#   hack/cluster.sh node-down          stop the real node and restore the host (exit 1: host differs)
#   hack/cluster.sh node-up            start the real node again
#
# Components: etcd kube-apiserver kube-controller-manager kube-scheduler kwok, and containerd kubelet
# kube-proxy (the real node).
# Environment: NMISIM_CLUSTER_DIR (default <repo>/.cluster), NMISIM_NODES (kwok nodes, default 2),
# NMISIM_REAL_NODE (auto: where the machine can; 1: required, fail otherwise; 0: never).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${NMISIM_CLUSTER_DIR:-$ROOT/.cluster}
NODES=${NMISIM_NODES:-2}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
START_TIMEOUT=${NMISIM_START_TIMEOUT:-120}

LOG_PREFIX=cluster
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"

kubectl_bin() {
  if [[ -x "$ROOT/.venv/bin/kubectl" ]]; then echo "$ROOT/.venv/bin/kubectl"; else command -v kubectl; fi
}
kc() { "$(kubectl_bin)" --kubeconfig "$D/kubeconfig" "$@"; }

pidfile() { echo "$D/pids/$1.pid"; }
# component_running NAME BINARY: NAME's recorded pid is alive and runs BINARY (the control plane's from
# $BIN; the real node's, hack/node.sh, through node_bin)
component_running() {
  local f; f=$(pidfile "$1")
  [[ -s "$f" ]] || return 1
  local pid; pid=$(<"$f")
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$2" ]]
}

# A free port below the kernel's ephemeral range: a port the kernel handed out (bind to 0) can be taken by
# any outgoing connection before the component binds it, and bind(0) twice can give the same port (etcd and
# kube-apiserver both got 56047 in CI run r10: "bind: address already in use").
free_port() { # free_port [TAKEN...]: a port none of TAKEN is
  python3 - "$@" <<'PY'
import random, socket, sys
taken = {int(p) for p in sys.argv[1:] if p.isdigit()}
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
for port in random.sample(range(10000, max(low, 10001)), min(200, max(low - 10000, 1))):
    if port in taken:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

ensure_ports() {
  local name
  touch "$D/ports.env"
  for name in ETCD_PORT ETCD_PEER_PORT API_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT KUBE_PROXY_HEALTHZ_PORT \
              KUBE_PROXY_METRICS_PORT; do
    # distinct ports: the same port must not be handed to two components
    local taken; mapfile -t taken < <(cut -d= -f2 "$D/ports.env")
    grep -q "^$name=" "$D/ports.env" || echo "$name=$(free_port "${taken[@]}")" >> "$D/ports.env"
  done
  # shellcheck disable=SC1091
  source "$D/ports.env"
}

sign() { # sign NAME SUBJECT EXTENSIONS: NAME.key and NAME.crt signed by the CA, in the current directory
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ensure_pki() {
  local p="$D/pki"
  mkdir -p "$p"
  (
    cd "$p"
    if [[ ! -s ca.crt ]]; then
      say "creating a CA, serving and client certificates, service-account keys"
      openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=nmisim-local-ca" \
        -keyout ca.key -out ca.crt 2>/dev/null
    fi
    # Pods reach the API server through the `kubernetes` Service address (10.96.0.1), so it is in the SANs.
    if ! openssl x509 -in apiserver.crt -noout -ext subjectAltName 2>/dev/null | grep -q 'IP Address:10.96.0.1'; then
      sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
    fi
    client() { [[ -s "$1.crt" ]] || sign "$1" "$2" "extendedKeyUsage=clientAuth"; }
    client admin "/O=system:masters/CN=nmisim-admin"
    # One identity for all of KCM's controllers (no per-controller service accounts here).
    client kube-controller-manager "/O=system:masters/CN=system:kube-controller-manager"
    client kube-scheduler "/CN=system:kube-scheduler"
    client kwok "/O=system:masters/CN=kwok"
    # The API server's client certificate towards kubelets (logs, exec, port-forward, stats).
    client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    if [[ ! -s sa.key ]]; then
      openssl genrsa -out sa.key 2048 2>/dev/null
      openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    fi
  )
}

write_kubeconfig() { # write_kubeconfig FILE USER
  b64() { base64 -w0 < "$1"; }
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nmisim-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$D/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$D/pki/$2.crt")
    client-key-data: $(b64 "$D/pki/$2.key")
contexts:
- name: nmisim-local
  context: {cluster: nmisim-local, user: $2, namespace: default}
current-context: nmisim-local
EOF
}

# kube-apiserver: --enable-aggregator-routing dials an admission webhook's (Azure Workload Identity's, on
# the real node) or an aggregated API's endpoints at their pod addresses, which the real node's bridge
# routes, instead of their Service address, which only kube-proxy's rules translate (and which
# hack/node.sh's NMISIM-OUTPUT refuses untranslated, so it never follows the default route).
args_for() {
  case "$1" in
    etcd) echo "--name=nmisim --data-dir=$D/etcd \
      --listen-client-urls=http://127.0.0.1:$ETCD_PORT --advertise-client-urls=http://127.0.0.1:$ETCD_PORT \
      --listen-peer-urls=http://127.0.0.1:$ETCD_PEER_PORT --initial-advertise-peer-urls=http://127.0.0.1:$ETCD_PEER_PORT \
      --initial-cluster=nmisim=http://127.0.0.1:$ETCD_PEER_PORT --unsafe-no-fsync=true --log-level=warn" ;;
    kube-apiserver) echo "--etcd-servers=http://127.0.0.1:$ETCD_PORT \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=$API_PORT \
      --tls-cert-file=$D/pki/apiserver.crt --tls-private-key-file=$D/pki/apiserver.key --cert-dir=$D/pki \
      --client-ca-file=$D/pki/ca.crt \
      --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=$D/pki/sa.pub \
      --service-account-signing-key-file=$D/pki/sa.key \
      --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true --authorization-mode=Node,RBAC \
      --enable-admission-plugins=PodNodeSelector,PodTolerationRestriction \
      --kubelet-client-certificate=$D/pki/apiserver-kubelet-client.crt --kubelet-client-key=$D/pki/apiserver-kubelet-client.key \
      --kubelet-preferred-address-types=InternalIP,Hostname \
      --endpoint-reconciler-type=none --enable-aggregator-routing=true \
      --profiling=false --v=0 ${NMISIM_APISERVER_EXTRA_ARGS:-}" ;;
    kube-controller-manager) echo "--kubeconfig=$D/kube-controller-manager.kubeconfig \
      --authentication-kubeconfig=$D/kube-controller-manager.kubeconfig \
      --authorization-kubeconfig=$D/kube-controller-manager.kubeconfig \
      --leader-elect=false --use-service-account-credentials=false \
      --controllers=namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller,deployment-controller,replicaset-controller,daemonset-controller,statefulset-controller,job-controller,cronjob-controller,ttl-after-finished-controller,pod-garbage-collector-controller,endpointslice-controller,node-lifecycle-controller \
      --service-account-private-key-file=$D/pki/sa.key --root-ca-file=$D/pki/ca.crt \
      --bind-address=127.0.0.1 --secure-port=0 --v=0" ;;
    kube-scheduler) echo "--kubeconfig=$D/kube-scheduler.kubeconfig \
      --authentication-kubeconfig=$D/kube-scheduler.kubeconfig \
      --authorization-kubeconfig=$D/kube-scheduler.kubeconfig \
      --leader-elect=false --bind-address=127.0.0.1 --secure-port=0 --v=0" ;;
    kwok) echo "--kubeconfig=$D/kwok.kubeconfig --config=$BIN/kwok-stages.yaml \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
      --node-lease-duration-seconds=40 --cidr=10.244.0.1/16" ;;
    *) die "unknown component $1 (one of: ${COMPONENTS[*]})" ;;
  esac
}

start_one() {
  local c=$1
  component_running "$c" "$BIN/$c" && return 0
  mkdir -p "$D/logs" "$D/pids"
  # shellcheck disable=SC2046
  setsid "$BIN/$c" $(args_for "$c") >>"$D/logs/$c.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$c")"
  wait_ready "$c"
}

wait_ready() { wait_until "$START_TIMEOUT" "$1 to be ready (see $D/logs/$1.log)" component_ready "$1"; }
component_ready() { # component_ready COMPONENT: ready to serve; it dies when the component has exited
  local c=$1
  # Alive is checked first: right after the fork the pid may not have exec'd the binary yet.
  kill -0 "$(<"$(pidfile "$c")")" 2>/dev/null || die "$c exited; last lines of $D/logs/$c.log:
$(tail -n 15 "$D/logs/$c.log")"
  case "$c" in
    etcd) curl -sf "http://127.0.0.1:$ETCD_PORT/health" >/dev/null ;;
    kube-apiserver) [[ "$(curl -sk "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null)" == ok ]] ;;
    # No endpoint to ask (--secure-port=0; kwok serves none here): started, that is, the forked pid has
    # exec'd the binary. wait_cluster then waits for what they do (nodes Ready, the ServiceAccount).
    *) component_running "$c" "$BIN/$c" ;;
  esac
}

terminate() { # terminate PID: TERM, up to 10 s, then KILL
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
}

stop_one() {
  local c=$1 f
  f=$(pidfile "$c")
  [[ -s "$f" ]] || return 0
  component_running "$c" "$BIN/$c" && terminate "$(<"$f")"
  rm -f "$f"
}

ensure_nodes() {
  local i manifest=""
  for i in $(seq 1 "$NODES"); do
    manifest+="---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: \"0\"}
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/agent: \"\"
spec:
  podCIDR: 10.244.$i.0/24
  podCIDRs: [10.244.$i.0/24]
status:
  addresses:
  - {type: InternalIP, address: 10.240.0.$((3 + i))}
  - {type: Hostname, address: kwok-node-$i}
  allocatable: {cpu: \"1k\", memory: 1Ti, pods: \"20000\"}
  capacity: {cpu: \"1k\", memory: 1Ti, pods: \"20000\"}
"
  done
  # Create only: a node's status (its addresses) is set at creation, as a kubelet does it.
  printf '%s' "$manifest" | kc create -f - >/dev/null 2>&1 || true
}

wait_cluster() {
  WAIT_INTERVAL=0.5 wait_until "$START_TIMEOUT" "$NODES Ready nodes and the default ServiceAccount (logs in $D/logs)" \
    cluster_ready
}
cluster_ready() {
  local ready sa
  # Ready, and untainted: the node lifecycle controller lifts node.kubernetes.io/not-ready.
  ready=$(kc get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}{"\n"}{end}' 2>/dev/null | grep -c '^True/$' || true)
  sa=$(kc get serviceaccount default -n default -o name 2>/dev/null || true)
  ((ready >= NODES)) && [[ -n "$sa" ]]
}

up() {
  local t0=$SECONDS all=1 c
  for c in "${COMPONENTS[@]}"; do component_running "$c" "$BIN/$c" || all=0; done
  if ((all)) && [[ -s "$D/kubeconfig" ]] && kc get --raw /readyz >/dev/null 2>&1; then
    ensure_ports
    node_up
    say "already up: export KUBECONFIG=$D/kubeconfig"
    return 0
  fi
  mkdir -p "$D"
  # a start that fails half-way stops what it started (the host as found: no etcd left listening)
  trap 'rc=$?; if ((rc)); then say "up failed: stopping what it started"; down >/dev/null 2>&1 || true; fi' EXIT
  ensure_ports
  ensure_pki
  write_kubeconfig "$D/kubeconfig" admin
  write_kubeconfig "$D/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "$D/kube-scheduler.kubeconfig" kube-scheduler
  write_kubeconfig "$D/kwok.kubeconfig" kwok
  for c in etcd kube-apiserver; do
    say "starting $c"
    start_one "$c"
  done
  ensure_nodes
  for c in kube-controller-manager kube-scheduler kwok; do
    say "starting $c"
    start_one "$c"
  done
  wait_cluster
  node_up
  say "up in $((SECONDS - t0)) s: $NODES kwok nodes$(node_running && echo " and the real node $NODE_NAME"), API at https://127.0.0.1:$API_PORT"
  say "export KUBECONFIG=$D/kubeconfig"
  trap - EXIT
}

down() {
  local i
  [[ -d "$D/pids" ]] || { say "nothing to stop"; return 0; }
  # The operator and anything else hack/ started in the background record their pids here too.
  for f in "$D"/pids/*.pid; do
    [[ -e "$f" ]] || continue
    local name; name=$(basename "$f" .pid)
    [[ " ${COMPONENTS[*]} ${NODE_COMPONENTS[*]} " == *" $name "* ]] && continue
    terminate "$(<"$f")"
    rm -f "$f"
  done
  local rc=0
  node_down || rc=$?
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_one "${COMPONENTS[$i]}"; done
  say "stopped"
  return "$rc"
}

cluster_status() {
  local c
  for c in "${COMPONENTS[@]}"; do
    if component_running "$c" "$BIN/$c"; then printf '  %-24s running (pid %s)\n' "$c" "$(<"$(pidfile "$c")")"
    else printf '  %-24s stopped\n' "$c"; fi
  done
  node_status
  # shellcheck disable=SC1091
  [[ -s "$D/ports.env" ]] && { source "$D/ports.env"; printf '  %-24s https://127.0.0.1:%s\n' api "$API_PORT"; }
  return 0
}

# shellcheck source=hack/node.sh
source "$ROOT/hack/node.sh"

BIN=$(NMISIM_QUIET=1 "$ROOT/hack/k8s-bins.sh" --print)
cmd=${1:-status}
case "$cmd" in
  up)
    [[ -x "$BIN/kwok" ]] || BIN=$("$ROOT/hack/k8s-bins.sh" | tail -n 1)
    up ;;
  down) down ;;
  status) cluster_status ;;
  env) echo "export KUBECONFIG=$D/kubeconfig" ;;
  node-up) ensure_ports; node_up ;;
  node-down) node_down ;;
  restart|stop|start)
    c=${2:-}; [[ -n "$c" ]] || die "usage: $0 $cmd COMPONENT"
    ensure_ports
    if [[ " ${NODE_COMPONENTS[*]} " == *" $c "* ]]; then
      if [[ "$cmd" != start ]]; then say "stopping $c"; node_stop "$c"; fi
      if [[ "$cmd" != stop ]]; then
        say "starting $c"; node_start "$c"
        [[ $c == kube-proxy ]] && node_jumps_first
      fi
      exit 0
    fi
    args_for "$c" >/dev/null
    if [[ "$cmd" != start ]]; then say "stopping $c"; stop_one "$c"; fi
    if [[ "$cmd" != stop ]]; then say "starting $c"; start_one "$c"; fi
    ;;
  *) die "usage: $0 up|down|status|restart C|stop C|start C|env|node-up|node-down" ;;
esac
