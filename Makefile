# nmisim: every target sets itself up; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The embedded cluster's state; NMISIM_CLUSTER_DIR=DIR runs a second one (tests and hack/ follow it).
NMISIM_CLUSTER_DIR ?= $(CURDIR)/.cluster
export NMISIM_CLUSTER_DIR
export KUBECONFIG ?= $(NMISIM_CLUSTER_DIR)/kubeconfig

.PHONY: help install host-deps binaries image image-if-node cluster-up cluster-down cluster-status test test-unit test-cluster test-faults lint bench bench-engine bench-serve demo clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]'  # constraints.txt: hack/constraints.py
	@touch $@

install: $(STAMP) ## create .venv with nmisim, test tools and kubectl (quick when nothing changed)

binaries: ## build etcd, kube-apiserver, KCM, scheduler, kubelet, kube-proxy, kwok into ~/.cache/nmisim
	@hack/k8s-bins.sh >/dev/null

# The real node's host packages (containerd, runc, CNI plugins, iptables, docker.io, debootstrap, ...),
# from Debian's packages when missing; only where this runs as root (elsewhere the real node is skipped).
host-deps: ## install the real node's Debian packages when missing (root only)
	@if [ "$$(id -u)" = 0 ] && [ "$${NMISIM_REAL_NODE:-auto}" != 0 ]; then hack/host-deps.sh; fi

image: install host-deps ## build nmisim-operator:dev (and the pause and base images) here, load into the real node
	@hack/image.sh build

# Images are built only where the real node can run them (root); `make image` builds them anywhere docker runs.
image-if-node:
	@if [ "$$(id -u)" = 0 ] && [ "$${NMISIM_REAL_NODE:-auto}" != 0 ]; then hack/image.sh build; fi

cluster-up: install binaries host-deps ## start the local cluster on 127.0.0.1 (state in .cluster/), with the real node
	@PATH=$(CURDIR)/$(BIN):$$PATH hack/cluster.sh up

cluster-down: ## stop every process cluster-up started; restore the host (fails if it differs)
	@hack/cluster.sh down

cluster-status: ## show what runs
	@hack/cluster.sh status

lint: install ## ruff and mypy --strict over operator/, tests/ and hack/; the layering contracts (import-linter)
	$(BIN)/ruff check operator tests hack
	$(BIN)/ruff format --check operator tests hack
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache pyproject.toml

test-unit: install ## unit tests of the engine and CLI (no cluster)
	$(BIN)/pytest tests/unit -q

test: install binaries host-deps helm lint awi-if-node image-if-node ## lint, then all tests in two phases (hack/test.sh; starts the cluster if none runs)
	@hack/test.sh

# Fault tests restart cluster components: always on a cluster of their own (.cluster-faults, started if
# needed and stopped afterwards), never on .cluster. hack/test.sh leaves them out of `make test`.
FAULTS_CLUSTER := $(CURDIR)/.cluster-faults
test-faults: install binaries ## SIGKILL, API server/etcd restarts, 410, drift, peering, bad input, RBAC
	NMISIM_REAL_NODE=0 NMISIM_CLUSTER_DIR=$(FAULTS_CLUSTER) KUBECONFIG=$(FAULTS_CLUSTER)/kubeconfig PATH=$(CURDIR)/$(BIN):$$PATH \
		$(BIN)/pytest tests/faults -m faults -q

# IN_CLUSTER=1: the operator as a pod on the real node, installed from manifests/ (needs the real node).
demo: install binaries host-deps ## the main job: local cluster, operator, sample AKS-like cluster, verdicts (IN_CLUSTER=1: operator in a pod; AWI=1: one pod before/after Workload Identity)
	@if [ -n "$(IN_CLUSTER)" ]; then hack/image.sh build; fi
	@IN_CLUSTER=$(IN_CLUSTER) AWI=$(AWI) hack/demo.sh

TIER ?= S
bench: install binaries ## cluster benchmark (TIER=S: 1,000 pods; M: 10,000; L: 50,000) -> .bench/
	$(PY) hack/bench --tier $(TIER)

# Needs the real node (root): starts the cluster if none runs, and stops it afterwards if it did.
bench-serve: install binaries host-deps image ## nmisim serve from a real pod through NMI's DNAT vs a bare server -> .bench/serve.*
	$(PY) hack/bench_serve.py

bench-engine: install ## engine throughput, indexed vs naive
	$(PY) hack/bench_engine.py

clean: cluster-down ## remove .venv, .cluster, .bench
	rm -rf $(VENV) .cluster .bench

.PHONY: test-kind kind-up kind-down
# kind, built and run here (hack/kind.sh): needs root; leaves the host as it found it (checked).
test-kind: install binaries host-deps helm ## kind for real: cluster from a node image built here, the README's path, the suites, host compared
	@hack/test-kind.sh

kind-up: install binaries host-deps ## a kind cluster (nmisim) from the node image built here; KUBECONFIG=$$(hack/kind.sh kubeconfig)
	@hack/kind.sh up

kind-down: ## delete the kind cluster, stop its dockerd, restore and compare the host
	@hack/kind.sh down

.PHONY: e2e-kind
e2e-kind: install ## cluster tests on a kind cluster running the operator image (needs Docker and kind)
	@PATH=$(CURDIR)/$(BIN):$$PATH hack/kind-e2e.sh

.PHONY: awi
# Azure Workload Identity v1.6.0, built here from its Go module (hack/awi.sh; docs/development.md): nothing is
# pulled and nothing loaded; prints the cache paths (NAME=VALUE) at the end.
awi: ## build AWI v1.6.0's webhook, proxy and azwi, their three images and the patched manifest into ~/.cache/nmisim/awi
	@hack/awi.sh all

# Where the real node runs: `make test` installs the webhook on it (tests/incluster/test_awi.py, hack/awi-up.sh).
.PHONY: awi-if-node awi-up awi-down
awi-if-node:
	@if [ "$$(id -u)" = 0 ] && [ "$${NMISIM_REAL_NODE:-auto}" != 0 ]; then hack/awi.sh all >/dev/null; fi

awi-up: awi ## install the AWI webhook on the running cluster's real node and start the simulated Entra (hack/awi-up.sh)
	@hack/awi-up.sh up

awi-down: ## stop the simulated Entra and remove the AWI webhook
	@hack/awi-up.sh down

.PHONY: helm
helm: ## build helm (for charts/nmisim) from Go modules into ~/.cache/nmisim; tests/unit/test_chart.py calls it too
	@hack/helm.sh >/dev/null

.PHONY: krew-archive krew
# The krew plugin (plugins/krew/, docs/install.md): the archive is the launcher alone, reproducible, so the
# manifest in the repository holds its sha256; tests/unit/test_krew.py fails when they differ.
krew-archive: ## the krew plugin's archive into dist/krew/; its version, uri, sha256 into plugins/krew/nmisim.yaml (KREW_BASE_URL=where you publish it)
	@$(if $(wildcard $(PY)),$(PY),python3) hack/krew_plugin.py $(if $(KREW_BASE_URL),--base-url $(KREW_BASE_URL))

krew: ## build krew (the kubectl plugin manager) from Go modules into ~/.cache/nmisim; tests/unit/test_krew.py calls it too
	@hack/krew.sh >/dev/null
