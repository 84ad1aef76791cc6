#!/usr/bin/env bash
# Build krew, the kubectl plugin manager (sigs.k8s.io/krew/cmd/krew), from its Go module into the tool
# cache outside the repository, to test plugins/krew/ (tests/unit/test_krew.py). Idempotent: a binary
# that already reports the wanted version is not rebuilt. Prints the binary's path on its last line.
#
#   hack/krew.sh            build krew if missing, print its path
#   hack/krew.sh --print    print the path only (no build; the file may not exist yet)
#
# KREW_VERSION must be a version the Go module proxy serves:
#   GOFLAGS=-mod=mod go list -m -versions sigs.k8s.io/krew
set -euo pipefail

KREW_VERSION=${KREW_VERSION:-v0.4.3}
CACHE_ROOT=${NMISIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nmisim}
K=$CACHE_ROOT/tools/krew-$KREW_VERSION
KB=$K/bin

if [[ "${1:-}" == "--print" ]]; then echo "$KB/krew"; exit 0; fi

LOG_PREFIX=krew
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

# As krew's hack/make-binaries.sh does: the tag stamped in, so `krew version` reports it (and the check
# below can tell a build of another version). `krew version` makes its KREW_ROOT's directories: a
# scratch root in the cache, never ~/.krew; no upgrade check (it would ask GitHub).
GO_TOOL_LDFLAGS="-X sigs.k8s.io/krew/internal/version.gitTag=$KREW_VERSION"
export KREW_ROOT=$K/root KREW_NO_UPGRADE_CHECK=1
go_tool krew sigs.k8s.io/krew "$KREW_VERSION" sigs.k8s.io/krew/cmd/krew version
got=$("$KB/krew" version 2>/dev/null | awk '$1 == "GitTag" {print $2}')
[[ $got == "$KREW_VERSION" ]] || die "built krew reports ${got:-nothing}, not $KREW_VERSION"
echo "$KB/krew"
