#!/usr/bin/env bash
# Images for the real node, all built on this machine (no registry is reachable): the sandbox's pause
# image (a static C binary packed by hack/images/archive.py), a Debian 12 base with Python 3.11
# (debootstrap from Debian's packages), and the operator image (operator/Dockerfile, `docker build`
# on that base with wheels downloaded beforehand, so the build itself has no network). Each is cached
# outside the repository under a key of its inputs and rebuilt only when they change.
#
#   hack/image.sh [build]     build what is out of date, then load into the real node if it runs
#   hack/image.sh load        import the built images into the real node's containerd (k8s.io)
#   hack/image.sh list        the images, their keys, sizes and archive paths
#   hack/image.sh pause-tar   build the pause image only and print its archive path
#   hack/image.sh pause|base|operator|clients   build one image only
#
# Images: nmisim-pause:dev (sandbox), nmisim-base:dev (Debian 12 + python3, the test clients' image),
# nmisim-operator:dev (what manifests/deployment.yaml and manifests/nmi/ run), nmisim-clients:dev (real
# IMDS clients for the node agent's tests: curl, Python azure-identity, Go azidentity; hack/images/clients/).
# dockerd: an engine that already answers (DOCKER_HOST or the default socket) is used; otherwise one is
# started for the build (data in the cache, no bridge, no iptables, no ip_forward) and stopped after.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT=${NMISIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nmisim}
IMG=$CACHE_ROOT/images
D=${NMISIM_CLUSTER_DIR:-$ROOT/.cluster}
PY=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x $PY ]] || PY=python3
SUITE=bookworm
MIRROR=${NMISIM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=python3,python3-venv,ca-certificates,iptables  # iptables: nmisim serve (NMI's rules)
CLIENTS_PACKAGES=python3,python3-venv,ca-certificates,curl
AZURE_IDENTITY_VERSION=1.27.0   # PyPI
AZURE_IDENTITY_OLD_VERSION=1.6.1  # PyPI: older than workload identity (asks IMDS: the AWI proxy sidecar)
AZIDENTITY_VERSION=v1.15.0      # github.com/Azure/azure-sdk-for-go/sdk/azidentity, Go module proxy
IMAGES=(pause base operator clients)
DOCKER=$(command -v /usr/bin/docker || command -v docker || true)

LOG_PREFIX=image
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
key() { sha256sum | cut -c1-16; }
files_key() { # files_key DIR...: names (relative to the repository) and content of every file below DIR
  (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum) | key
}
current() { readlink -f "$IMG/$1.tar" 2>/dev/null || true; }
publish() { # publish NAME KEY FILE: FILE becomes the current archive of NAME
  mv "$3" "$IMG/$1-$2.tar"
  ln -sfn "$1-$2.tar" "$IMG/$1.tar"
  find "$IMG" -maxdepth 1 -name "$1-*.tar" ! -name "$1-$2.tar" -delete
}
fresh() { [[ -s "$IMG/$1-$2.tar" ]] && [[ "$(current "$1")" == "$IMG/$1-$2.tar" ]]; }

build_pause() {
  local k; k=$( { cat "$ROOT/hack/images/pause.c" "$ROOT/hack/images/archive.py"; gcc --version | head -1; } | key)
  fresh pause "$k" && return 0
  local t0=$SECONDS w="$IMG/work"
  mkdir -p "$w"
  gcc -static -Os -s -o "$w/pause" "$ROOT/hack/images/pause.c"
  python3 "$ROOT/hack/images/archive.py" --tag nmisim-pause:dev --entrypoint /pause --user 65535:65535 \
    --file "/pause=$w/pause" "$w/pause.tar"
  publish pause "$k" "$w/pause.tar"
  say "nmisim-pause:dev built in $((SECONDS - t0)) s"
}

# slim_rootfs ROOTFS: what nmisim-base:dev (the operator's and the node agent's base) never uses at run
# time: translations, glibc's iconv modules (Python has its own codecs), perl (only dpkg's maintainer
# scripts run it: the image installs nothing), info pages, lintian overrides, debconf's old templates
# (dpkg's database stays: scanners read it), and from python3.11 lib2to3,
# pydoc's topics and the tkinter/idlelib/test directories when present. Kept: python3.11 and its compiled
# standard library (a read-only root cannot cache byte-code), ensurepip and python3-venv (the operator's
# build stage runs `python3 -m venv` on this image), iptables with its xtables modules (nmisim serve).
slim_rootfs() {
  local r=$1 py=$1/usr/lib/python3.11
  rm -rf "$r"/usr/share/locale/* "$r"/usr/lib/x86_64-linux-gnu/gconv "$r"/usr/share/info/* \
    "$r"/usr/share/lintian "$r"/var/cache/debconf/*-old "$r"/usr/bin/perl "$r"/usr/bin/perl5.* \
    "$r"/usr/lib/x86_64-linux-gnu/perl-base "$r"/usr/share/perl5 \
    "$py"/lib2to3 "$py"/pydoc_data "$py"/idlelib "$py"/tkinter "$py"/test "$py"/turtledemo
}

rootfs_image() { # rootfs_image NAME TAG PACKAGES [slim]: debootstrap $SUITE minbase + PACKAGES as one layer
  local name=$1 tag=$2 packages=$3 slim=${4:-}
  local k; k=$( { printf '%s\n' "$SUITE" minbase "$packages" "$MIRROR" "$(cat "$ROOT/hack/images/archive.py")"
    [[ -z $slim ]] || declare -f slim_rootfs; } | key)
  fresh "$name" "$k" && return 0
  local t0=$SECONDS w="$IMG/work/$name-$k"
  rm -rf "$w"; mkdir -p "$w"
  say "debootstrap $SUITE (minbase + $packages) from $MIRROR: about 2 min"
  debootstrap_minbase "$w/rootfs" "$packages" "$IMG/work/debootstrap-$name.log"
  [[ -z $slim ]] || slim_rootfs "$w/rootfs"
  pack_rootfs "$w/rootfs" "$w/rootfs.tar"
  python3 "$ROOT/hack/images/archive.py" --tag "$tag" --cmd /bin/sh --layer "$w/rootfs.tar" "$w/image.tar"
  publish "$name" "$k" "$w/image.tar"
  rm -rf "$w"
  say "$tag built in $((SECONDS - t0)) s ($(du -h "$(current "$name")" | cut -f1))"
}
build_base() { rootfs_image base nmisim-base:dev "$BASE_PACKAGES" slim; }

# cached_download NAME KEY MESSAGE FETCH: the directory $IMG/NAME-KEY, filled once by `FETCH DIR` (MESSAGE
# said first), then marked complete; the other NAME-* directories are removed then. Prints the directory.
# Called as $(...), where set -e does not hold: FETCH's status is checked here, and a failure leaves the
# directory incomplete (fetched again next time) and stops the script.
cached_download() {
  local name=$1 k=$2 message=$3 fetch=$4 dir="$IMG/$1-$2"
  if [[ ! -e "$dir/.complete" ]]; then
    rm -rf "$dir"; mkdir -p "$dir"
    say "$message"
    "$fetch" "$dir" || die "$message: failed"
    find "$IMG" -maxdepth 1 -name "$name-*" ! -name "$name-$k" -exec rm -rf {} +
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# the operator's dependencies as wheels, plus the build backend, keyed by pyproject.toml
wheels() { cached_download wheels "$(key < "$ROOT/pyproject.toml")" \
  "downloading wheels for the image (no network inside the build)" fetch_wheels; }
fetch_wheels() { # fetch_wheels DIR
  "$PY" -m pip wheel -q --wheel-dir "$1" "$ROOT" >&2 \
    && "$PY" -m pip download -q --only-binary=:all: -d "$1" 'hatchling>=1.25' >&2 \
    && rm -f "$1"/nmisim-*.whl
}

DOCKERD_PID=
DOCKER_HOST_PATHS=(/etc/docker/key.json /opt/containerd /run/containerd)
DOCKER_PATHS_BEFORE=()
docker_up() {
  [[ -n $DOCKER ]] || die "docker is missing (hack/host-deps.sh installs Debian's docker.io)"
  if [[ -n ${DOCKER_HOST:-} ]] && "$DOCKER" info >/dev/null 2>&1; then return 0; fi
  if "$DOCKER" -H unix:///var/run/docker.sock info >/dev/null 2>&1; then export DOCKER_HOST=unix:///var/run/docker.sock; return 0; fi
  command -v dockerd >/dev/null || die "dockerd is missing (hack/host-deps.sh installs Debian's docker.io)"
  local run="$CACHE_ROOT/docker/run"
  mkdir -p "$run" "$CACHE_ROOT/docker/data"
  export DOCKER_HOST="unix://$run/docker.sock"
  # dockerd 20.10 writes a trust key to /etc/docker/key.json, and its containerd makes /opt/containerd
  # and /run/containerd: docker_down removes each again when it is new (and holds no socket).
  local p
  for p in "${DOCKER_HOST_PATHS[@]}"; do [[ -e $p ]] && DOCKER_PATHS_BEFORE+=("$p"); done
  say "starting dockerd for the build (no bridge, no iptables; stopped afterwards)"
  setsid dockerd --data-root "$CACHE_ROOT/docker/data" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
    -H "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=false --exec-opt native.cgroupdriver=cgroupfs --storage-driver=overlay2 \
    >"$CACHE_ROOT/docker/dockerd.log" 2>&1 </dev/null &
  DOCKERD_PID=$!
  trap docker_down EXIT
  wait_dockerd "$DOCKERD_PID" "$CACHE_ROOT/docker/dockerd.log"
}
docker_down() {
  [[ -n $DOCKERD_PID ]] || return 0
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=
  local p
  for p in "${DOCKER_HOST_PATHS[@]}"; do
    [[ -e $p ]] || continue
    [[ " ${DOCKER_PATHS_BEFORE[*]} " == *" $p "* ]] && continue
    [[ -z "$(find "$p" -type s 2>/dev/null | head -1)" ]] && rm -rf "$p"
  done
}

docker_image() { # docker_image NAME KEY BASE_TAR DOCKERFILE CONTEXT [BUILD-ARG...]: nmisim-NAME:dev built
  # offline on the image in BASE_TAR from CONTEXT (then removed), published as NAME's archive under KEY
  local name=$1 k=$2 base_tar=$3 dockerfile=$4 ctx=$5; shift 5
  docker_up
  "$DOCKER" load -q -i "$base_tar" >/dev/null
  say "docker build nmisim-$name:dev (no network)"
  DOCKER_BUILDKIT=0 "$DOCKER" build -q --network none "$@" -f "$dockerfile" -t "nmisim-$name:dev" "$ctx" \
    >"$IMG/work/$name-build.log" 2>&1 || die "docker build failed; see $IMG/work/$name-build.log"
  "$DOCKER" save -o "$IMG/work/$name.tar" "nmisim-$name:dev"
  publish "$name" "$k" "$IMG/work/$name.tar"
  "$DOCKER" image prune -f >/dev/null 2>&1 || true
  docker_down
  rm -rf "$ctx"
}

build_operator() {
  local base_tar; base_tar=$(current base)
  local w; w=$(wheels)
  local k; k=$( { echo "$base_tar"; ls "$w"; files_key operator/nmisim crds; \
    cat "$ROOT/operator/Dockerfile" "$ROOT/pyproject.toml" "$ROOT/README.md"; } | key)
  fresh operator "$k" && return 0
  local t0=$SECONDS ctx="$IMG/work/operator-ctx"
  rm -rf "$ctx"; mkdir -p "$ctx/operator"
  cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$ctx/"
  cp -r "$ROOT/operator/nmisim" "$ctx/operator/"
  cp -r "$ROOT/crds" "$ctx/"  # the wheel ships them (evaluate --strict reads their schemas)
  find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
  cp -rl "$w" "$ctx/wheels" 2>/dev/null || cp -r "$w" "$ctx/wheels"
  docker_image operator "$k" "$base_tar" "$ROOT/operator/Dockerfile" "$ctx" --build-arg PYTHON_IMAGE=nmisim-base:dev
  local size; size=$(tar -xOf "$(current operator)" manifest.json >/dev/null 2>&1 \
    && awk -v b="$(stat -c %s "$(current operator)")" 'BEGIN { printf "%.1f MiB", b / 1048576 }')
  say "nmisim-operator:dev built in $((SECONDS - t0)) s (archive $size)"
  echo "$((SECONDS - t0))" > "$IMG/operator.build-seconds"
}

# azure-identity and its dependencies for the clients image (CPython 3.11, manylinux): the current SDK
# (/opt/sdk) and the old one (/opt/azpy-old). The old one's directory is not named sdk-wheels-*, which
# cached_download would take for a stale copy of the current one's.
sdk_wheels() { cached_download sdk-wheels "$AZURE_IDENTITY_VERSION" \
  "downloading azure-identity $AZURE_IDENTITY_VERSION and its dependencies (wheels)" fetch_sdk_wheels; }
fetch_sdk_wheels() { pip_download_cp311 "$1" "azure-identity==$AZURE_IDENTITY_VERSION"; }
old_sdk_wheels() { cached_download oldsdk-wheels "$AZURE_IDENTITY_OLD_VERSION" \
  "downloading azure-identity $AZURE_IDENTITY_OLD_VERSION (the old SDK) and its dependencies (wheels)" \
  fetch_old_sdk_wheels; }
fetch_old_sdk_wheels() { pip_download_cp311 "$1" "azure-identity==$AZURE_IDENTITY_OLD_VERSION"; }
pip_download_cp311() { # pip_download_cp311 DIR REQUIREMENT
  "$PY" -m pip download -q --only-binary=:all: --implementation cp --python-version 3.11 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
    -d "$1" "$2" >&2
}

# entra_ca DIR: the simulated Entra's CA (the PEM file NMISIM_ENTRA_CA names; by default the one
# `hack/awi.sh entra-ca` makes once, which the Workload Identity tests' `nmisim entra` serves with) as
# DIR/nmisim-entra-ca.crt, which the clients image adds to Debian's bundle; NMISIM_ENTRA_CA=none: no
# simulated Entra's CA. Prints the key part: the CA's sha256, or "no-entra-ca".
entra_ca() {
  local dir=$1
  mkdir -p "$dir"
  if [[ ${NMISIM_ENTRA_CA:-} == none ]]; then
    say "NMISIM_ENTRA_CA=none: the clients image trusts Debian's CAs only (no simulated Entra's)" >&2
    echo no-entra-ca
    return 0
  fi
  if [[ -z ${NMISIM_ENTRA_CA:-} ]]; then
    NMISIM_ENTRA_CA=$("$ROOT/hack/awi.sh" entra-ca)/ca.crt || die "hack/awi.sh entra-ca failed"
  fi
  [[ -r $NMISIM_ENTRA_CA ]] || die "NMISIM_ENTRA_CA=$NMISIM_ENTRA_CA: not a readable file"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$NMISIM_ENTRA_CA" \
    || die "NMISIM_ENTRA_CA=$NMISIM_ENTRA_CA: no PEM certificate in it"
  cp "$NMISIM_ENTRA_CA" "$dir/nmisim-entra-ca.crt"
  sha256sum < "$NMISIM_ENTRA_CA" | cut -c1-16
}

go_clients() { # hack/images/clients/{azgo,imdsload} as static binaries, azidentity from the Go module proxy
  local src="$CACHE_ROOT/go-clients-$AZIDENTITY_VERSION" out
  out="$src/bin-$( (cd "$ROOT/hack/images/clients" && cat azgo/main.go imdsload/main.go) | key)"
  if [[ ! -x $out/azgo || ! -x $out/imdsload ]]; then
    command -v go >/dev/null || die "go not found: install Go 1.26+ (it builds the Kubernetes binaries too)"
    rm -rf "$src/cmd"; mkdir -p "$src/cmd"
    cp -r "$ROOT/hack/images/clients/azgo" "$ROOT/hack/images/clients/imdsload" "$src/cmd/"
    (cd "$src" && export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod \
      && { [[ -f go.mod ]] || go mod init local/nmisim-clients >/dev/null 2>&1; } \
      && go get "github.com/Azure/azure-sdk-for-go/sdk/azidentity@$AZIDENTITY_VERSION" >&2 \
      && go mod tidy >&2 \
      && go build -trimpath -ldflags "-s -w -X main.sdkVersion=$AZIDENTITY_VERSION" -o "$out.tmp/" \
        ./cmd/azgo ./cmd/imdsload >&2) \
      || die "building azgo and imdsload (azidentity $AZIDENTITY_VERSION) failed"
    find "$src" -mindepth 1 -maxdepth 1 -name 'bin-*' ! -name "$(basename "$out").tmp" -exec rm -rf {} +
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

build_clients() {
  rootfs_image clientroot nmisim-clientroot:dev "$CLIENTS_PACKAGES"
  local root_tar; root_tar=$(current clientroot)
  local w; w=$(sdk_wheels)
  local wold; wold=$(old_sdk_wheels)
  local bin; bin=$(go_clients)
  local t0=$SECONDS ctx="$IMG/work/clients-ctx"
  rm -rf "$ctx"; mkdir -p "$ctx"
  local ca; ca=$(entra_ca "$ctx/ca") || exit 1
  local k; k=$( { echo "$root_tar"; ls "$w"; echo old; ls "$wold"; basename "$bin"; echo "$ca"
    files_key hack/images/clients; } | key)
  if fresh clients "$k"; then rm -rf "$ctx"; return 0; fi
  cp "$ROOT/hack/images/clients/azpy.py" "$ctx/"
  cp "$bin/azgo" "$bin/imdsload" "$ctx/"
  cp -rl "$w" "$ctx/wheels" 2>/dev/null || cp -r "$w" "$ctx/wheels"
  cp -rl "$wold" "$ctx/wheels-old" 2>/dev/null || cp -r "$wold" "$ctx/wheels-old"
  docker_image clients "$k" "$root_tar" "$ROOT/hack/images/clients/Dockerfile" "$ctx"
  say "nmisim-clients:dev built in $((SECONDS - t0)) s ($(du -h "$(current clients)" | cut -f1))"
}

CTR_SOCK=$D/node/run/containerd.sock
load() {
  if [[ ! -S $CTR_SOCK ]] || ! ctr --address "$CTR_SOCK" version >/dev/null 2>&1; then
    say "the real node's containerd is not running: nothing loaded (hack/cluster.sh up starts it)"
    return 0
  fi
  local name f digest
  for name in "${IMAGES[@]}"; do
    f=$(current "$name")
    [[ -s $f ]] || continue
    # Import again only when the node does not hold this very build (the archive's file name is its key).
    digest=$(basename "$f" .tar)
    if [[ -s "$D/node/loaded-$name" && "$(<"$D/node/loaded-$name")" == "$digest" ]] \
      && ctr --address "$CTR_SOCK" -n k8s.io images ls -q | grep -qx "docker.io/library/nmisim-$name:dev"; then
      continue
    fi
    ctr --address "$CTR_SOCK" -n k8s.io images import "$f" >/dev/null
    echo "$digest" > "$D/node/loaded-$name"
    say "loaded nmisim-$name:dev into the real node"
  done
}

list() {
  local name f
  for name in "${IMAGES[@]}" clientroot; do
    f=$(current "$name")
    if [[ -s $f ]]; then printf '  nmisim-%-10s %-28s %6s  %s\n' "$name:dev" "$(basename "$f" .tar)" "$(du -h "$f" | cut -f1)" "$f"
    else printf '  nmisim-%-10s not built\n' "$name:dev"; fi
  done
}

mkdir -p "$IMG"
case "${1:-build}" in
  build)
    build_pause
    build_base
    build_operator
    build_clients
    load ;;
  load) load ;;
  list) list ;;
  pause-tar) build_pause; current pause ;;
  pause | base | operator | clients) "build_$1" ;;
  *) die "usage: $0 [build|load|list|pause-tar|pause|base|operator|clients]" ;;
esac
