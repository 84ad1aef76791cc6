#!/usr/bin/env bash
# The real Azure Workload Identity v1.6.0, built here from its Go module (github.com/Azure/azure-workload-identity,
# tag v1.6.0 = commit 04d01a2, served by the Go module proxy), never pulled from a registry: the three binaries,
# three image archives under the upstream image names, and upstream's deploy/azure-wi-webhook.yaml patched
# for the embedded cluster. Everything is cached under $CACHE_ROOT/awi/KEY, KEY = the AWI version, `go version`
# and this script's sha256; nothing is loaded into a node here (hack/image.sh load's job).
#
#   hack/awi.sh bins                 manager (the webhook), proxy and azwi into KEY/bin (smoke-tested)
#   hack/awi.sh images               bins, then KEY/images/{webhook,proxy,proxy-init}.tar (docker-save archives
#                                    by hack/images/archive.py) tagged mcr.microsoft.com/oss/azure/workload-identity/NAME:v1.6.0
#   hack/awi.sh manifest [TENANT]    KEY/azure-wi-webhook.yaml: upstream's, with the tenant (default: the stand-in
#                                    tenant of nmisim.engine.config; NMISIM_AWI_TENANT), AzurePublicCloud, 1 replica,
#                                    pinned to the real node (docs/development.md "hack/awi.sh" says why each)
#   hack/awi.sh all [TENANT]         the three above
#   hack/awi.sh entra-ca             the simulated Entra's CA and server certificate (made once), print their dir
#   hack/awi.sh --print              the cache paths as NAME=VALUE lines for `eval` (no build)
#
# Inputs: NMISIM_CACHE (the cache root), NMISIM_ENTRA_CA (the CA certificate the proxy image trusts; default
# the one entra_ca makes), NMISIM_AWI_TENANT. The proxy-init image is the project's Debian base (hack/image.sh
# base, its cached archive reused) plus init/init-iptables.sh copied from the module at build time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT=${NMISIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nmisim}
AWI_MODULE=github.com/Azure/azure-workload-identity
AWI_VERSION=v1.6.0           # exact: the proxy refuses to list this module's versions
AWI_COMMIT=04d01a2           # the tag's commit; checked against the module's Origin.Hash
MLOG_MODULE=monis.app/mlog@v0.0.4   # AWI's logging library (go.mod:33)
REGISTRY=mcr.microsoft.com/oss/azure/workload-identity   # upstream's names: no image field changes anywhere
ENTRA_CA_CN='nmisim simulated Entra CA - not Microsoft'
ENTRA_DNS=(login.microsoftonline.com entra.nmisim.test)
NICE=(nice -n 19 ionice -c3)  # the machine is shared: builds at the lowest priority

LOG_PREFIX=awi
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"

USAGE="usage: hack/awi.sh [bins|images|manifest [TENANT]|all [TENANT]|entra-ca|--print]"

