#!/usr/bin/env bash
# The e2e path, one script for the GitHub workflow (.github/workflows/e2e.yaml) and for `make test`:
#   1. a cluster: kind (Docker) or the embedded control plane with its node (`agentid dev up --with-node`, root);
#   2. the agentid image in it: `docker build` + `kind load`, or built without Docker (hack/build-image.py) and
#      imported into the node;
#   3. the chart installed, reconciling only e2e-agents (so it never competes with the operators the suite starts
#      for its own namespaces) and admitting namespaces labelled agentid.dev/admission=enforced: e2e-agents and the
#      suite's agent namespaces, whose admission tests thus run against the installed release's webhook;
#   4. a smoke test: an AgentIdentity becomes Ready, `kubectl agentid check` passes;
#   5. the suite against that cluster (AGENTID_TEST_KUBECONFIG), with the pytest arguments given (default: tests);
#   6. the cluster torn down (a stale one from an earlier run is removed at the start).
#
# Usage: hack/e2e.sh [--cluster kind|dev|existing] [--keep] [-- PYTEST_ARGS...]
#   --cluster kind      create a kind cluster ($KIND_CLUSTER), docker build + kind load the image
#   --cluster dev       start `agentid dev up --with-node` (root), build the image without Docker, import it
#   --cluster existing  use $KUBECONFIG as it is; $IMAGE must already be pullable or loaded there
#   default: kind where Docker answers and kind is installed, else dev
#   --keep              leave the cluster running at the end (prints how to reach and remove it)
# On a failure it prints what failed, the release's Pods and the operator's and token service's logs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CLUSTER=""
KEEP=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cluster) CLUSTER="${2:?--cluster needs kind, dev or existing}"; shift 2 ;;
    --cluster=*) CLUSTER="${1#*=}"; shift ;;
    --keep) KEEP=1; shift ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "e2e: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#PYTEST_ARGS[@]} -gt 0 ] || PYTEST_ARGS=(tests)

KIND_CLUSTER="${KIND_CLUSTER:-agentid-e2e}"
RELEASE="${RELEASE:-agentid}"
RELEASE_NAMESPACE="${RELEASE_NAMESPACE:-agentid-system}"
AGENTS_NAMESPACE="${AGENTS_NAMESPACE:-e2e-agents}"
ADMISSION_LABEL="agentid.dev/admission=enforced"  # what tests/conftest.py labels the suite's agent namespaces with
VENV="${VENV:-$REPO/.venv}"
# Everything this script leaves between runs (the dev cluster's folder, its state file, the kubeconfig).
E2E_DIR="${E2E_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentid/e2e}"
# `agentid dev up` records its cluster in $XDG_STATE_HOME/agentid: a state folder of our own, so the stale-cluster
# cleanup below only ever stops a cluster this script started (never a developer's own `agentid dev up`).
DEV_STATE="$E2E_DIR/state"
KUBECONFIG_FILE="$E2E_DIR/kubeconfig"

STARTED=$SECONDS
STEP="setup"
OWN_CLUSTER=0  # set once this run starts creating its cluster: from then on, the exit tears it down
step() {
  STEP="$1"
  printf '\n== [%s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$((SECONDS - STARTED))" "$1"
}

if [ -z "$CLUSTER" ]; then
  if command -v kind >/dev/null && docker info >/dev/null 2>&1; then CLUSTER=kind; else CLUSTER=dev; fi
fi
case "$CLUSTER" in kind|dev|existing) ;; *) echo "e2e: --cluster must be kind, dev or existing" >&2; exit 2 ;; esac

dev() { XDG_STATE_HOME="$DEV_STATE" "$VENV/bin/agentid" dev "$@"; }

teardown() {
  case "$CLUSTER" in
    kind) kind delete cluster --name "$KIND_CLUSTER" ;;
    dev) dev down && if [ "${1:-1}" = 0 ]; then rm -rf "$E2E_DIR/cluster"; fi ;;  # its logs stay after a failure
  esac
}

