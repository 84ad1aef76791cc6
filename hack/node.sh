#!/usr/bin/env bash
# shellcheck shell=bash
# The real node `nmisim-node`, sourced by hack/cluster.sh: containerd (CRI) + runc + CNI bridge from
# Debian's packages, kubelet and kube-proxy built from Go modules, beside kwok's fake nodes. Facts and
# settings measured on these machines: ../shared/reference/real-node.md (and docs/development.md, "The real node").
#
# Order matters for safety: the host is snapshotted, then the bridge and the safety rules exist before
# containerd, kubelet or any pod starts; `node_down` undoes everything and compares the host with the
# snapshot (a difference is an error, written to $D/node/host-diff.txt).

# --- the contract with hack/cluster.sh, which sources this file -----------------------------------------
# Before sourcing it, cluster.sh sources hack/lib.sh, defines the functions of NODE_NEEDS_FUNCTIONS
# (checked here, once) and sets D (its state directory) and ROOT (the repository). Later it sets BIN
# (the Kubernetes binaries), START_TIMEOUT, and the ports (ensure_ports: API_PORT, KUBELET_PORT,
# KUBELET_HEALTHZ_PORT, KUBE_PROXY_HEALTHZ_PORT, KUBE_PROXY_METRICS_PORT) before it calls node_up. Each
# entry point cluster.sh calls (node_up, node_down, node_start, node_stop, node_status, node_running)
# names what it needs with node_require_vars. cluster.sh reads NODE_COMPONENTS and NODE_NAME back.
NODE_NEEDS_FUNCTIONS=(say warn die wait_until net_snapshot snapshot_diff iptables_words   # hack/lib.sh
  kc pidfile terminate sign write_kubeconfig component_running)                          # hack/cluster.sh
for _f in "${NODE_NEEDS_FUNCTIONS[@]}"; do
  declare -F "$_f" >/dev/null && continue
  printf 'hack/node.sh: needs function %s (hack/cluster.sh or hack/lib.sh defines it before sourcing hack/node.sh)\n' \
    "$_f" >&2
  exit 1
done
unset _f
# node_require_vars NAME...: each NAME is a set, non-empty variable; else one line naming it, and exit 1
node_require_vars() {
  local name who=${FUNCNAME[1]}
  [[ $who == source ]] && who="sourcing it"
  for name in "$@"; do
    [[ -n ${!name:-} ]] || die "hack/node.sh: $who needs $name, which hack/cluster.sh sets"
  done
}
node_require_vars D ROOT

