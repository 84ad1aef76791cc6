#!/usr/bin/env bash
# Build the local cluster's binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet and kube-proxy for the real node, kwok) from Go modules into a version-keyed cache outside the repository. Idempotent: a binary that
# already reports the wanted version is not rebuilt. Prints the bin directory on its last line.
#
#   hack/k8s-bins.sh            build what is missing, print the bin dir
#   hack/k8s-bins.sh NAME...    the same for these binaries only (also kubeadm and kubectl, for kind's node)
#   hack/k8s-bins.sh --print    print the bin dir only (no build)
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE_ROOT=${NMISIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nmisim}
OUT="$CACHE_ROOT/k8s/$KUBE_VERSION/bin"
SRC="$CACHE_ROOT/k8s/$KUBE_VERSION/src"

if [[ "${1:-}" == "--print" ]]; then echo "$OUT"; exit 0; fi

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
staging_version="v0.${KUBE_VERSION#v1.}"

LOG_PREFIX=k8s-bins
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

have() { # have NAME: the binary exists and reports the wanted version
  local bin="$OUT/$1"
  [[ -x "$bin" ]] || return 1
  case "$1" in
    etcd) [[ -s "$OUT/.etcd-version" ]] && "$bin" --version >/dev/null 2>&1 ;;
    kwok) [[ -s "$OUT/kwok-stages.yaml" ]] && "$bin" --version 2>/dev/null | grep -q "$KWOK_VERSION" ;;
    # (output read whole: grep -q would close the pipe early, and pipefail would count kubectl's SIGPIPE)
    kubeadm) [[ "$("$bin" version -o short 2>/dev/null)" == "$KUBE_VERSION" ]] ;;
    kubectl) [[ "$("$bin" version --client 2>/dev/null)" == *"Client Version: $KUBE_VERSION"* ]] ;;
    *) "$bin" --version 2>/dev/null | grep -q "Kubernetes $KUBE_VERSION" ;;
  esac
}

wanted=("$@")
((${#wanted[@]})) || wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kwok)
missing=()
for b in "${wanted[@]}"; do
  have "$b" || missing+=("$b")
done
if (( ${#missing[@]} == 0 )); then echo "$OUT"; exit 0; fi

command -v go >/dev/null || { say "go not found: install Go 1.26+"; exit 1; }
mkdir -p "$OUT" "$SRC"
start=$SECONDS
say "building ${missing[*]} for Kubernetes $KUBE_VERSION into $OUT (first time: 20-40 min on 2 cores)"

# --- the Kubernetes scratch module: k8s.io/kubernetes plus replace lines for every staging module.
cd "$SRC"
if [[ ! -f go.mod ]]; then
  go mod init local/nmisim-k8s-bins >/dev/null 2>&1
fi
if ! grep -q "k8s.io/kubernetes $KUBE_VERSION" go.mod 2>/dev/null; then
  say "resolving k8s.io/kubernetes@$KUBE_VERSION"
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [[ -f "$gomod" ]] || { say "could not download k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
  args=()
  while read -r mod; do
    args+=("-replace=$mod=$mod@$staging_version")
  done < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
  go mod edit "${args[@]}"
  godebug=$(sed -n 's/^godebug default=\(go[0-9.]*\)$/\1/p' "$gomod")
  [[ -n "$godebug" ]] && go mod edit "-godebug=default=$godebug"
  say "  ${#args[@]} staging replace lines${godebug:+, godebug default=$godebug}"
  with_progress "go get" go get "k8s.io/kubernetes@$KUBE_VERSION"
  etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
  with_progress "go get etcd" go get "go.etcd.io/etcd/server/v3@$etcd_version"
fi
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

for b in "${missing[@]}"; do
  t0=$SECONDS
  case "$b" in
    etcd)
      say "building etcd $etcd_version (the version k8s.io/kubernetes $KUBE_VERSION pins)"
      (cd "$SRC" && with_progress etcd go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3)
      mv "$OUT/etcd.tmp" "$OUT/etcd"; echo "$etcd_version" > "$OUT/.etcd-version" ;;
    kwok)
      say "building kwok $KWOK_VERSION"
      mkdir -p "$SRC/kwok"
      (cd "$SRC/kwok" && { [[ -f go.mod ]] || go mod init local/nmisim-kwok >/dev/null 2>&1; } \
        && go get "sigs.k8s.io/kwok@$KWOK_VERSION" \
        && with_progress kwok go build -trimpath \
             -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
             -o "$OUT/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok)
      # kwok ships its default "fast" Stage definitions as data in the module; kwokctl feeds them to
      # kwok through --config, and so do we (hack/cluster.sh).
      kwok_dir=$(cd "$SRC/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
      for f in "$kwok_dir"/kustomize/stage/node/fast/node-initialize.yaml "$kwok_dir"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml; do
        echo "---"; cat "$f"
      done > "$OUT/kwok-stages.yaml"
      mv "$OUT/kwok.tmp" "$OUT/kwok" ;;
    *)
      say "building $b"
      (cd "$SRC" && with_progress "$b" go build -trimpath -tags=selinux,notest,grpcnotrace \
         -ldflags "$ldflags" -o "$OUT/$b.tmp" "k8s.io/kubernetes/cmd/$b")
      mv "$OUT/$b.tmp" "$OUT/$b" ;;
  esac
  say "  $b done in $((SECONDS-t0)) s ($(du -h "$OUT/$b" | cut -f1))"
done
say "all binaries ready in $(elapsed); cache $(du -sh "$CACHE_ROOT" | cut -f1)"
echo "$OUT"
