#!/usr/bin/env bash
# Build the local control plane (etcd, kube-apiserver, kube-controller-manager, kubectl, helm) from their Go
# modules into a versioned cache outside the repository, the way envtest does, because no Docker engine and no
# prebuilt binaries exist on the project's machines.
#
# Usage: hack/build-control-plane.sh [--with-node] [--print-dir]
#   --print-dir   print the folder that holds (or will hold) the binaries and exit
#   --with-node   also build what a local node runs (agentid.devcluster.node): kubelet, kube-scheduler and
#                 kube-proxy from the same throwaway module as kube-apiserver, and containerd v2 + its runc shim +
#                 ctr from containerd's Go modules (runc and the CNI plugins come from Debian: hack/node-prereqs.sh)
#
# Honours KUBEBUILDER_ASSETS: when it names a folder that already has kube-apiserver and etcd, nothing is built
# and that folder is printed (kube-controller-manager, kubectl and helm are still built if missing there).
# Versions are pinned in operator/agentid/devcluster/versions.env (the one place).
set -euo pipefail
# A failed step names itself (set -e alone exits without a word when a pipeline inside $(...) or { } fails).
trap 'echo "error: hack/build-control-plane.sh line ${LINENO}: \"${BASH_COMMAND}\" failed" >&2' ERR

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../operator/agentid/devcluster/versions.env
source "${repo_root}/operator/agentid/devcluster/versions.env"

cache_root="${AGENTID_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/agentid}"
work_dir="${cache_root}/k8s/${KUBERNETES_VERSION}-etcd${ETCD_VERSION}-helm${HELM_VERSION}"
bin_dir="${work_dir}/bin"

with_node=false
for arg in "$@"; do
  case "${arg}" in
    --print-dir) echo "${bin_dir}"; exit 0 ;;
    --with-node) with_node=true ;;
    *) echo "error: unknown argument ${arg}" >&2; exit 2 ;;
  esac
done

