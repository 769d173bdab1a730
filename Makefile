# agentid — the two commands: `make demo` and `make test`. Everything else is a building block of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# kubectl and helm built next to the control plane come first on PATH, so clients match the server.
CONTROL_PLANE_BIN := $(shell hack/build-control-plane.sh --print-dir)
export PATH := $(CONTROL_PLANE_BIN):$(abspath $(BIN)):$(PATH)
PYTEST_ARGS ?=
CHART := charts/agentid-operator
# checkov (chart scan) lives in its own virtualenv: its exact pins (packaging<24, boto3, networkx<2.7, ...) must not
# constrain the project's. tests/integration/test_chart.py runs it on `helm template` output.
CHECKOV_VERSION := 3.3.30
CHECKOV := $(VENV)/tools/checkov/bin/checkov
# actionlint, built once from its Go module into the cache (version pinned in versions.env).
ACTIONLINT_VERSION := $(shell sed -n 's/^ACTIONLINT_VERSION=//p' operator/agentid/devcluster/versions.env)
ACTIONLINT := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/agentid/tools/actionlint-$(ACTIONLINT_VERSION)/actionlint
export AGENTID_ACTIONLINT := $(ACTIONLINT)

# Release tools (build, twine, cyclonedx-bom) in their own virtualenv too. `make release` writes to $(DIST).
RELEASE_TOOLS := $(VENV)/tools/release
DIST ?= dist

.PHONY: test demo lint format crds crds-check control-plane node-prereqs node-assets image node checkov actionlint \
	reference chart-readme release set-version unit integration e2e e2e-cluster bench clean help

help:
	@echo "make demo   - start the local control plane (and a node, as root) and run the agentid story on it"
	@echo "make test   - everything from a fresh machine: venv, installs, control plane build, lint, tests"
	@echo "make lint | crds | control-plane | node-assets | image | unit | integration | node | e2e | e2e-cluster | bench"
	@echo "     release | clean"

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

# Builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm once (cached by version, outside the
# repository). Skipped when the tests target an existing cluster.
control-plane:
	@if [ -n "$$AGENTID_TEST_KUBECONFIG" ]; then echo "AGENTID_TEST_KUBECONFIG set: using that cluster"; \
	else hack/build-control-plane.sh >/dev/null; fi

# A real node (agentid.devcluster.node, tests/node): Debian's runc, CNI plugins, iptables, image tools (installed
# only when missing, needs root), then kubelet, kube-proxy, kube-scheduler and containerd built from their Go
# modules into the same cache. Without root both are skipped and the node tests say why they skip.
node-prereqs:
	@hack/node-prereqs.sh

node-assets: node-prereqs
	@if [ -n "$$AGENTID_TEST_KUBECONFIG" ]; then echo "AGENTID_TEST_KUBECONFIG set: no local node"; \
	elif [ "$$(id -u)" != 0 ]; then echo "not root: no local node (node tests will skip)"; \
	else hack/build-control-plane.sh --with-node >/dev/null; fi

# The agentid image without Docker (mmdebstrap + umoci + skopeo; hack/image/ is shared with the Dockerfile), cached
# by a hash of its inputs; imported into the node of a running `agentid dev up --with-node`.
# IMAGE_ARCHIVE=path: also copy the archive there (`make release` puts it into dist/).
image: $(INSTALLED) node-prereqs
	$(BIN)/python hack/build-image.py $(IMAGE_ARCHIVE)

lint: $(INSTALLED)
	$(BIN)/ruff check operator tests bench hack
	$(BIN)/ruff format --check operator tests bench hack
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(INSTALLED)
	$(BIN)/ruff format operator tests bench hack
	$(BIN)/ruff check --fix operator tests bench hack