key() { sha256sum | cut -c1-16; }
command -v go >/dev/null || die "go not found: install Go 1.26+ (AWI $AWI_VERSION's go.mod wants go 1.26.4)"
K=$CACHE_ROOT/awi/$( { echo "$AWI_VERSION"; go version; cat "$ROOT/hack/awi.sh" "$ROOT"/hack/awi/mlog/*; } | key)
BIN=$K/bin
IMGS=$K/images
MANIFEST=$K/azure-wi-webhook.yaml
ENTRA_DIR=$CACHE_ROOT/awi/entra-ca
ENTRA_CA=${NMISIM_ENTRA_CA:-$ENTRA_DIR/ca.crt}
# the binaries: NAME=PACKAGE, built in this order (azwi last: msgraph-sdk-go is the biggest compile)
TARGETS=(manager=./cmd/webhook proxy=./cmd/proxy azwi=./cmd/azwi)
IMAGES=(webhook proxy proxy-init)

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOFLAGS="-buildvcs=false -mod=readonly"

print_paths() {
  printf 'AWI_VERSION=%q\nAWI_BIN=%q\n' "$AWI_VERSION" "$BIN"
  local name var
  for name in "${IMAGES[@]}"; do
    var=${name//-/_}
    printf 'AWI_%s_TAR=%q\n' "${var^^}" "$IMGS/$name.tar"
    printf 'AWI_%s_IMAGE=%q\n' "${var^^}" "$REGISTRY/$name:$AWI_VERSION"
  done
  printf 'AWI_MANIFEST=%q\nAWI_ENTRA_CA_DIR=%q\nAWI_ENTRA_CA=%q\n' "$MANIFEST" "$ENTRA_DIR" "$ENTRA_CA"
}

# module_dir: the module's directory in the Go module cache (read-only), downloaded by exact version; dies
# unless the proxy's origin is the tag's commit
module_dir() {
  local json dir hash
  json=$(go mod download -json "$AWI_MODULE@$AWI_VERSION" 2>&1) \
    || die "go mod download $AWI_MODULE@$AWI_VERSION failed: $(tr '\n' ' ' <<<"$json")"
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' <<<"$json")
  hash=$(sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)",*$/\1/p' <<<"$json")
  [[ -d $dir ]] || die "go mod download $AWI_MODULE@$AWI_VERSION gave no module directory"
  [[ -z $hash || $hash == "$AWI_COMMIT"* ]] || die "$AWI_MODULE@$AWI_VERSION is commit $hash, not $AWI_COMMIT"
  echo "$dir"
}

# --- the binaries, built in a writable copy of the module with its own go.mod and go.sum, as upstream does
smoke() { # smoke NAME: the binary reports the wanted version
  local out
  case "$1" in
    azwi) # Version: v1.6.0 / GitCommit: 04d01a2 ...
      out=$("$BIN/azwi" version 2>/dev/null) || return 1
      [[ $out == *"Version: $AWI_VERSION"* && $out == *"GitCommit: $AWI_COMMIT"* ]] ;;
    *) # {"buildVersion":"v1.6.0","gitCommit":"04d01a2",...}
      out=$("$BIN/$1" --version 2>/dev/null) || return 1
      [[ $out == *"\"buildVersion\":\"$AWI_VERSION\""* && $out == *"\"gitCommit\":\"$AWI_COMMIT\""* ]] ;;
  esac
}

build_bins() {
  local t name pkg missing=()
  for t in "${TARGETS[@]}"; do
    name=${t%%=*}
    if ! [[ -x $BIN/$name ]] || ! smoke "$name"; then missing+=("$t"); fi
  done
  ((${#missing[@]})) || return 0
  local dir src=$K/src t0 v=$AWI_MODULE/pkg
  dir=$(module_dir)
  rm -rf "$src" "$BIN/build-seconds"; mkdir -p "$BIN"
  cp -r "$dir" "$src"; chmod -R u+w "$src"   # the module cache is read-only
  # AWI's logging library, monis.app/mlog: from the Go module proxy where its host is allowed, else (as on
  # this workplace, whose proxy refuses the host) nmisim's stand-in with the same API (hack/awi/mlog)
  local mlog=module
  if ! go mod download "$MLOG_MODULE" >/dev/null 2>&1; then
    mlog=stand-in
    (cd "$src" && go mod edit "-replace=${MLOG_MODULE%@*}=$ROOT/hack/awi/mlog") || die "go mod edit failed"
    warn "$MLOG_MODULE cannot be downloaded (its host is not served here): AWI is built with nmisim's stand-in hack/awi/mlog"
  fi
  echo "$mlog" > "$BIN/mlog"
  local ld="-s -w -X $v/version.BuildVersion=$AWI_VERSION -X $v/version.Vcs=$AWI_COMMIT"
  ld+=" -X $v/version.BuildTime=go-module-proxy -X $v/webhook.ProxyImageRegistry=$REGISTRY"
  ld+=" -X $v/webhook.ProxyImageVersion=$AWI_VERSION"
  start=$SECONDS t0=$SECONDS
  say "downloading the modules AWI $AWI_VERSION needs (go mod download, its own go.sum)"
  (cd "$src" && with_progress "go mod download" "${NICE[@]}" go mod download) || die "go mod download failed"
  echo "go-mod-download $((SECONDS - t0))" >> "$BIN/build-seconds"
  say "  modules in $((SECONDS - t0)) s"
  for t in "${missing[@]}"; do
    name=${t%%=*} pkg=${t#*=} t0=$SECONDS
    say "building $name ($pkg, CGO_ENABLED=0 -trimpath, niced)"
    (cd "$src" && with_progress "$name" "${NICE[@]}" go build -trimpath -ldflags "$ld" -o "$BIN/$name.tmp" "$pkg") \
      || die "building $name failed"
    mv "$BIN/$name.tmp" "$BIN/$name"
    smoke "$name" || die "$BIN/$name does not report $AWI_VERSION ($AWI_COMMIT)"
    echo "$name $((SECONDS - t0))" >> "$BIN/build-seconds"
    say "  $name built in $((SECONDS - t0)) s ($(du -h "$BIN/$name" | cut -f1))"
  done
  rm -rf "$src"
  say "AWI $AWI_VERSION binaries in $BIN ($(elapsed))"
}

# --- the simulated Entra's CA and its server certificate (made once, kept across keys)
entra_ca() {
  [[ -s $ENTRA_DIR/ca.crt && -s $ENTRA_DIR/server.crt && -s $ENTRA_DIR/server.key ]] && return 0
  command -v openssl >/dev/null || die "openssl is missing"
  local w=$ENTRA_DIR.tmp.$$ san="" d
  for d in "${ENTRA_DNS[@]}"; do san+="${san:+,}DNS:$d"; done
  rm -rf "$w"; mkdir -p "$w"
  ( umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout "$w/ca.key" -out "$w/ca.crt" \
      -subj "/O=nmisim/CN=$ENTRA_CA_CN" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash"
    openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$w/server.key" -out "$w/server.csr" \
      -subj "/O=nmisim simulated Entra - not Microsoft/CN=${ENTRA_DNS[0]}"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" "subjectAltName=$san" "subjectKeyIdentifier=hash" \
      "authorityKeyIdentifier=keyid,issuer" > "$w/server.ext"
    openssl x509 -req -sha256 -days 825 -in "$w/server.csr" -CA "$w/ca.crt" -CAkey "$w/ca.key" \
      -CAcreateserial -extfile "$w/server.ext" -out "$w/server.crt"
  ) >"$w/openssl.log" 2>&1 || die "openssl failed: $(tail -n 3 "$w/openssl.log")"
  rm -f "$w/server.csr" "$w/server.ext" "$w/ca.srl" "$w/openssl.log"
  chmod 600 "$w/ca.key" "$w/server.key"; chmod 644 "$w/ca.crt" "$w/server.crt"
  rm -rf "$ENTRA_DIR"; mv "$w" "$ENTRA_DIR"
  say "simulated Entra CA and server certificate (${ENTRA_DNS[*]}) in $ENTRA_DIR"
}

# --- the images (not loaded: hack/image.sh load, or ctr -n k8s.io images import on the real node)
archive() { "${NICE[@]}" python3 "$ROOT/hack/images/archive.py" "$@"; }
image_fresh() { [[ -s $IMGS/$1.tar && -s $IMGS/$1.key && "$(<"$IMGS/$1.key")" == "$2" ]]; }
image_done() { # image_done NAME KEY T0
  mv "$IMGS/$1.tar.new" "$IMGS/$1.tar"; echo "$2" > "$IMGS/$1.key"
  say "$REGISTRY/$1:$AWI_VERSION built in $((SECONDS - $3)) s ($(du -h "$IMGS/$1.tar" | cut -f1)): $IMGS/$1.tar"
}

# base_rootfs OUT: the root filesystem layer of the project's Debian base image (hack/image.sh base, which
# reuses its cached archive; building it needs root and debootstrap), one layer by construction
base_archive() {
  local f; f=$(readlink -f "$CACHE_ROOT/images/base.tar" 2>/dev/null || true)
  if [[ ! -s $f ]]; then
    say "no nmisim-base:dev archive in $CACHE_ROOT/images: building it (hack/image.sh base)"
    "$ROOT/hack/image.sh" base
    f=$(readlink -f "$CACHE_ROOT/images/base.tar" 2>/dev/null || true)
    [[ -s $f ]] || die "hack/image.sh base made no $CACHE_ROOT/images/base.tar"
  fi
  echo "$f"
}
base_rootfs() {
  local f=$1 out=$2 layers
  layers=$(tar -xOf "$f" manifest.json | python3 -c 'import json, sys; print(*json.load(sys.stdin)[0]["Layers"])') \
    || die "$f: no manifest.json"
  [[ $layers != *" "* && -n $layers ]] || die "$f: want one layer (a root filesystem), found: $layers"
  tar -xOf "$f" "$layers" > "$out"
}

build_images() {
  build_bins
  [[ -n ${NMISIM_ENTRA_CA:-} ]] || entra_ca
  [[ -s $ENTRA_CA ]] || die "NMISIM_ENTRA_CA=$ENTRA_CA: no such certificate"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$ENTRA_CA" || die "$ENTRA_CA is not a PEM certificate"
  mkdir -p "$IMGS"
  local k t0 w=$K/work
  local tool; tool=$(sha256sum < "$ROOT/hack/images/archive.py")
  # webhook: /manager alone, as upstream's distroless image runs it (webhook.Dockerfile: USER 65532:65532)
  k=$( { echo webhook; sha256sum < "$BIN/manager"; echo "$tool"; } | key)
  if ! image_fresh webhook "$k"; then
    t0=$SECONDS
    archive --tag "$REGISTRY/webhook:$AWI_VERSION" --user 65532:65532 --entrypoint /manager \
      --file "/manager=$BIN/manager" "$IMGS/webhook.tar.new"
    image_done webhook "$k" "$t0"
  fi
  # proxy: /proxy as user 1501 (init-iptables.sh exempts --uid-owner 1501 from its REDIRECT, and the injected
  # sidecar sets no runAsUser: the image's USER is the one that runs), trusting the simulated Entra's CA only
  k=$( { echo proxy; sha256sum < "$BIN/proxy"; sha256sum < "$ENTRA_CA"; echo "$tool"; } | key)
  if ! image_fresh proxy "$k"; then
    t0=$SECONDS
    archive --tag "$REGISTRY/proxy:$AWI_VERSION" --user 1501:1501 --entrypoint /proxy \
      --file "/proxy=$BIN/proxy" --file "/etc/ssl/certs/ca-certificates.crt=$ENTRA_CA" "$IMGS/proxy.tar.new"
    image_done proxy "$k" "$t0"
  fi
  # proxy-init: the Debian base (sh, iptables-nft) + the module's init/init-iptables.sh, upstream's user and
  # entrypoint (proxy-init.Dockerfile; the webhook runs the container as root, privileged, NET_ADMIN)
  local base dir; base=$(base_archive); dir=$(module_dir)
  k=$( { echo proxy-init; basename "$base"; sha256sum < "$dir/init/init-iptables.sh"; echo "$tool"; } | key)
  if ! image_fresh proxy-init "$k"; then
    t0=$SECONDS
    rm -rf "$w"; mkdir -p "$w"
    base_rootfs "$base" "$w/rootfs.tar"
    # /bin is a link to usr/bin in Debian 12: the script goes where ./bin/init-iptables.sh leads
    archive --tag "$REGISTRY/proxy-init:$AWI_VERSION" --user 65532:65532 --entrypoint ./bin/init-iptables.sh \
      --layer "$w/rootfs.tar" --file "/usr/bin/init-iptables.sh=$dir/init/init-iptables.sh" "$IMGS/proxy-init.tar.new"
    rm -rf "$w"
    image_done proxy-init "$k" "$t0"
  fi
}

# --- upstream's manifest, changed only where it must be (each change exactly once, or nothing is written)
stand_in_tenant() {
  sed -n 's/^WI_TENANT_STAND_IN: Final = "\([^"]*\)"$/\1/p' "$ROOT/operator/nmisim/engine/config.py"
}
build_manifest() {
  local tenant=${1:-${NMISIM_AWI_TENANT:-$(stand_in_tenant)}} dir msg
  [[ $tenant =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ ]] || die "tenant ID $(printf %q "$tenant"): want a GUID or a domain name"
  dir=$(module_dir)
  mkdir -p "$K"
  msg=$(python3 - "$dir/deploy/azure-wi-webhook.yaml" "$MANIFEST.new" "$tenant" <<'PY' 2>&1
import sys

src, out, tenant = sys.argv[1:]
text = open(src, encoding="utf-8").read()
PATCHES = [
    # the cloud: the value upstream's envsubst would give; the webhook injects its AZURE_AUTHORITY_HOST
    ("  AZURE_ENVIRONMENT: ${AZURE_ENVIRONMENT:-AzurePublicCloud}\n", "  AZURE_ENVIRONMENT: AzurePublicCloud\n"),
    # the tenant: required, the webhook refuses to start without one
    ("  AZURE_TENANT_ID: ${AZURE_TENANT_ID}\n", f'  AZURE_TENANT_ID: "{tenant}"\n'),
    # one node runs it
    ("spec:\n  replicas: 2\n", "spec:\n  replicas: 1\n"),
    # only the real node: never kwok's fake nodes, whose pod IPs the API server would dial off-host
    (
        "      nodeSelector:\n        kubernetes.io/os: linux\n",
        "      nodeSelector:\n        kubernetes.io/os: linux\n        nmisim.dev/node: real\n",
    ),
    (
        "      serviceAccountName: azure-wi-webhook-admin\n      volumes:\n",
        "      serviceAccountName: azure-wi-webhook-admin\n      tolerations:\n      - effect: NoSchedule\n"
        "        key: nmisim.dev/node\n        operator: Equal\n        value: real\n      volumes:\n",
    ),
    # memory limit 30Mi -> 64Mi: cgroup v1 charges the manager's page cache (its 41 MiB binary) to it; at 30Mi
    # it thrashed (failcnt 2.9 million, 9,341 major faults, not Ready after 3 min); at 64Mi Ready in 19 s
    # from a cold page cache, failcnt 0, peak 27.9 MB (docs/development.md)
    (
        "          limits:\n            cpu: 100m\n            memory: 30Mi\n",
        "          limits:\n            cpu: 100m\n            memory: 64Mi\n",
    ),
]
for old, new in PATCHES:
    if text.count(old) != 1:
        sys.exit(f"{src}: want {old!r} exactly once, found it {text.count(old)} times")
    text = text.replace(old, new)
if "${" in text:
    sys.exit(f"{src}: a placeholder is left: {text[text.index('${'):][:40]!r}")
open(out, "w", encoding="utf-8").write(text)
PY
  ) || die "patching deploy/azure-wi-webhook.yaml: $msg"
  mv "$MANIFEST.new" "$MANIFEST"
  say "manifest (tenant $tenant, 1 replica, pinned to the real node, memory limit 64Mi): $MANIFEST"
}

cmd=${1:-}
case "$cmd" in
  --print) (($# == 1)) || die "$USAGE"; print_paths ;;
  bins) (($# == 1)) || die "$USAGE"; build_bins; echo "$BIN" ;;
  images) (($# == 1)) || die "$USAGE"; build_images; echo "$IMGS" ;;
  manifest) (($# <= 2)) || die "$USAGE"; build_manifest "${2:-}"; echo "$MANIFEST" ;;
  all) (($# <= 2)) || die "$USAGE"; build_images; build_manifest "${2:-}"; print_paths ;;
  entra-ca) (($# == 1)) || die "$USAGE"; entra_ca; echo "$ENTRA_DIR" ;;
  *) die "$USAGE" ;;
esac
