#!/usr/bin/env bash
# kind, built and run on this machine with nothing pulled (no registry is reachable): kind's CLI from its
# Go module, a node image assembled here (Debian 12 with systemd, containerd, runc and the CNI plugins
# from Debian's packages; kind's base-image files read from the kind module at build time; kubeadm,
# kubelet and kubectl built like the other Kubernetes binaries; the control plane's images packed from
# the binaries hack/k8s-bins.sh built), a dockerd of the project's own and the host's safety rules.
# Facts and the plan: ../shared/reference/kind-offline.md; what was run here: docs/operations.md ("kind").
#
#   hack/kind.sh build     the kind CLI, kubeadm/kubectl, the images (cached under keys of their inputs)
#   hack/kind.sh up        our dockerd and network, the guards, `kind create cluster` (snapshot of the host first)
#   hack/kind.sh down      `kind delete cluster`, our dockerd stopped, the host restored and compared
#   hack/kind.sh status    what runs
#   hack/kind.sh kubeconfig   the cluster's kubeconfig path
#   hack/kind.sh images IMAGE...   images `make image` built, into kind's docker (for `kind load docker-image`)
#   hack/kind.sh kind-path   where the kind CLI is
#   hack/kind.sh kind|docker ARGS...   kind's CLI, or docker against kind's dockerd
#
# Safety, in this order: the host is snapshotted; dockerd runs with no iptables rules of its own, no IP
# forwarding and no masquerading; the guards (INPUT and FORWARD from the kind bridge: replies only, nothing
# to 169.254.0.0/16) exist before any node starts; inside each node kubelet and systemd see the host-wide
# kernel settings they would change already at their values (bind mounts in the node's own mount namespace,
# hack/images/kind-node/entrypoint-local), and systemd mounts no new cgroup hierarchies. `down` undoes all
# of it and compares the host with the snapshot: a difference is an error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT=${NMISIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nmisim}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_TAG=3.6.8-0          # kubeadm v1.36.3 constants.DefaultEtcdVersion
COREDNS_VERSION=v1.14.2   # kubeadm v1.36.3 constants.CoreDNSVersion
PAUSE_TAG=3.10            # the sandbox_image of kind's containerd config
K=$CACHE_ROOT/kind
KB=$K/$KIND_VERSION/bin
IMG=$K/images
STATE=${NMISIM_KIND_DIR:-$ROOT/.kind}
CLUSTER=${KIND_CLUSTER_NAME:-kind}   # kind's default name: `kind load docker-image IMAGE` as users type it
NODE_IMAGE=nmisim-kind-node:$KUBE_VERSION
BRIDGE=nmkind0
SUBNET=${NMISIM_KIND_SUBNET:-172.30.99.0/24}
GATEWAY=${SUBNET%.*/*}.1
SUITE=bookworm
MIRROR=${NMISIM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PROXY_PACKAGES=iptables,nftables,conntrack
NODE_PACKAGES=systemd,systemd-sysv,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps,containerd,runc,containernetworking-plugins
DOCKER=$(command -v /usr/bin/docker || command -v docker || true)
DRUN=$K/docker/run
export DOCKER_HOST="unix://$DRUN/docker.sock"
# Host-wide paths docker or kind create when absent; removed at `down` when they were absent at `up`.
HOST_PATHS=(/lib/modules /etc/docker/key.json /opt/containerd /run/containerd /run/docker)

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod   # the Go builds below
LOG_PREFIX=kind
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
key() { sha256sum | cut -c1-16; }

kind_module_dir() {
  (cd "$K/src-kind" && go list -m -f '{{.Dir}}' "sigs.k8s.io/kind")
}

# --- build ---------------------------------------------------------------------------------------------

# go_tool (hack/lib.sh) builds into $KB, its scratch modules in $K/src-NAME.
# kind's CLI; CoreDNS, the cluster DNS kubeadm deploys (the version kubeadm v1.36.3 names)
build_cli() { go_tool kind sigs.k8s.io/kind "$KIND_VERSION" sigs.k8s.io/kind version; }
build_coredns() { go_tool coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns -version; }

fresh() { [[ -s "$IMG/$1-$2.tar" ]]; }
publish() { # publish NAME KEY FILE
  mv "$3" "$IMG/$1-$2.tar"
  find "$IMG" -maxdepth 1 -name "$1-*.tar" ! -name "$1-$2.tar" -delete
}
archive() { "${PYTHON:-python3}" "$ROOT/hack/images/archive.py" "$@"; }

# The control plane's images, each one static binary in an image of one layer, named as kubeadm asks.
component_images() {
  local bin b k
  bin=$("$ROOT/hack/k8s-bins.sh" etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubeadm kubelet kubectl | tail -1)
  mkdir -p "$IMG/work"
  for b in kube-apiserver kube-controller-manager kube-scheduler etcd; do
    k=$( { sha256sum "$bin/$b"; cat "$ROOT/hack/images/archive.py"; } | key)
    fresh "$b" "$k" && continue
    local tag="registry.k8s.io/$b:$KUBE_VERSION"
    [[ $b == etcd ]] && tag="registry.k8s.io/etcd:$ETCD_TAG"
    archive --tag "$tag" --file "/usr/local/bin/$b=$bin/$b" "$IMG/work/$b.tar"
    publish "$b" "$k" "$IMG/work/$b.tar"
    say "  $tag packed"
  done
  # kube-proxy needs iptables and conntrack: a Debian 12 minbase with them, and the binary as a second layer
  k=$( { sha256sum "$bin/kube-proxy"; printf '%s\n' "$SUITE" "$PROXY_PACKAGES" "$MIRROR"; cat "$ROOT/hack/images/archive.py"; } | key)
  if ! fresh kube-proxy "$k"; then
    local w="$IMG/work/kube-proxy"; rm -rf "$w"; mkdir -p "$w"
    say "debootstrap $SUITE (minbase + $PROXY_PACKAGES) for kube-proxy: about 1 min"
    debootstrap_minbase "$w/rootfs" "$PROXY_PACKAGES" "$IMG/work/debootstrap-kube-proxy.log"
    pack_rootfs "$w/rootfs" "$w/rootfs.tar"
    archive --tag "registry.k8s.io/kube-proxy:$KUBE_VERSION" --layer "$w/rootfs.tar" \
      --file "/usr/local/bin/kube-proxy=$bin/kube-proxy" "$IMG/work/kube-proxy.tar"
    publish kube-proxy "$k" "$IMG/work/kube-proxy.tar"
    rm -rf "$w"
    say "  registry.k8s.io/kube-proxy:$KUBE_VERSION built"
  fi
  k=$( { sha256sum "$KB/coredns"; cat "$ROOT/hack/images/archive.py"; } | key)
  if ! fresh coredns "$k"; then
    archive --tag "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" --entrypoint /coredns \
      --file "/coredns=$KB/coredns" "$IMG/work/coredns.tar"
    publish coredns "$k" "$IMG/work/coredns.tar"
    say "  registry.k8s.io/coredns/coredns:$COREDNS_VERSION packed"
  fi
  # the sandbox: nmisim's own pause (hack/images/pause.c), under the name kind's containerd config uses
  k=$( { cat "$ROOT/hack/images/pause.c" "$ROOT/hack/images/archive.py"; echo "$PAUSE_TAG"; } | key)
  if ! fresh pause "$k"; then
    local w="$IMG/work/pause"; rm -rf "$w"; mkdir -p "$w"
    gcc -static -Os -s -o "$w/pause" "$ROOT/hack/images/pause.c"
    archive --tag "registry.k8s.io/pause:$PAUSE_TAG" --entrypoint /pause --user 65535:65535 \
      --file "/pause=$w/pause" "$IMG/work/pause.tar"
    publish pause "$k" "$IMG/work/pause.tar"
    rm -rf "$w"
  fi
  echo "$bin"
}

# The node's root filesystem: Debian 12 minbase with systemd and the runtime, kind's base-image files
# (from the kind module, with the modes its Dockerfile gives them), the Dockerfile's RUN steps in a
# chroot, and nmisim's patches for this host (hack/images/kind-node/).
node_base() {
  local F; F="$(kind_module_dir)/images/base/files"
  [[ -d $F ]] || die "kind's base-image files not found in the module cache ($F)"
  local k; k=$(printf '%s\n' "$SUITE" "$NODE_PACKAGES" "$MIRROR" "$KIND_VERSION" "$(declare -f node_base)" | cat - "$ROOT"/hack/images/kind-node/* "$ROOT/hack/images/archive.py" | key)
  if fresh node-base "$k"; then echo "$IMG/node-base-$k.tar"; return 0; fi
  local t0=$SECONDS w="$IMG/work/node-base" R
  R=$w/rootfs
  rm -rf "$w"; mkdir -p "$w"
  say "debootstrap $SUITE (minbase + systemd, containerd, runc, CNI plugins, iptables, ...): about 3 min"
  debootstrap_minbase "$R" "$NODE_PACKAGES" "$IMG/work/debootstrap-node.log"
  # kind's images/base/Dockerfile, stage `base`: the files and their modes
  install -m 0755 "$F"/usr/local/bin/* "$R/usr/local/bin/"
  mkdir -p "$R/kind/bin" "$R/etc/containerd" "$R/etc/systemd/system/kubelet.service.d"
  install -m 0644 "$F"/kind/README.txt "$R/kind/"
  install -m 0755 "$F"/kind/bin/* "$R/kind/bin/"
  install -m 0644 "$F/etc/crictl.yaml" "$R/etc/"
  install -m 0644 "$F/etc/containerd/config.toml" "$R/etc/containerd/"
  install -m 0644 "$F/etc/default/kubelet" "$R/etc/default/"
  install -m 0644 "$F"/etc/sysctl.d/* "$R/etc/sysctl.d/"
  install -m 0644 "$F"/etc/systemd/system/*.service "$F"/etc/systemd/system/*.slice "$R/etc/systemd/system/"
  install -m 0644 "$F"/etc/systemd/system/kubelet.service.d/* "$R/etc/systemd/system/kubelet.service.d/"
  chmod 755 "$R/kind" "$R/kind/bin"
  # its RUN steps
  find "$R/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$R"/lib/systemd/system/multi-user.target.wants/* "$R"/etc/systemd/system/*.wants/* \
    "$R"/lib/systemd/system/local-fs.target.wants/* "$R"/lib/systemd/system/sockets.target.wants/*udev* \
    "$R"/lib/systemd/system/sockets.target.wants/*initctl* "$R"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >> "$R/etc/systemd/journald.conf"
  chroot "$R" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
  chroot "$R" systemctl mask systemd-binfmt.service >/dev/null 2>&1
  mkdir -p "$R/etc/kubernetes/manifests" "$R/opt/cni/bin"
  chroot "$R" sh -c "ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer|length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}' | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json"
  # the build stage's binaries, from Debian's packages instead: containerd and ctr where kind's units
  # look for them, the four CNI plugins kind's image carries
  ln -sf /usr/bin/containerd "$R/usr/local/bin/containerd"
  ln -sf /usr/bin/ctr "$R/usr/local/bin/ctr"
  cp "$R"/usr/lib/cni/{host-local,loopback,ptp,portmap,bridge} "$R/opt/cni/bin/"
  # nmisim's patches for this host (each explained in hack/images/kind-node/entrypoint-local)
  sed -i 's/^\(\s*restrict_oom_score_adj\s*=\s*\)false/\1true/' "$R/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$R/etc/containerd/config.toml" || die "containerd config: restrict_oom_score_adj not set"
  # systemd-sysctl runs in the node with the host's /proc/sys: keep only kind's per-network-namespace keys
  rm -f "$R"/usr/lib/sysctl.d/*.conf "$R/etc/sysctl.d/99-sysctl.conf"
  if grep -hv '^\s*\(#\|$\)' "$R"/etc/sysctl.d/*.conf "$R"/run/sysctl.d/*.conf 2>/dev/null | grep -v '^net\.'; then
    die "a sysctl.d file in the node sets a host-wide key (above)"
  fi
  install -m 0755 "$ROOT/hack/images/kind-node/entrypoint-local" "$R/usr/local/bin/entrypoint-local"
  pack_rootfs "$R" "$w/rootfs.tar"
  archive --tag nmisim-kind-base:$SUITE --layer "$w/rootfs.tar" --env container=docker \
    --stop-signal SIGRTMIN+3 --entrypoint /usr/local/bin/entrypoint-local --entrypoint /sbin/init "$w/image.tar"
  publish node-base "$k" "$w/image.tar"
  rm -rf "$w"
  say "  node base built in $((SECONDS - t0)) s ($(du -h "$IMG/node-base-$k.tar" | cut -f1))"
  echo "$IMG/node-base-$k.tar"
}

docker_up() { # our own dockerd: own socket, data and exec roots; no iptables rules, forwarding or masquerade
  [[ -n $DOCKER ]] || die "docker is missing (hack/host-deps.sh installs Debian's docker.io)"
  if "$DOCKER" info >/dev/null 2>&1; then return 0; fi
  command -v dockerd >/dev/null || die "dockerd is missing (hack/host-deps.sh installs Debian's docker.io)"
  mkdir -p "$DRUN" "$K/docker/data"
  setsid dockerd --data-root "$K/docker/data" --exec-root "$DRUN/exec" --pidfile "$DRUN/dockerd.pid" \
    -H "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=true --exec-opt native.cgroupdriver=cgroupfs --storage-driver=overlay2 \
    --add-runtime "nmisim-runc=$ROOT/hack/kind-runc.py" --default-runtime nmisim-runc \
    >"$K/docker/dockerd.log" 2>&1 </dev/null &
  wait_dockerd $! "$K/docker/dockerd.log"
}

docker_down() {
  local pid; pid=$(cat "$DRUN/dockerd.pid" 2>/dev/null || true)
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local _
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}

# The node image: the base with kubeadm, kubelet, kubectl, /kind/version and the images imported into
# its containerd's k8s.io namespace (kind's buildcontext.go buildImage, by hand).
node_image() {
  local bin=$1 base=$2
  local k; k=$( { sha256sum "$bin/kubeadm" "$bin/kubelet" "$bin/kubectl" | cut -d' ' -f1; basename "$base"; printf '%s\n' "$IMG"/*.tar; } | key)
  if [[ -s $K/node-image.key && $(cat "$K/node-image.key") == "$k" ]] && "$DOCKER" image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
    return 0
  fi
  local t0=$SECONDS id
  "$DOCKER" load -q -i "$base" >/dev/null
  id=$("$DOCKER" run -d --network none --entrypoint=sleep --security-opt seccomp=unconfined "nmisim-kind-base:$SUITE" infinity)
  local b
  for b in kubeadm kubelet kubectl; do "$DOCKER" cp "$bin/$b" "$id:/usr/bin/$b"; done
  "$DOCKER" exec "$id" sh -c 'chmod 755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl && mkdir -p /kind/manifests'
  printf '%s' "$KUBE_VERSION" | "$DOCKER" exec -i "$id" sh -c 'cat > /kind/version'
  "$DOCKER" exec "$id" sh -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
  # shellcheck disable=SC2016 # these run in the node
  "$DOCKER" exec "$id" sh -c 'for i in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /tmp/containerd.log; exit 1'
  local t
  for t in "$IMG"/{kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy,etcd,coredns,pause}-*.tar; do
    "$DOCKER" exec -i "$id" ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests - <"$t" >/dev/null
  done
  # shellcheck disable=SC2016
  "$DOCKER" exec "$id" sh -c 'for i in $(ctr -n k8s.io images ls -q); do ctr -n k8s.io images label "$i" io.cri-containerd.pinned=pinned >/dev/null; done; ctr -n k8s.io images ls -q' >&2
  # shellcheck disable=SC2016
  "$DOCKER" exec "$id" sh -c 'pkill containerd; for i in $(seq 1 50); do pgrep containerd >/dev/null || exit 0; sleep 0.2; done'
  "$DOCKER" commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint-local", "/sbin/init"]' "$id" "$NODE_IMAGE" >/dev/null
  "$DOCKER" rm -f -v "$id" >/dev/null
  echo "$k" > "$K/node-image.key"
  say "  $NODE_IMAGE assembled in $((SECONDS - t0)) s"
}

build() {
  local t0=$SECONDS bin base
  build_cli
  build_coredns
  bin=$(component_images)
  base=$(node_base)
  echo "$bin" > "$K/bin-dir"
  echo "$base" > "$K/base-archive"
  say "built in $((SECONDS - t0)) s"
}

# --- the host: snapshot, guards, restore ------------------------------------------------------------------

ipt() { iptables -w 5 "$@"; }
# The host answers nothing from the kind network but replies: nodes are refused; pods (their addresses
# are not the kind network's, and the host has no route back to them) get no answer at all, so no error
# packet for a pod address ever follows the host's default route out of the machine.
# Each carries a comment (one word: a rule is split into words) that the tests count packets by.
GUARDS=(
  "INPUT -i $BRIDGE -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment nmisim-kind:replies -j ACCEPT"
  "INPUT -i $BRIDGE ! -s $SUBNET -m comment --comment nmisim-kind:pods-get-no-answer -j DROP"
  "INPUT -i $BRIDGE -m comment --comment nmisim-kind:nodes-refused -j REJECT"
  "FORWARD -i $BRIDGE -d 169.254.0.0/16 -m comment --comment nmisim-kind:no-link-local -j DROP"
  "FORWARD -i $BRIDGE ! -o $BRIDGE -m comment --comment nmisim-kind:nothing-leaves -j DROP"
  "FORWARD -o $BRIDGE ! -i $BRIDGE -m comment --comment nmisim-kind:nothing-enters -j DROP"
)
LINK_LOCAL_GUARD=(PREROUTING -i "$BRIDGE" -d 169.254.0.0/16 -m comment --comment nmisim-kind:no-link-local -j DROP)
guards_up() { # each chain's guards first, in the order listed
  local g chain rule
  declare -A at=()
  for g in "${GUARDS[@]}"; do
    chain=${g%% *} rule=${g#* }
    at[$chain]=$(( ${at[$chain]:-0} + 1 ))
    # shellcheck disable=SC2086 # a rule is words
    ipt -C "$chain" $rule 2>/dev/null || ipt -I "$chain" "${at[$chain]}" $rule
  done
  # counted before routing: whatever a node or pod sends to link-local addresses (IMDS's among them)
  ipt -t raw -C "${LINK_LOCAL_GUARD[@]}" 2>/dev/null || ipt -t raw -I "${LINK_LOCAL_GUARD[0]}" 1 "${LINK_LOCAL_GUARD[@]:1}"
  ip6tables -w 5 -C INPUT -i "$BRIDGE" -j DROP 2>/dev/null || ip6tables -w 5 -I INPUT 1 -i "$BRIDGE" -j DROP
  ip6tables -w 5 -C FORWARD -i "$BRIDGE" -j DROP 2>/dev/null || ip6tables -w 5 -I FORWARD 1 -i "$BRIDGE" -j DROP
}
guards_down() {
  local g
  for g in "${GUARDS[@]}"; do
    local chain=${g%% *} rule=${g#* }
    # shellcheck disable=SC2086
    while ipt -C "$chain" $rule 2>/dev/null; do ipt -D "$chain" $rule; done
  done
  while ipt -t raw -C "${LINK_LOCAL_GUARD[@]}" 2>/dev/null; do ipt -t raw -D "${LINK_LOCAL_GUARD[@]}"; done
  while ip6tables -w 5 -C INPUT -i "$BRIDGE" -j DROP 2>/dev/null; do ip6tables -w 5 -D INPUT -i "$BRIDGE" -j DROP; done
  while ip6tables -w 5 -C FORWARD -i "$BRIDGE" -j DROP 2>/dev/null; do ip6tables -w 5 -D FORWARD -i "$BRIDGE" -j DROP; done
}

# Kernel settings are compared in full, but for the ones that count something as it happens.
VOLATILE_SYSCTLS='^(kernel\.random\.|fs\.(dentry-state|inode-nr|inode-state|file-nr|quota\.)|kernel\.ns_last_pid|kernel\.pty\.nr|net\.ipv[46]\.conf\.|net\.ipv6\.neigh\.|net\.ipv4\.neigh\.|net\.netfilter\.nf_conntrack_count|kernel\.sched_domain|vm\.stat_refresh|fs\.binfmt_misc)'
snapshot() { # snapshot DIR
  local out=$1
  net_snapshot "$out"
  { sysctl -a 2>/dev/null || true; } | grep -Ev "$VOLATILE_SYSCTLS" | sort > "$out/sysctls"
  { sysctl -a 2>/dev/null || true; } | grep -E '^net\.ipv[46]\.conf\.(all|default)\.' | sort >> "$out/sysctls"
  awk '{print $1, $2}' /proc/cgroups > "$out/cgroup-hierarchies"
  { find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d 2>/dev/null || true; } | sort > "$out/cgroups"
  local p
  for p in "${HOST_PATHS[@]}"; do [[ -e $p ]] && echo "$p"; done > "$out/paths"
  { pgrep -a -f -- "$K/" 2>/dev/null || true; } | { grep -v -e pgrep -e kind.sh || true; } | awk '{print $2}' | sort > "$out/processes"
  { pgrep -x -a 'containerd-shim.*|docker-proxy|dockerd' 2>/dev/null || true; } | awk '{print $2}' | sort >> "$out/processes"
}
compare() { # compare BEFORE AFTER: prints the differences, returns 1 when there are any
  snapshot_diff "$1" "$2" "${NET_SNAPSHOT_FILES[@]}" sysctls cgroup-hierarchies cgroups paths processes
}

kind_config() {
  cat <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: $CLUSTER
networking:
  ipFamily: ipv4
  disableDefaultCNI: true   # kindnetd is not served as a Go module: hack/kind.sh configures Debian's CNI plugins
nodes:
  - role: control-plane
  - role: worker
kubeadmConfigPatches:
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
    cgroupDriver: ${NMISIM_KIND_CGROUP_DRIVER:-systemd}
EOF
  if [[ ${NMISIM_KIND_CGROUP_DRIVER:-systemd} == cgroupfs ]]; then
    cat <<'EOF'
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
EOF
  fi
}

up() {
  [[ $(id -u) == 0 ]] || die "kind needs root here (its dockerd and the host's rules)"
  build
  mkdir -p "$STATE"
  if [[ ! -d $STATE/before ]]; then
    snapshot "$STATE/before.tmp" && mv "$STATE/before.tmp" "$STATE/before"
  fi
  [[ -e /lib/modules ]] || mkdir -p /lib/modules   # kind mounts it read-only into every node
  docker_up
  if ! "$DOCKER" network inspect kind >/dev/null 2>&1; then
    "$DOCKER" network create -d bridge --subnet "$SUBNET" --gateway "$GATEWAY" \
      -o com.docker.network.bridge.name="$BRIDGE" -o com.docker.network.bridge.enable_ip_masquerade=false \
      -o com.docker.network.bridge.enable_icc=true kind >/dev/null
  fi
  guards_up
  node_image "$(cat "$K/bin-dir")" "$(cat "$K/base-archive")"
  kind_config > "$STATE/kind.yaml"
  local t0=$SECONDS
  say "kind create cluster $CLUSTER ($NODE_IMAGE, cgroup driver ${NMISIM_KIND_CGROUP_DRIVER:-systemd})"
  "$KB/kind" create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config "$STATE/kind.yaml" \
    --kubeconfig "$STATE/kubeconfig" --retain --wait 0s ${NMISIM_KIND_VERBOSITY:+-v "$NMISIM_KIND_VERBOSITY"}
  cni
  say "cluster up in $((SECONDS - t0)) s; export KUBECONFIG=$STATE/kubeconfig"
}

kc() { "$(cat "$K/bin-dir")/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

# The pod network, in place of kindnet: on each node Debian's ptp and host-local plugins with the node's
# podCIDR (kind's own choice of plugins), and a route to every other node's podCIDR through that node.
# Static: the nodes of a kind cluster do not change. No masquerading: nothing leaves the kind network.
cni() {
  local nodes=() n cidr _
  for _ in $(seq 1 120); do
    mapfile -t nodes < <(kc get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' 2>/dev/null | awk 'NF == 3')
    ((${#nodes[@]} == $(kc get nodes --no-headers 2>/dev/null | wc -l))) && ((${#nodes[@]} > 0)) && break
    sleep 0.5
  done
  ((${#nodes[@]})) || die "the nodes have no podCIDR"
  local line other
  for line in "${nodes[@]}"; do
    read -r n cidr _ <<<"$line"
    "$DOCKER" exec -i "$n" sh -c 'mkdir -p /etc/cni/net.d && cat > /etc/cni/net.d/10-nmisim.conflist' <<EOF
{
  "cniVersion": "0.3.1",
  "name": "nmisim-kind",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "mtu": 1500,
     "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state", "ranges": [[{"subnet": "$cidr"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    for other in "${nodes[@]}"; do
      local on ocidr oip
      read -r on ocidr oip <<<"$other"
      [[ $on == "$n" ]] && continue
      "$DOCKER" exec "$n" ip route replace "$ocidr" via "$oip"
    done
  done
  kc wait --for=condition=Ready node --all --timeout=120s >/dev/null
  say "pod network: ${#nodes[@]} node(s) Ready"
}

down() {
  [[ -d $STATE ]] || { say "no kind cluster state in $STATE"; return 0; }
  if "$DOCKER" info >/dev/null 2>&1; then
    "$KB/kind" delete cluster --name "$CLUSTER" --kubeconfig "$STATE/kubeconfig" >/dev/null 2>&1 || true
    "$DOCKER" network rm kind >/dev/null 2>&1 || true
  fi
  docker_down
  guards_down
  local before=$STATE/before
  [[ -d $before ]] || { say "no snapshot to compare with"; return 0; }
  # nf_tables tables iptables-nft made for the guards (empty now); tables that existed are left alone
  local line
  while read -r line; do
    [[ -z $line ]] || grep -qxF "$line" "$before/nft-tables" && continue
    # shellcheck disable=SC2086 # "table FAMILY NAME"
    nft delete $line 2>/dev/null || true
  done < <(nft list tables 2>/dev/null)
  # what docker and runc leave: empty cgroups of containers, paths created when absent
  local d
  for d in /sys/fs/cgroup/*/docker; do [[ -d $d ]] && ! grep -qx "$d" "$before/cgroups" && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
  local p
  for p in "${HOST_PATHS[@]}"; do
    [[ -e $p ]] && ! grep -qx "$p" "$before/paths" && [[ -z "$(find "$p" -type s 2>/dev/null | head -1)" ]] && rm -rf "$p"
  done
  snapshot "$STATE/after"
  if ! compare "$before" "$STATE/after" > "$STATE/host-diff.txt"; then
    say "the host differs from before the kind cluster ($STATE/host-diff.txt):"
    cat "$STATE/host-diff.txt" >&2
    return 1
  fi
  rm -rf "$STATE"
  say "kind cluster deleted; host as before"
}

# images IMAGE...: images `make image` built (hack/image.sh keeps each as an archive, nmisim-NAME:dev in
# images/NAME.tar) into kind's dockerd, where `kind load docker-image IMAGE` finds them as a user's would
images() {
  docker_up
  local name archive
  for name in "$@"; do
    archive=$CACHE_ROOT/images/${name#nmisim-}
    archive=${archive%:*}.tar
    [[ -s $archive ]] || die "no archive for $name ($archive): make image builds it"
    "$DOCKER" load -q -i "$archive" >/dev/null
  done
}

status() {
  if "$DOCKER" info >/dev/null 2>&1; then
    "$KB/kind" get clusters 2>/dev/null
    "$DOCKER" ps --format '{{.Names}} {{.Status}}'
  else
    echo "kind's dockerd is not running"
  fi
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  status) status ;;
  kubeconfig) echo "$STATE/kubeconfig" ;;
  images) shift; images "$@" ;;
  kind-path) echo "$KB/kind" ;;
  kind) shift; exec "$KB/kind" "$@" ;;
  docker) shift; exec "$DOCKER" "$@" ;;
  *) sed -n '9,17p' "$0" >&2; exit 2 ;;
esac