log() { printf '[control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

all_present() {
  local dir="$1"; shift
  local b
  for b in "$@"; do [[ -x "${dir}/${b}" ]] || return 1; done
}

if ! command -v go >/dev/null 2>&1; then
  cat >&2 <<EOF
error: the Go toolchain (go >= ${GO_MIN_VERSION}) is needed to build the local Kubernetes control plane,
       and 'go' is not on PATH. Either install Go, or point KUBEBUILDER_ASSETS at a folder holding
       kube-apiserver, etcd and kube-controller-manager, or run the tests against an existing cluster
       with AGENTID_TEST_KUBECONFIG=<kubeconfig>.
EOF
  exit 3
fi

go_version="$(go env GOVERSION)"   # e.g. go1.26.8
go_version="${go_version#go}"
if [[ "$(printf '%s\n%s\n' "${GO_MIN_VERSION}" "${go_version}" | sort -V | head -n1)" != "${GO_MIN_VERSION}" ]]; then
  echo "error: go ${go_version} is too old; go >= ${GO_MIN_VERSION} is needed (Kubernetes ${KUBERNETES_VERSION})." >&2
  exit 3
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "${bin_dir}"

# Prefer binaries the developer already has (the envtest convention): link them into the cache folder.
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
    if [[ -x "${KUBEBUILDER_ASSETS}/${b}" && ! -e "${bin_dir}/${b}" ]]; then
      ln -s "${KUBEBUILDER_ASSETS}/${b}" "${bin_dir}/${b}"
      log "using ${KUBEBUILDER_ASSETS}/${b} (KUBEBUILDER_ASSETS)"
    fi
  done
fi

# Write a throwaway module that requires MODULE@VERSION and replaces every relative-path replace of the
# upstream go.mod (k8s staging modules, etcd sibling modules) by the published module of the given version.
prepare_module() {
  local dir="$1" module="$2" version="$3" sibling_version="$4"
  if [[ -f "${dir}/go.mod" ]]; then return 0; fi
  mkdir -p "${dir}"
  log "resolving ${module}@${version}"
  local upstream_mod
  upstream_mod="$(cd "${dir}" && go mod download -json "${module}@${version}" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "${upstream_mod}" ]] || { echo "error: could not download ${module}@${version}" >&2; exit 4; }
  # Relative replaces only (none in containerd's go.mod: grep finding nothing is not a failure).
  local replaces
  replaces="$(grep -E '^[[:space:]]*[^[:space:]]+ => \.\.?/' "${upstream_mod}" \
    | awk -v v="${sibling_version}" '{print "\t" $1 " => " $1 " " v}' || true)"
  {
    echo "module agentid.dev/controlplane-build"
    echo
    sed -n 's/^go \([0-9.]*\)$/go \1/p' "${upstream_mod}" | head -n1
    grep -E '^godebug ' "${upstream_mod}" || true
    echo
    echo "require ${module} ${version}"
    if [[ -n "${replaces}" ]]; then
      echo
      echo "replace ("
      echo "${replaces}"
      echo ")"
    fi
  } > "${dir}/go.mod.tmp"
  mv "${dir}/go.mod.tmp" "${dir}/go.mod"
}

k8s_ldflags() {
  local v="${KUBERNETES_VERSION}" major minor
  major="$(echo "${v#v}" | cut -d. -f1)"
  minor="$(echo "${v#v}" | cut -d. -f2)"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitCommit=0000000000000000000000000000000000000000 -X ${pkg}.gitTreeState=clean"
    flags+=" -X ${pkg}.buildDate=${date}"
  done
  echo "${flags}"
}

build_k8s() {
  local src="${work_dir}/src/kubernetes" staging_version="v0.${KUBERNETES_VERSION#v1.}"
  prepare_module "${src}" k8s.io/kubernetes "${KUBERNETES_VERSION}" "${staging_version}"
  local ldflags; ldflags="$(k8s_ldflags)"
  local b
  for b in "$@"; do
    if [[ -x "${bin_dir}/${b}" ]]; then log "${b} ${KUBERNETES_VERSION}: present"; continue; fi
    log "building ${b} ${KUBERNETES_VERSION} (cold builds take several minutes each on 2 cores)"
    local started=${SECONDS}
    (cd "${src}" && go build -trimpath -ldflags "${ldflags}" -o "${bin_dir}/${b}.tmp" "k8s.io/kubernetes/cmd/${b}")
    mv "${bin_dir}/${b}.tmp" "${bin_dir}/${b}"
    log "built ${b} in $((SECONDS - started))s"
  done
}

build_etcd() {
  if [[ -x "${bin_dir}/etcd" ]]; then log "etcd ${ETCD_VERSION}: present"; return 0; fi
  local src="${work_dir}/src/etcd"
  prepare_module "${src}" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" "${ETCD_VERSION}"
  log "building etcd ${ETCD_VERSION}"
  local started=${SECONDS}
  (cd "${src}" && go build -trimpath -ldflags "-s -w" -o "${bin_dir}/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "${bin_dir}/etcd.tmp" "${bin_dir}/etcd"
  log "built etcd in $((SECONDS - started))s"
}

build_helm() {
  if [[ -x "${bin_dir}/helm" ]]; then log "helm ${HELM_VERSION}: present"; return 0; fi
  log "building helm ${HELM_VERSION}"
  local started=${SECONDS}
  # Like helm's own Makefile: the default Kubernetes version of `helm template`/`helm lint` is the pinned one.
  local minor; minor="$(echo "${KUBERNETES_VERSION#v}" | cut -d. -f2)"
  local flags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${minor}"
  done
  GOBIN="${work_dir}/gobin" GOFLAGS= go install -trimpath -ldflags "${flags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  mv "${work_dir}/gobin/helm" "${bin_dir}/helm"
  log "built helm in $((SECONDS - started))s"
}

# containerd v2 (daemon, runc shim, ctr): static Go binaries without the storage drivers a dev node never uses.
# Cached beside the Kubernetes binaries under its own version, so a containerd bump rebuilds only containerd.
build_containerd() {
  local dir="${cache_root}/k8s/containerd-${CONTAINERD_VERSION}" b
  local src="${dir}/src" out="${dir}/bin"
  mkdir -p "${out}"
  prepare_module "${src}" github.com/containerd/containerd/v2 "${CONTAINERD_VERSION}" "${CONTAINERD_VERSION}"
  local pkg=github.com/containerd/containerd/v2
  local ldflags="-s -w -X ${pkg}/version.Version=${CONTAINERD_VERSION} -X ${pkg}/version.Revision=go-module"
  for b in containerd containerd-shim-runc-v2 ctr; do
    if [[ -x "${out}/${b}" ]]; then log "${b} ${CONTAINERD_VERSION}: present"; continue; fi
    log "building ${b} ${CONTAINERD_VERSION}"
    local started=${SECONDS}
    (cd "${src}" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "${ldflags}" \
      -o "${out}/${b}.tmp" "${pkg}/cmd/${b}")
    mv "${out}/${b}.tmp" "${out}/${b}"
    log "built ${b} in $((SECONDS - started))s"
  done
}

# The Pod sandbox ("pause") program: hack/pause/main.go, a static binary that agentid.devcluster.images wraps into a
# one-file image (no registry to pull registry.k8s.io/pause from).
build_pause() {
  local out="${cache_root}/k8s/containerd-${CONTAINERD_VERSION}/bin/pause"
  if [[ -x "${out}" && "${out}" -nt "${repo_root}/hack/pause/main.go" ]]; then log "pause: present"; return 0; fi
  log "building pause"
  (cd "${repo_root}/hack/pause" && GOFLAGS= go build -trimpath -ldflags "-s -w" -o "${out}.tmp" main.go)
  mv "${out}.tmp" "${out}"
}

total_started=${SECONDS}
build_etcd
build_k8s kube-apiserver kube-controller-manager kubectl
build_helm
all_present "${bin_dir}" etcd kube-apiserver kube-controller-manager kubectl helm
log "control plane ready in ${bin_dir} ($((SECONDS - total_started))s)"
if [[ "${with_node}" == true ]]; then
  build_k8s kubelet kube-scheduler kube-proxy
  build_containerd
  build_pause
  all_present "${bin_dir}" kubelet kube-scheduler kube-proxy
  all_present "${cache_root}/k8s/containerd-${CONTAINERD_VERSION}/bin" containerd containerd-shim-runc-v2 ctr pause
  log "node binaries ready ($((SECONDS - total_started))s)"
fi
echo "${bin_dir}"
