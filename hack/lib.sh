#!/usr/bin/env bash
# shellcheck shell=bash
# Helpers the scripts share, sourced after they define `say` and `die` (and, for elapsed/with_progress,
# set `start`: SECONDS at the beginning of the build): hack/k8s-bins.sh, hack/helm.sh, hack/image.sh,
# hack/node.sh (through hack/cluster.sh), hack/kind.sh and hack/krew.sh.

# shellcheck disable=SC2154  # start: set by the script that sources this file
elapsed() { printf '%dm%02ds' $(( (SECONDS-start)/60 )) $(( (SECONDS-start)%60 )); }

# Run a long command, printing a heartbeat every 30 s so a person (or CI) sees progress.
with_progress() {
  local label=$1; shift
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30 &
    wait $! 2>/dev/null || true
    kill -0 "$pid" 2>/dev/null && say "  … $label still running ($(elapsed) so far)"
  done
  wait "$pid"
}

# --- the host before and after a cluster: what `down` must leave as `up` found it (hack/node.sh, hack/kind.sh)
# net_snapshot DIR: iptables and ip6tables rules, nf_tables tables, links, addresses, routes and mounts,
# each a file of DIR, normalised (no packet counters, ifindexes or lifetimes)
net_snapshot() {
  local out=$1 t
  mkdir -p "$out"
  for t in filter nat mangle raw; do
    iptables-save -t "$t" 2>/dev/null | grep -v '^#' | sed -e 's/\[[0-9]*:[0-9]*\]//' -e 's/ *$//' || true
  done > "$out/iptables"
  for t in filter nat mangle raw; do
    ip6tables-save -t "$t" 2>/dev/null | grep -v '^#' | sed -e 's/\[[0-9]*:[0-9]*\]//' -e 's/ *$//' || true
  done > "$out/ip6tables"
  { nft list tables 2>/dev/null || true; } | sort > "$out/nft-tables"
  ip -o link show | awk '{print $2, $3}' | sed 's/@[^:]*:/:/' | sort > "$out/links"
  ip -o addr show | awk '{print $2, $3, $4}' | sort > "$out/addresses"
  { ip -4 route show table all; ip -6 route show table all; } 2>/dev/null | sort > "$out/routes"
  awk '{print $5, $9}' /proc/self/mountinfo | sort > "$out/mounts"
}
# shellcheck disable=SC2034 # used by the scripts that source this file
NET_SNAPSHOT_FILES=(iptables ip6tables nft-tables links addresses routes mounts)

# snapshot_diff BEFORE AFTER FILE...: the differences of those files, unified; returns 1 when there are any
snapshot_diff() {
  local before=$1 after=$2 f diffs=""; shift 2
  for f in "$@"; do
    local d; d=$(diff -u "$before/$f" "$after/$f" 2>&1 | tail -n +3) || true
    [[ -n $d ]] && diffs+="--- $f"$'\n'"$d"$'\n'
  done
  [[ -z $diffs ]] && return 0
  printf '%s' "$diffs"
  return 1
}

# wait_dockerd PID LOG: until the dockerd started as PID answers `docker info` (30 s at most)
wait_dockerd() {
  local _
  for _ in $(seq 1 150); do
    "$DOCKER" info >/dev/null 2>&1 && return 0
    kill -0 "$1" 2>/dev/null || die "dockerd exited: $(tail -n 5 "$2")"
    sleep 0.2
  done
  die "dockerd did not answer in 30 s; see $2"
}

# --- Debian root filesystems for images (hack/image.sh, hack/kind.sh; they set SUITE and MIRROR)
# debootstrap_minbase ROOTFS PACKAGES LOG: Debian $SUITE minbase plus PACKAGES in ROOTFS
debootstrap_minbase() {
  command -v debootstrap >/dev/null || die "debootstrap is missing (hack/host-deps.sh installs it)"
  # shellcheck disable=SC2154 # SUITE, MIRROR: set by the script that sources this file
  debootstrap --variant=minbase --include="$2" "$SUITE" "$1" "$MIRROR" >"$3" 2>&1 \
    || die "debootstrap failed; see $3"
}
# pack_rootfs ROOTFS TAR: ROOTFS without apt's caches, logs, docs and man pages, as a reproducible tar
pack_rootfs() {
  rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* "$1"/var/log/*.log \
    "$1"/usr/share/doc/* "$1"/usr/share/man/*
  tar --numeric-owner --sort=name --mtime=@0 -C "$1" -cf "$2" .
}

# --- Go tools built from their modules (hack/kind.sh, hack/krew.sh; they set K and KB, and export
# GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod)
# go_tool NAME MODULE VERSION PACKAGE [VERSION-CHECK...]: PACKAGE of MODULE@VERSION built into $KB/NAME,
# in a scratch module of its own ($K/src-NAME), unless $KB/NAME already prints VERSION-CHECK's output with
# VERSION in it. GO_TOOL_LDFLAGS: more -ldflags (a version stamp). A temporary name of this run's own, so
# two builds at once do not collide.
go_tool() {
  local name=$1 module=$2 version=$3 package=$4; shift 4
  # shellcheck disable=SC2154 # K, KB: set by the script that sources this file
  if [[ -x $KB/$name ]] && [[ "$("$KB/$name" "$@" 2>/dev/null)" == *"${version#v}"* ]]; then return 0; fi
  command -v go >/dev/null || die "go not found: install Go 1.26+"
  local t0=$SECONDS dir=$K/src-$name
  mkdir -p "$KB" "$dir"
  say "building $name $version from its Go module (first time: a few minutes on 2 cores)"
  (cd "$dir" && { [[ -f go.mod ]] || go mod init "local/nmisim-$name" >/dev/null 2>&1; } \
    && go get "$module@$version" >/dev/null 2>&1 \
    && nice -n 10 go build -trimpath -ldflags "-s -w ${GO_TOOL_LDFLAGS:-}" -o "$KB/$name.tmp.$$" "$package") \
    || die "building $name $version failed (is $module@$version on the Go module proxy?)"
  mv "$KB/$name.tmp.$$" "$KB/$name"
  say "  $name built in $((SECONDS - t0)) s"
}