diagnose() {
  echo "== e2e FAILED in step: $STEP (after $((SECONDS - STARTED))s)" >&2
  [ -s "$KUBECONFIG_FILE" ] || return 0
  export KUBECONFIG="$KUBECONFIG_FILE"
  kubectl get nodes -o wide || true
  kubectl -n "$RELEASE_NAMESPACE" get pods -o wide || true
  kubectl -n "$RELEASE_NAMESPACE" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 30 || true
  kubectl -n "$AGENTS_NAMESPACE" get agentidentities -o wide 2>/dev/null || true
  for deployment in $(kubectl -n "$RELEASE_NAMESPACE" get deployments -o name 2>/dev/null); do
    echo "-- logs of $deployment ($RELEASE_NAMESPACE)"
    kubectl -n "$RELEASE_NAMESPACE" logs "$deployment" --all-containers --prefix --tail=200 || true
  done
  if [ "$CLUSTER" = dev ] && [ -f "$E2E_DIR/dev-up.log" ]; then
    echo "-- agentid dev up (last lines; the control plane's logs stay in $E2E_DIR/cluster until the next run)"
    tail -n 30 "$E2E_DIR/dev-up.log" || true
  fi
}

on_exit() {
  local status=$?
  trap - EXIT
  [ "$status" -eq 0 ] || diagnose
  if [ "$OWN_CLUSTER" = 1 ] && [ "$KEEP" = 1 ]; then
    echo "cluster left running: export KUBECONFIG=$KUBECONFIG_FILE (hack/e2e.sh removes it at its next start)"
  elif [ "$OWN_CLUSTER" = 1 ]; then
    step "tear down the $CLUSTER cluster"
    teardown "$status" || echo "e2e: teardown failed (the next run cleans up)" >&2
  fi
  printf '\n== e2e %s in %ss\n' "$([ "$status" -eq 0 ] && echo passed || echo FAILED)" "$((SECONDS - STARTED))"
  exit "$status"
}

# Every exit says how it went (and on a failure, where and why); Ctrl-C or a TERM still tears the cluster down.
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "prerequisites ($CLUSTER cluster)"
# `make test` has installed the venv already; a fresh runner gets it here.
[ -x "$VENV/bin/pytest" ] || make --no-print-directory "$VENV/.installed" VENV="$VENV"
# kubectl and helm next to the control plane (when built) come first, then the venv (kubectl-agentid, agentid).
CONTROL_PLANE_BIN="$(hack/build-control-plane.sh --print-dir)"
export PATH="$CONTROL_PLANE_BIN:$VENV/bin:$PATH"
for tool in kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool not found on PATH" >&2; exit 1; }
done
mkdir -p "$E2E_DIR"
if [ "$CLUSTER" = existing ]; then
  [ -n "${KUBECONFIG:-}" ] || { echo "e2e: --cluster existing needs KUBECONFIG" >&2; exit 1; }
  # One file with the current context (KUBECONFIG may be a list, or this very file after a --keep run).
  kubectl config view --raw --flatten --minify >"$KUBECONFIG_FILE.new"
  mv "$KUBECONFIG_FILE.new" "$KUBECONFIG_FILE"
else
  rm -f "$KUBECONFIG_FILE"  # an earlier run's: the diagnosis below must not talk to a cluster that is gone
fi

# -- 1 + 2: the cluster and the image in it ---------------------------------------------------------------------

