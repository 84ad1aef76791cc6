#!/usr/bin/env bash
# The host packages the real node and the image builds need, from Debian's packages, installed when
# missing (a fresh machine has none of them). Quiet and quick when everything is there.
#
#   hack/host-deps.sh           install what is missing (needs root and apt-get), exit 0
#   hack/host-deps.sh --check   exit 0 when everything is there, else print what is missing and exit 1
#
# containerd, runc, CNI plugins (in /usr/lib/cni), iptables, conntrack (kube-proxy), nftables (to
# delete the empty tables kube-proxy leaves), docker.io (dockerd, classic builder), debootstrap (the base
# image), shellcheck (tests/unit/test_scripts.py), gcc with a static libc (the pause binary), jq (the
# docs' commands, tests/integration/test_docs_commands.py).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_PREFIX=host-deps
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"

# command -> Debian package that provides it
declare -A PKG=(
  [containerd]=containerd [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
  [iptables]=iptables [ip6tables]=iptables [conntrack]=conntrack [nft]=nftables
  [dockerd]=docker.io [debootstrap]=debootstrap [shellcheck]=shellcheck [gcc]=gcc
  [/usr/lib/x86_64-linux-gnu/libc.a]=libc6-dev [jq]=jq
)

missing=()
for cmd in "${!PKG[@]}"; do
  if [[ $cmd == /* ]]; then [[ -e $cmd ]] && continue
  else PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 && continue; fi
  missing+=("${PKG[$cmd]}")
done
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u | sed '/^$/d')

if ((${#missing[@]} == 0)); then exit 0; fi
if [[ ${1:-} == --check ]]; then
  echo "missing Debian packages: ${missing[*]}"
  exit 1
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
  say "cannot install ${missing[*]}: needs root and apt-get"
  exit 1
fi

say "installing ${missing[*]} (Debian packages)"
# Installing must not start services (docker.io and containerd ship init scripts): policy-rc.d says
# no for the duration, unless the machine already has one of its own.
own_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  own_policy=1
fi
export own_policy  # read by the EXIT trap
trap 'if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/nmisim-host-deps.log 2>&1; then
  apt-get update -qq >>/tmp/nmisim-host-deps.log 2>&1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >>/tmp/nmisim-host-deps.log 2>&1 \
    || { say "apt-get install failed; see /tmp/nmisim-host-deps.log"; exit 1; }
fi
say "installed ${missing[*]}"
