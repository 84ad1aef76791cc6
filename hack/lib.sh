#!/usr/bin/env bash
# shellcheck shell=bash
# The harness's one library, sourced by every script in hack/ and by .ci/run (hack/node.sh through
# hack/cluster.sh), near the top, after `set -euo pipefail`:
#
#   LOG_PREFIX=image   # the name in the script's messages (default: the script's file name, without .sh)
#   # shellcheck source=hack/lib.sh
#   source "$ROOT/hack/lib.sh"
#
# Logging: say, warn, die. Waiting: wait_until. Timing: elapsed, with_progress (they read `start`, SECONDS
# at the beginning of the build). The host before and after a cluster: net_snapshot, snapshot_diff,
# iptables_words. Images: wait_dockerd, debootstrap_minbase, pack_rootfs. Go tools: go_tool.

# --- logging: every message on stderr, as `[PREFIX] message` (the prefix in bold; NO_COLOR=1: plain)
LOG_PREFIX=${LOG_PREFIX:-$(basename "$0" .sh)}
say() {
  if [[ -n ${NO_COLOR:-} ]]; then printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2
  else printf '\033[1m[%s]\033[0m %s\n' "$LOG_PREFIX" "$*" >&2; fi
}
warn() { say "warning: $*"; }
die() { say "error: $*"; exit 1; }

# --- waiting on a condition, never for a fixed time
# wait_until TIMEOUT DESCRIPTION COMMAND...: run COMMAND every WAIT_INTERVAL seconds (default 0.2) until it
# succeeds; once more than TIMEOUT seconds (an integer) have passed, die "gave up after TIMEOUT s waiting
# for DESCRIPTION". COMMAND runs in this shell: it may die itself (say, the process it waits for exited).
# A caller sets the interval for one wait as `WAIT_INTERVAL=0.5 wait_until ...`.
wait_until() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS <= deadline)) || die "gave up after ${timeout}s waiting for $what"
    sleep "${WAIT_INTERVAL:-0.2}"
  done
}

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

# iptables_words LINE ARRAY: the words of LINE, one rule as `iptables -S` prints it, into the array named
# ARRAY, read back exactly as iptables wrote them and never run: a word holding anything but
# [A-Za-z0-9_-] (a comment: "kubernetes forwarding rules") is written in double quotes with a backslash
# before each ", \ and ' in it (libxtables' xtables_save_string); a backslash outside quotes escapes the
# next character too. Returns 1 (ARRAY empty) on an unterminated quote or a trailing backslash.
iptables_words() {
  local line=$1 word="" ch i quoted=0 escaped=0 started=0
  local -n words_out=$2
  words_out=()
  for ((i = 0; i < ${#line}; i++)); do
    ch=${line:i:1}
    if ((escaped)); then word+=$ch; escaped=0; started=1
    elif [[ $ch == \\ ]]; then escaped=1
    elif ((quoted)); then
      if [[ $ch == '"' ]]; then quoted=0; else word+=$ch; fi
    elif [[ $ch == '"' ]]; then quoted=1; started=1
    elif [[ $ch == ' ' ]]; then
      ((started)) && words_out+=("$word")
      word="" started=0
    else word+=$ch; started=1
    fi
  done
  if ((quoted || escaped)); then words_out=(); return 1; fi
  ((started)) && words_out+=("$word")
  return 0
}

# wait_dockerd PID LOG: until the dockerd started as PID answers `docker info` (40 s at most)
wait_dockerd() { wait_until 40 "dockerd to answer \`docker info\` (see $2)" dockerd_answers "$1" "$2"; }
dockerd_answers() { # dockerd_answers PID LOG: dockerd answers; it dies when that dockerd has exited
  "$DOCKER" info >/dev/null 2>&1 && return 0
  kill -0 "$1" 2>/dev/null || die "dockerd exited: $(tail -n 5 "$2")"
  return 1
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