NODE_NAME=nmisim-node
BRIDGE=${NMISIM_NODE_BRIDGE:-nmisim0}
POD_SUBNET=${NMISIM_NODE_SUBNET:-10.89.0.0/24}
NODE_IP=${POD_SUBNET%.*/*}.1        # the bridge's address: the node IP, the kubelet's listen address
SERVICE_RANGE=10.96.0.0/16          # kube-apiserver's --service-cluster-ip-range (hack/cluster.sh)
KWOK_POD_RANGE=10.244.0.0/16        # kwok's --cidr: the fake nodes' pod addresses (hack/cluster.sh)
KWOK_NODE_RANGE=10.240.0.0/24       # the fake nodes' InternalIPs (hack/cluster.sh ensure_nodes)
KUBE_SVC_IP=10.96.0.1               # the `kubernetes` Service (first address of --service-cluster-ip-range)
NODE_TAINT=nmisim.dev/node=real:NoSchedule
NODE_LABEL=nmisim.dev/node=real
N=$D/node
CTR_SOCK=$N/run/containerd.sock
NODE_COMPONENTS=(containerd kubelet kube-proxy)
NO_PULL_PROXY=http://127.0.0.1:1
# sysctls that containerd's CNI bridge (ip_forward), kubelet (protectKernelDefaults: false) and
# kube-proxy may change; recorded at `up`, put back at `down`.
SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv4.conf.default.forwarding
  net.ipv4.conf.all.route_localnet net.ipv4.conf.default.route_localnet net.ipv6.conf.all.forwarding
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait net.netfilter.nf_conntrack_tcp_be_liberal
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Paths outside $D that these programs create when absent; removed at `down` only if absent before.
HOST_PATHS=(/var/log/pods /var/log/containers /var/lib/cni /run/netns /opt/containerd /etc/cni /opt/cni
  /run/containerd /var/lib/kubelet /etc/kubernetes /var/lib/containerd /run/xtables.lock)

node_bin() {
  case "$1" in
    containerd) echo /usr/bin/containerd ;;
    *) echo "$BIN/$1" ;;
  esac
}

# --- can this machine run it? ------------------------------------------------------------------------
# NMISIM_REAL_NODE: auto (default: run it where the machine can), 1 (required: fail if it cannot), 0 (never).
node_wanted() {
  case "${NMISIM_REAL_NODE:-auto}" in
    0 | no | false) return 1 ;;
  esac
  local why
  if why=$(node_unsupported); then
    [[ ${NMISIM_REAL_NODE:-auto} == auto ]] || die "real node required (NMISIM_REAL_NODE=${NMISIM_REAL_NODE}) but $why"
    say "no real node: $why (kwok's fake nodes only)"
    return 1
  fi
  return 0
}

node_unsupported() { # prints why not, returns 0 when the machine cannot run the real node
  if [[ $(id -u) != 0 ]]; then echo "not root"; return 0; fi
  [[ -d /sys/fs/cgroup ]] || { echo "no /sys/fs/cgroup"; return 0; }
  if ! "$ROOT/hack/host-deps.sh" >/dev/null 2>&1; then
    echo "host packages missing and not installable: $("$ROOT/hack/host-deps.sh" --check 2>&1 | tail -1)"; return 0
  fi
  [[ -x $BIN/kubelet && -x $BIN/kube-proxy ]] || { echo "kubelet/kube-proxy not built (hack/k8s-bins.sh)"; return 0; }
  local owner
  owner=$(ip -o link show "$BRIDGE" 2>/dev/null | sed -n 's/.* alias nmisim:\(.*\)$/\1/p')
  if ip link show "$BRIDGE" >/dev/null 2>&1 && [[ $owner != "$D" ]]; then
    if [[ -n $owner ]] && ! owner_alive "$owner"; then
      # Left by a cluster whose processes are gone (killed, machine handed over): restore the host from
      # that cluster's own snapshot, then this cluster may run the node.
      say "taking down a stale real node left by $owner" >&2
      if [[ -s $owner/node/host-before/links ]]; then
        NMISIM_CLUSTER_DIR=$owner NMISIM_REAL_NODE=0 "$ROOT/hack/cluster.sh" node-down >&2 || true
      fi
      ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
    else
      echo "bridge $BRIDGE exists and belongs to another running cluster (${owner:-unknown})"; return 0
    fi
  fi
  if ! ip link show "$BRIDGE" >/dev/null 2>&1 && ip -4 route show | grep -q "^${POD_SUBNET%/*}"; then
    echo "$POD_SUBNET is already routed on this machine (set NMISIM_NODE_SUBNET)"; return 0
  fi
  return 1
}

owner_alive() { # owner_alive DIR: that cluster's kubelet or containerd still runs
  local c f
  for c in kubelet containerd; do
    f=$1/pids/$c.pid
    [[ -s $f ]] && kill -0 "$(<"$f")" 2>/dev/null && return 0
  done
  return 1
}

node_running() {
  node_require_vars D BIN
  local c
  for c in "${NODE_COMPONENTS[@]}"; do component_running "$c" "$(node_bin "$c")" || return 1; done
}

# --- host snapshot ------------------------------------------------------------------------------------
# What `down` must leave as `up` found it. Normalised: no counters, timestamps, ifindexes or lifetimes.
host_snapshot() { # host_snapshot DIR
  local out=$1
  net_snapshot "$out"
  local s
  for s in "${SYSCTLS[@]}"; do
    printf '%s = %s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo absent)"
  done > "$out/sysctls"
  for s in "${HOST_PATHS[@]}"; do [[ -e $s ]] && echo "$s"; done > "$out/paths"
  { find /sys/fs/cgroup -maxdepth 2 -name kubepods -type d 2>/dev/null || true; } | sort > "$out/cgroups"
  # containerd 1.6 puts its shims' sockets in /run/containerd/s whatever its state directory is.
  { find /run/containerd/s -maxdepth 1 -type s 2>/dev/null || true; } | sort > "$out/shim-sockets"
  # Processes of the node (any program started with this cluster's node directory in its arguments).
  { pgrep -af -- "$N/" 2>/dev/null || true; } | { grep -v -e pgrep -e 'node.sh' || true; } | awk '{print $2}' | sort > "$out/processes"
}

host_compare() { # host_compare BEFORE AFTER: prints the differences, returns 1 when there are any
  snapshot_diff "$1" "$2" "${NET_SNAPSHOT_FILES[@]}" sysctls paths cgroups shim-sockets processes
}

# --- configuration files ------------------------------------------------------------------------------
node_configs() {
  mkdir -p "$N/run" "$N/containerd" "$N/cni/conf" "$N/cni/ipam" "$N/kubelet" "$N/pod-logs" "$D/logs" "$D/pids"
  cat > "$N/containerd/config.toml" <<EOF
# containerd for nmisim's real node (cluster.sh writes this file). Its own root, state and sockets.
version = 2
root = "$N/containerd/root"
state = "$N/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$N/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/nmisim-pause:dev"
  # No CAP_SYS_RESOURCE here: without this every sandbox fails (nsexec: failed to update oom_score_adj).
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  systemd_cgroup = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state beside containerd's, not in /run/containerd/runc.
        Root = "$N/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$N/cni/conf"
    max_conf_num = 1
EOF
  cat > "$N/cni/conf/10-nmisim.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "nmisim",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$N/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  # Pods have no cluster DNS here (no CoreDNS); their resolver points at their own loopback, so a name
  # lookup fails at once instead of leaving the machine.
  printf 'nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n' > "$N/resolv.conf"
  cat > "$N/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Measured on these machines (real-node.md): cgroups v1, no systemd, no CAP_SYS_RESOURCE.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CTR_SOCK
imageServiceEndpoint: unix://$CTR_SOCK
oomScoreAdj: 0
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
# Listen only on the bridge the harness made, never on the machine's uplink.
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $D/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $D/pki/kubelet-serving.crt
tlsPrivateKeyFile: $D/pki/kubelet-serving.key
registerNode: true
registerWithTaints:
  - {key: nmisim.dev/node, value: real, effect: NoSchedule}
podLogsDir: $N/pod-logs
resolvConf: $N/resolv.conf
clusterDomain: cluster.local
# Images cannot be pulled again here: never collect them; evict only when the disk is truly full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
nodeStatusUpdateFrequency: 10s
# Secret volumes follow their Secret within 10 s (default 1 min): the Workload Identity webhook waits for the
# certificates its cert-controller writes into one (hack/awi-up.sh).
syncFrequency: 10s
maxPods: 110
shutdownGracePeriod: 0s
EOF
  cat > "$N/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $D/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_SUBNET
# NodePorts only on the bridge address, never on the uplink; no route_localnet for localhost NodePorts.
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false, syncPeriod: 10s, minSyncPeriod: 0s}
# 0: kube-proxy leaves the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
EOF
}

node_pki() {
  local p=$D/pki
  [[ -s $p/kubelet.crt && -s $p/kube-proxy.crt && -s $p/kubelet-serving.crt ]] && return 0
  (
    cd "$p" || exit 1
    sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
    sign kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
    sign kubelet-serving "/CN=$NODE_NAME" "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME
extendedKeyUsage=serverAuth"
  )
}

# --- network: bridge, safety rules, the API server for pods -------------------------------------------
ipt() { iptables -w 5 "$@"; }
ip6t() { ip6tables -w 5 "$@"; }

# Installed before containerd starts, so before any pod exists:
#  * filter FORWARD: from the pod subnet to 169.254.0.0/16 or to anything off the pod subnet: REJECT
#    (bridged pod traffic passes FORWARD, bridge-nf-call-iptables is 1 here). Pods may reach other pods,
#    Services (DNATed to pods before FORWARD) and this machine (INPUT), nothing beyond it.
#  * filter INPUT: from the pod subnet to 169.254.0.0/16 that was not DNATed: REJECT (a link-local
#    address on the host itself). NMI's DNAT turns 169.254.169.254:80 into 127.0.0.1:2579 before INPUT.
#  * ip6tables FORWARD from the bridge: REJECT (pods get no IPv6 address; belt and braces).
#  * filter OUTPUT, this machine's own packets: to a Service address kube-proxy did not translate
#    ($SERVICE_RANGE) or to kwok's fake pod and node addresses ($KWOK_POD_RANGE, $KWOK_NODE_RANGE):
#    REJECT. The API server dials a webhook's or an aggregated API's endpoints
#    (--enable-aggregator-routing), never a Service address, and a node's InternalIP for `kubectl logs`
#    or `exec` (a kwok node has no kubelet behind it); should it, or anything on the host, try one of
#    these ranges, the packet is refused here instead of following the default route off the machine.
#  * nat: pods (PREROUTING) and hostNetwork pods (OUTPUT) reach the API server through the `kubernetes`
#    Service address, DNATed to 127.0.0.1:<port> (the API server stays on loopback; route_localnet on the
#    bridge only). The API server certificate names $KUBE_SVC_IP.
net_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip link set "$BRIDGE" alias "nmisim:$D"
    ip addr add "$NODE_IP/${POD_SUBNET#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  ipt -N NMISIM-FORWARD 2>/dev/null || ipt -F NMISIM-FORWARD
  ipt -A NMISIM-FORWARD -s "$POD_SUBNET" -d 169.254.0.0/16 -m comment --comment "nmisim: pods never reach link-local" -j REJECT
  ipt -A NMISIM-FORWARD -s "$POD_SUBNET" ! -d "$POD_SUBNET" -m comment --comment "nmisim: pods never leave this machine" -j REJECT
  ipt -N NMISIM-INPUT 2>/dev/null || ipt -F NMISIM-INPUT
  ipt -A NMISIM-INPUT -s "$POD_SUBNET" -d 169.254.0.0/16 -m comment --comment "nmisim: pods never reach link-local" -j REJECT
  ipt -N NMISIM-OUTPUT 2>/dev/null || ipt -F NMISIM-OUTPUT
  ipt -A NMISIM-OUTPUT -d "$SERVICE_RANGE" -m comment --comment "nmisim: untranslated Service addresses never leave" -j REJECT
  ipt -A NMISIM-OUTPUT -d "$KWOK_POD_RANGE" -m comment --comment "nmisim: kwok pod addresses are not real" -j REJECT
  ipt -A NMISIM-OUTPUT -d "$KWOK_NODE_RANGE" -m comment --comment "nmisim: kwok node addresses are not real" -j REJECT
  ip6t -N NMISIM-FORWARD 2>/dev/null || ip6t -F NMISIM-FORWARD
  ip6t -A NMISIM-FORWARD -i "$BRIDGE" -m comment --comment "nmisim: no IPv6 off the pod bridge" -j REJECT
  ipt -t nat -N NMISIM-APISERVER 2>/dev/null || ipt -t nat -F NMISIM-APISERVER
  ipt -t nat -A NMISIM-APISERVER -d "$KUBE_SVC_IP/32" -p tcp --dport 443 \
    -m comment --comment "nmisim: kubernetes Service -> API server on loopback" -j DNAT --to-destination "127.0.0.1:$API_PORT"
  jumps_first
}

# Our jumps stay first in their chains (kube-proxy inserts its own at the top when it starts): a new
# jump at position 1, then the older copies removed, so there is never a moment without one.
ensure_first() { # ensure_first iptables|ip6tables TABLE CHAIN RULE...
  local cmd=$1 table=$2 chain=$3 i; shift 3
  local want="-A $chain $*" rules
  mapfile -t rules < <("$cmd" -w 5 -t "$table" -S "$chain" | tail -n +2)
  [[ ${rules[0]:-} == "$want" ]] && return 0
  "$cmd" -w 5 -t "$table" -I "$chain" 1 "$@"
  for ((i = ${#rules[@]} - 1; i >= 0; i--)); do
    [[ ${rules[$i]} == "$want" ]] && "$cmd" -w 5 -t "$table" -D "$chain" $((i + 2))
  done
  return 0
}
kube_proxy_jumps_settled() {
  local now last="" same=0
  for _ in $(seq 1 80); do
    now=$( { ipt -S FORWARD; ipt -S INPUT; ipt -t nat -S PREROUTING; ipt -t nat -S OUTPUT; } 2>/dev/null)
    if [[ $now == *"-j KUBE-FORWARD"* && $now == "$last" ]]; then
      ((++same >= 8)) && return 0
    else
      same=0
    fi
    last=$now
    sleep 0.25
  done
  warn "kube-proxy's jumps still changing after 20 s; putting ours first anyway"
}
jumps_first() {
  ensure_first iptables filter FORWARD -j NMISIM-FORWARD
  ensure_first iptables filter INPUT -j NMISIM-INPUT
  ensure_first iptables filter OUTPUT -j NMISIM-OUTPUT
  ensure_first iptables nat PREROUTING -s "$POD_SUBNET" -j NMISIM-APISERVER
  ensure_first iptables nat OUTPUT -j NMISIM-APISERVER
  ensure_first ip6tables filter FORWARD -j NMISIM-FORWARD
}

# Both leave alone what the host had before `up` (the snapshot).
before_has() { # before_has iptables|ip6tables LINE
  local f=$N/host-before/${1}
  [[ -s $f ]] && grep -qxF -- "$2" "$f"
}
delete_jumps() { # delete_jumps iptables|ip6tables TABLE REGEX: rules of built-in chains jumping to REGEX
  local cmd=$1 table=$2 rule words=()
  while read -r rule; do
    before_has "$cmd" "$rule" && continue
    # The rule's own words, read back as iptables quoted them (its comments hold spaces), and nothing
    # in them run: `-A CHAIN ARGS...` becomes `-D CHAIN ARGS...`. A line that cannot be read is left
    # alone (a warning): `down`'s host comparison then reports that rule.
    [[ -n $rule ]] || continue
    iptables_words "$rule" words || { warn "cannot read this $cmd rule, left in place: $rule"; continue; }
    "$cmd" -w 5 -t "$table" -D "${words[@]:1}" 2>/dev/null
  done < <("$cmd" -w 5 -t "$table" -S 2>/dev/null | grep -E -- "^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j ($3)\$" || true)
}
delete_chains() { # delete_chains iptables|ip6tables TABLE REGEX: flush, then delete, chains named REGEX
  local cmd=$1 table=$2 c chains
  chains=$("$cmd" -w 5 -t "$table" -S 2>/dev/null | sed -n "s/^-N //p" | grep -E "^($3)\$" || true)
  chains=$(for c in $chains; do before_has "$cmd" ":$c -" || echo "$c"; done)
  for c in $chains; do "$cmd" -w 5 -t "$table" -F "$c"; done
  for c in $chains; do "$cmd" -w 5 -t "$table" -X "$c"; done
}

net_down() {
  local t cmd
  # Ours, what `kube-proxy --cleanup` leaves behind (jumps to KUBE-* chains, the chains themselves), and
  # NMI's chain should a node agent (`nmisim serve`, hostNetwork) have been killed before removing it.
  for cmd in iptables ip6tables; do
    for t in filter nat mangle raw; do
      delete_jumps "$cmd" "$t" 'NMISIM-[A-Z-]+|KUBE-[A-Z0-9-]+|aad-metadata'
      delete_chains "$cmd" "$t" 'NMISIM-[A-Z-]+|KUBE-[A-Z0-9-]+|aad-metadata'
    done
  done
  # Veths of pods whose network namespace is already gone, then the bridge.
  local v
  for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$v" 2>/dev/null || true; done
  [[ "$(ip -o link show "$BRIDGE" 2>/dev/null | sed -n 's/.* alias //p')" == "nmisim:$D" ]] && ip link del "$BRIDGE"
  return 0
}

# nf_tables tables that iptables-nft, kube-proxy and docker create and that did not exist before `up`
# (empty once the rules above are gone) are deleted; tables that existed are left alone.
nft_restore() {
  command -v nft >/dev/null || return 0
  local line
  while read -r line; do
    [[ -z $line ]] && continue
    # shellcheck disable=SC2086
    grep -qxF "$line" "$N/host-before/nft-tables" || nft delete $line 2>/dev/null || true
  done < <(nft list tables 2>/dev/null)
}

# --- processes ----------------------------------------------------------------------------------------
node_start() { # node_start COMPONENT
  node_require_vars D ROOT BIN
  local c=$1 f; f=$(pidfile "$c")
  component_running "$c" "$(node_bin "$c")" && return 0
  case "$c" in
    containerd)
      # No image can be pulled here, and none may be tried: every registry request goes to a proxy
      # address where nothing listens (Go's HTTP client then resolves and dials nothing else), so a
      # pod with an image the node lacks fails at once with ErrImagePull ("proxyconnect ... refused").
      HTTP_PROXY=$NO_PULL_PROXY HTTPS_PROXY=$NO_PULL_PROXY http_proxy=$NO_PULL_PROXY https_proxy=$NO_PULL_PROXY \
        NO_PROXY='' no_proxy='' \
        setsid /usr/bin/containerd --config "$N/containerd/config.toml" >>"$D/logs/containerd.log" 2>&1 </dev/null &
      echo $! > "$f"
      WAIT_INTERVAL=0.1 wait_until 15 "containerd to answer (see $D/logs/containerd.log)" containerd_answers
      local tar; tar=$("$ROOT/hack/image.sh" pause-tar 2>/dev/null | tail -1)
      [[ -s $tar ]] || die "could not build the pause image (hack/image.sh pause-tar)"
      ctr --address "$CTR_SOCK" -n k8s.io images import "$tar" >/dev/null
      NMISIM_CLUSTER_DIR=$D "$ROOT/hack/image.sh" load >/dev/null 2>&1 || true
      ;;
    kubelet)
      setsid "$BIN/kubelet" --config "$N/kubelet/config.yaml" --kubeconfig "$D/kubelet.kubeconfig" \
        --root-dir "$N/kubelet" --cert-dir "$N/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
        --node-labels "$NODE_LABEL,type=real" --v=1 >>"$D/logs/kubelet.log" 2>&1 </dev/null &
      echo $! > "$f" ;;
    kube-proxy)
      setsid "$BIN/kube-proxy" --config "$N/kube-proxy.yaml" --v=1 >>"$D/logs/kube-proxy.log" 2>&1 </dev/null &
      echo $! > "$f" ;;
  esac
}

containerd_answers() { # containerd answers on its socket; it dies when containerd has exited
  ctr --address "$CTR_SOCK" version >/dev/null 2>&1 && return 0
  kill -0 "$(<"$(pidfile containerd)")" 2>/dev/null || die "containerd exited: $(tail -n 5 "$D/logs/containerd.log")"
  return 1
}

node_stop() { # node_stop COMPONENT
  node_require_vars D BIN
  local f; f=$(pidfile "$1")
  [[ -s $f ]] || return 0
  component_running "$1" "$(node_bin "$1")" && terminate "$(<"$f")"
  rm -f "$f"
}

# Every container and sandbox of the node, killed and removed through containerd (kubelet is stopped by
# then, so nothing restarts them), then containerd's shims.
containers_down() {
  ctr --address "$CTR_SOCK" version >/dev/null 2>&1 || return 0
  local id
  for id in $(ctr --address "$CTR_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$CTR_SOCK" -n k8s.io tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr --address "$CTR_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    for _ in $(seq 1 50); do
      ctr --address "$CTR_SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  for id in $(ctr --address "$CTR_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    ctr --address "$CTR_SOCK" -n k8s.io containers rm "$id" >/dev/null 2>&1 || true
  done
}

shims_down() {
  local pid
  for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $CTR_SOCK" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do pgrep -f -- "-address $CTR_SOCK" >/dev/null 2>&1 || break; sleep 0.1; done
}

mounts_down() {
  # Newest first (mountinfo lists mounts in the order they were made): pod volumes, container rootfs
  # overlays, the kubelet's self bind-mount, netns files and the /run/netns bind-mount that CNI makes
  # (a netns mounted before that bind-mount is reachable only once it is gone). Mounts the host had
  # before `up` are left alone.
  local pass m fstype
  for pass in 1 2 3 4 5; do
    local left=0
    while read -r m fstype; do
      grep -qxF "$m $fstype" "$N/host-before/mounts" 2>/dev/null && continue
      left=1
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(tac /proc/self/mountinfo | awk '{print $5, $9}' | grep -E "^($N/|/run/netns(/| )|/run/containerd/)")
    ((left)) || break
    ((pass < 5)) || warn "mounts left under $N or /run/netns after 5 passes"
  done
  for m in /run/netns/cni-*; do [[ -e $m ]] && rm -f "$m"; done
  return 0
}

host_paths_restore() {
  local p s
  while read -r s; do
    if [[ -n $s ]] && ! grep -qxF "$s" "$N/host-before/shim-sockets" 2>/dev/null; then rm -f "$s"; fi
  done < <(find /run/containerd/s -maxdepth 1 -type s 2>/dev/null)
  for p in "${HOST_PATHS[@]}"; do
    [[ -e $p ]] || continue
    grep -qxF "$p" "$N/host-before/paths" 2>/dev/null || rm -rf "$p"
  done
  # kubelet's cgroups (cgroupfs: kubepods under every v1 controller), deepest first.
  local c
  while read -r c; do
    [[ -z $c ]] && continue
    grep -qxF "$c" "$N/host-before/cgroups" 2>/dev/null && continue
    find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done < <(find /sys/fs/cgroup -maxdepth 2 -name kubepods -type d 2>/dev/null)
}

sysctls_restore() {
  local line key value
  [[ -s $N/host-before/sysctls ]] || return 0
  while IFS= read -r line; do
    key=${line%% = *}; value=${line#* = }
    [[ $value == absent ]] && continue
    [[ "$(sysctl -n "$key" 2>/dev/null)" == "$value" ]] || sysctl -qw "$key=$value" 2>/dev/null || true
  done < "$N/host-before/sysctls"
}

# --- up / down ----------------------------------------------------------------------------------------
node_up() {
  node_require_vars D ROOT BIN START_TIMEOUT API_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT KUBE_PROXY_HEALTHZ_PORT \
    KUBE_PROXY_METRICS_PORT
  node_wanted || return 0
  local t0=$SECONDS kc_user
  if node_running && kc get node "$NODE_NAME" >/dev/null 2>&1; then return 0; fi
  # A node left half-started (a crash, a kill -9 of `up`) is taken down first, against its first snapshot.
  if [[ -s $N/host-before/links ]] && { ip link show "$BRIDGE" >/dev/null 2>&1 || ls "$D"/pids/{containerd,kubelet,kube-proxy}.pid >/dev/null 2>&1; }; then
    node_down_quiet || true
  fi
  mkdir -p "$N"
  if [[ ! -s $N/host-before/links ]]; then
    rm -rf "$N/host-before.tmp"
    host_snapshot "$N/host-before.tmp"
    mv "$N/host-before.tmp" "$N/host-before"
  fi
  node_pki
  for kc_user in kubelet kube-proxy; do write_kubeconfig "$D/$kc_user.kubeconfig" "$kc_user"; done
  node_configs
  say "real node: bridge $BRIDGE ($NODE_IP, pods $POD_SUBNET) and safety rules"
  net_up
  say "real node: containerd, kubelet, kube-proxy"
  node_start containerd
  node_start kubelet
  node_start kube-proxy
  WAIT_INTERVAL=0.25 wait_until "$START_TIMEOUT" "node $NODE_NAME to be Ready (see $D/logs/kubelet.log)" node_ready
  # The pod subnet is the bridge's (host-local IPAM owns it); recorded on the Node as a node IPAM
  # controller would, so the Node looks like any other (spec.podCIDR can be set once).
  [[ -n "$(kc get node "$NODE_NAME" -o jsonpath='{.spec.podCIDR}')" ]] \
    || kc patch node "$NODE_NAME" -p "{\"spec\":{\"podCIDR\":\"$POD_SUBNET\",\"podCIDRs\":[\"$POD_SUBNET\"]}}" >/dev/null
  node_jumps_first
  namespace_policy
  say "real node $NODE_NAME Ready in $((SECONDS - t0)) s (taint $NODE_TAINT; label $NODE_LABEL)"
}
node_ready() { # the Node is Ready; it dies when kubelet has exited
  [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] \
    && return 0
  component_running kubelet "$(node_bin kubelet)" || die "kubelet exited; last lines of $D/logs/kubelet.log:
$(tail -n 15 "$D/logs/kubelet.log")"
  return 1
}
# After kube-proxy starts (node_up; cluster.sh restart|start kube-proxy): kube-proxy puts its jumps at the
# top of FORWARD, INPUT, PREROUTING and OUTPUT when it first syncs (KUBE-FORWARD, then KUBE-PROXY-FIREWALL
# and others within the same sync): once they are all there (the chains unchanged for 2 s), ours go back
# on top. kube-proxy only re-inserts a jump that is missing, so they stay below ours.
node_jumps_first() {
  kube_proxy_jumps_settled
  jumps_first
}

# In this cluster pods go to kwok's fake nodes unless they tolerate the real node's taint. The operator's
# namespace is the exception, as on kind where every node is real: the API server's PodNodeSelector and
# PodTolerationRestriction admission plugins read these two annotations and send its pods to the real node.
# `kubectl apply -k manifests/` keeps them (they are not in its last-applied configuration).
namespace_policy() {
  kc get namespace nmisim-system >/dev/null 2>&1 || kc apply -f "$ROOT/manifests/namespace.yaml" >/dev/null
  kc annotate --overwrite namespace nmisim-system \
    "scheduler.alpha.kubernetes.io/node-selector=$NODE_LABEL" \
    'scheduler.alpha.kubernetes.io/defaultTolerations=[{"key":"nmisim.dev/node","operator":"Equal","value":"real","effect":"NoSchedule"}]' >/dev/null
}

node_down_quiet() { NMISIM_NODE_QUIET=1 node_down; }

node_down() {
  node_require_vars D BIN
  # Only a node this cluster started (its snapshot exists) is taken down: never another cluster's.
  [[ -s $N/host-before/links ]] || return 0
  [[ -n ${NMISIM_NODE_QUIET:-} ]] || say "real node: stopping and restoring the host"
  node_stop kube-proxy
  if [[ -x $BIN/kube-proxy && -s $N/kube-proxy.yaml ]]; then
    "$BIN/kube-proxy" --cleanup --config "$N/kube-proxy.yaml" >>"$D/logs/kube-proxy.log" 2>&1 || true
  fi
  node_stop kubelet
  containers_down
  node_stop containerd
  shims_down
  mounts_down
  net_down
  nft_restore
  sysctls_restore
  host_paths_restore
  rm -rf "$N/kubelet/pods" "$N/cni/ipam" "$N/run" "$N/containerd/state"
  # containerd's record of containers is gone with them; its images stay (root) for the next `up`.
  if [[ -s $N/host-before/links ]]; then
    host_snapshot "$N/host-after"
    if host_compare "$N/host-before" "$N/host-after" > "$N/host-diff.txt"; then
      rm -rf "$N/host-before" "$N/host-after" "$N/host-diff.txt"
    else
      say "error: the host differs from before the real node started ($N/host-diff.txt):"
      sed 's/^/    /' "$N/host-diff.txt" >&2
      return 1
    fi
  fi
}

node_status() {
  node_require_vars D BIN
  local c
  for c in "${NODE_COMPONENTS[@]}"; do
    if component_running "$c" "$(node_bin "$c")"; then printf '  %-24s running (pid %s)\n' "$c" "$(<"$(pidfile "$c")")"
    elif [[ -d $N ]]; then printf '  %-24s stopped\n' "$c"; fi
  done
}