case "$CLUSTER" in
  kind)
    IMAGE="${IMAGE:-agentid:e2e}"
    for tool in docker kind; do command -v "$tool" >/dev/null || { echo "e2e: $tool not found" >&2; exit 1; }; done
    step "remove a stale kind cluster $KIND_CLUSTER"
    kind delete cluster --name "$KIND_CLUSTER"
    OWN_CLUSTER=1
    step "build the image $IMAGE (docker build)"
    docker build --tag "$IMAGE" .
    step "create the kind cluster $KIND_CLUSTER"
    kind create cluster --name "$KIND_CLUSTER" --kubeconfig "$KUBECONFIG_FILE" --wait 120s
    step "load the image into kind"
    kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
    ;;
  dev)
    IMAGE="localhost/agentid:dev"
    reason="$("$VENV/bin/python" -c 'from agentid.devcluster.node import unavailable_reason as r; print(r() or "")')"
    [ -z "$reason" ] || { echo "e2e: no local node here: $reason" >&2; exit 1; }
    step "stop a stale dev cluster of an earlier run"
    dev down
    rm -rf "$E2E_DIR/cluster"
    OWN_CLUSTER=1
    step "start the embedded control plane and its node (agentid dev up --with-node)"
    mkdir -p "$DEV_STATE"
    XDG_STATE_HOME="$DEV_STATE" setsid "$VENV/bin/agentid" dev up --with-node --workdir "$E2E_DIR/cluster" \
      >"$E2E_DIR/dev-up.log" 2>&1 </dev/null &
    up_pid=$!
    deadline=$((SECONDS + 300))
    until [ -f "$DEV_STATE/agentid/dev-cluster.json" ]; do
      if ! kill -0 "$up_pid" 2>/dev/null; then
        echo "e2e: agentid dev up exited:" >&2; cat "$E2E_DIR/dev-up.log" >&2; exit 1
      fi
      [ "$SECONDS" -lt "$deadline" ] || { echo "e2e: the dev cluster did not start within 300s" >&2; exit 1; }
      sleep 1
    done
    cp "$E2E_DIR/cluster/kubeconfig" "$KUBECONFIG_FILE"
    grep -E "^(node|API server)" "$E2E_DIR/dev-up.log" || true
    step "build the image without Docker and import it into the node (hack/build-image.py)"
    XDG_STATE_HOME="$DEV_STATE" "$VENV/bin/python" hack/build-image.py | tee "$E2E_DIR/image.log"
    grep -q "imported into the dev node" "$E2E_DIR/image.log" || { echo "e2e: the image was not imported" >&2; exit 1; }
    ;;
  existing)
    IMAGE="${IMAGE:?--cluster existing needs IMAGE=repository:tag, already loaded into or pullable by the cluster}"
    ;;
esac
export KUBECONFIG="$KUBECONFIG_FILE"

# -- 3: the chart ----------------------------------------------------------------------------------------------

step "install the chart ($RELEASE in $RELEASE_NAMESPACE, watching $AGENTS_NAMESPACE, admitting $ADMISSION_LABEL)"
kubectl create namespace "$AGENTS_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label --overwrite namespace "$AGENTS_NAMESPACE" "$ADMISSION_LABEL"
helm upgrade --install "$RELEASE" charts/agentid-operator --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set "watchNamespaces={$AGENTS_NAMESPACE}" \
  --set-json "webhook.namespaceSelector={\"matchLabels\":{\"${ADMISSION_LABEL%=*}\":\"${ADMISSION_LABEL#*=}\"}}" \
  --wait --timeout 5m --hide-notes
kubectl -n "$RELEASE_NAMESPACE" get pods -o wide

# -- 4: smoke test ---------------------------------------------------------------------------------------------

step "smoke test: an AgentIdentity becomes Ready through the installed operator and webhook"
kubectl apply -f - <<YAML
apiVersion: agentid.dev/v1alpha1
kind: AgentIdentity
metadata: {name: smoke, namespace: $AGENTS_NAMESPACE}
spec:
  purpose: proves the installed operator, webhook and RBAC work together
  owner: {kind: User, name: ci@example.com}
  supervision: {mode: Autonomous}
  permissions:
    - {apiGroups: [""], resources: [configmaps], verbs: [get, list]}
  clusterRoleRefs: [view]
YAML
kubectl wait --for=condition=Ready agentidentity/smoke -n "$AGENTS_NAMESPACE" --timeout=120s
kubectl get agentidentities -n "$AGENTS_NAMESPACE"

step "verify the installation as a user would (kubectl agentid check)"
kubectl agentid check --operator-namespace "$RELEASE_NAMESPACE" -n "$AGENTS_NAMESPACE"

# -- 5: the suite ----------------------------------------------------------------------------------------------

step "the test suite against the $CLUSTER cluster: pytest ${PYTEST_ARGS[*]}"
AGENTID_TEST_KUBECONFIG="$KUBECONFIG_FILE" "$VENV/bin/pytest" "${PYTEST_ARGS[@]}"