# The CRDs, their copy in the chart, the chart's kill-switch condition and docs/reference.md all follow the models:
# one command refreshes them all.
crds: $(INSTALLED)
	$(BIN)/python -m agentid.api.crdgen crds
	rm -f $(CHART)/crds/*.yaml && cp crds/*.yaml $(CHART)/crds/
	$(BIN)/python -m agentid.webhooks.configuration $(CHART)/files
	$(BIN)/python hack/reference.py > docs/reference.md
	$(BIN)/python hack/chart_readme.py > $(CHART)/README.md

# The chart's README.md is generated from values.schema.json and values.yaml (a test fails when it is stale).
chart-readme: $(INSTALLED)
	$(BIN)/python hack/chart_readme.py > $(CHART)/README.md

# docs/reference.md is generated from the API models and the CLI (a test fails when it is stale).
reference: $(INSTALLED)
	$(BIN)/python hack/reference.py > docs/reference.md

$(CHECKOV):
	@test -x $(VENV)/tools/checkov/bin/python || $(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/python -m pip install --quiet --disable-pip-version-check 'checkov==$(CHECKOV_VERSION)'

checkov: $(CHECKOV)

# Without Go (an existing-cluster setup), the workflow lint test skips and says why.
$(ACTIONLINT):
	@if command -v go >/dev/null; then \
	  mkdir -p $(dir $@) && GOBIN=$(dir $@) GOTOOLCHAIN=local CGO_ENABLED=0 \
	    go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION); \
	else echo "go not found: actionlint not built (tests/unit/test_workflows.py will skip)"; fi

actionlint: $(ACTIONLINT)

$(RELEASE_TOOLS)/.installed:
	@test -x $(RELEASE_TOOLS)/bin/python || $(PYTHON) -m venv $(RELEASE_TOOLS)
	$(RELEASE_TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check 'build>=1.2' 'twine>=6' \
	  'cyclonedx-bom>=7.5,<8'
	@touch $@

# Everything a release publishes, in $(DIST)/: wheel + sdist (agentid-operator), the image's exact Python pins and
# their CycloneDX SBOM, the chart .tgz with its CRDs, SHA256SUMS, and (as root) the Docker-less image from
# `make image` as a docker-archive, checksummed too.
# docs/release.md: what each file is and how the tag workflow signs and publishes them.
release: $(INSTALLED) $(RELEASE_TOOLS)/.installed
	$(BIN)/python hack/release.py build --dist $(DIST) --tools $(RELEASE_TOOLS)/bin --helm "$$(command -v helm)"
	@if [ "$$(id -u)" = 0 ]; then \
	  $(MAKE) image IMAGE_ARCHIVE=$(abspath $(DIST))/agentid-image-$$($(BIN)/python hack/release.py version).docker.tar; \
	else echo "not root: no Docker-less image archive (\`make image\` needs root; the release workflow builds it)"; fi
	$(BIN)/python hack/release.py checksums --dist $(DIST)
	@cat $(DIST)/SHA256SUMS

# The one version, from pyproject.toml into agentid.__version__ and the chart: make set-version VERSION=0.2.0
set-version:
	@test -n "$(VERSION)" || { echo "usage: make set-version VERSION=x.y.z"; exit 2; }
	sed -i -E 's/^version = "[^"]+"/version = "$(VERSION)"/' pyproject.toml
	sed -i -E 's/^__version__ = "[^"]+"/__version__ = "$(VERSION)"/' operator/agentid/__init__.py
	sed -i -E 's/^version: .*/version: $(VERSION)/; s/^appVersion: .*/appVersion: "$(VERSION)"/' $(CHART)/Chart.yaml
	$(MAKE) chart-readme
	@$(BIN)/python hack/release.py version

unit: $(INSTALLED)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(INSTALLED) control-plane $(CHECKOV)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: $(INSTALLED) control-plane
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

node: $(INSTALLED) control-plane node-assets
	$(BIN)/pytest tests/node $(PYTEST_ARGS)

# The e2e path of .github/workflows/e2e.yaml (hack/e2e.sh) on an embedded cluster with its node, where one can run
# (root + node assets): the image built without Docker, the chart installed in Pods and smoke-tested, then the
# tests marked existing_cluster against it (README "Tests": why that selection; E2E_PYTEST_ARGS=tests runs all).
E2E_PYTEST_ARGS ?= -m existing_cluster tests
e2e-cluster: $(INSTALLED) control-plane node-assets
	@if [ -n "$$AGENTID_TEST_KUBECONFIG" ]; then \
	  echo "e2e-cluster skipped: AGENTID_TEST_KUBECONFIG is set (the suite ran against that cluster already)"; \
	elif reason="$$($(BIN)/python -c 'from agentid.devcluster.node import unavailable_reason as r; print(r() or "")')" \
	  && [ -n "$$reason" ]; then echo "e2e-cluster skipped: no local node here ($$reason)"; \
	else VENV=$(abspath $(VENV)) hack/e2e.sh --cluster dev -- $(E2E_PYTEST_ARGS); fi

# --durations: where the run's minutes go, in every CI log (the budget is ~20 minutes warm).
test: $(INSTALLED) control-plane node-assets $(CHECKOV) $(ACTIONLINT) lint
	$(BIN)/pytest tests --durations=25 $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory e2e-cluster

# In Pods on a local node where one can run (root); the in-process story (hack/demo.py) elsewhere.
demo: $(INSTALLED) control-plane node-assets
	$(BIN)/python hack/demo_node.py

bench: $(INSTALLED) control-plane
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info operator/*.egg-info
