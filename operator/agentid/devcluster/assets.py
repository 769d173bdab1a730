"""Where the control-plane binaries come from: KUBEBUILDER_ASSETS, the versioned build cache, or PATH.

Called by the cluster launcher and the CLI; the pins live in ``versions.env`` next to this module, which
``hack/build-control-plane.sh`` sources too, so there is exactly one place that names the versions.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager")
OPTIONAL = ("kubectl", "helm")


class AssetsNotFound(RuntimeError):
    """The binaries are missing; the message says how to get them."""


@dataclass(frozen=True)
class Versions:
    kubernetes: str
    etcd: str
    helm: str

    @property
    def cache_key(self) -> str:
        return f"{self.kubernetes}-etcd{self.etcd}-helm{self.helm}"


def _pins() -> dict[str, str]:
    text = resources.files("agentid.devcluster").joinpath("versions.env").read_text()
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def pinned_versions() -> Versions:
    values = _pins()
    return Versions(values["KUBERNETES_VERSION"], values["ETCD_VERSION"], values["HELM_VERSION"])


def cache_root() -> Path:
    root = os.environ.get("AGENTID_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "agentid"
    )
    return Path(root)


def cache_bin_dir(versions: Versions | None = None) -> Path:
    versions = versions or pinned_versions()
    return cache_root() / "k8s" / versions.cache_key / "bin"


def containerd_bin_dir() -> Path:
    """containerd, its runc shim, ctr and the pause program (``hack/build-control-plane.sh --with-node``)."""
    return cache_root() / "k8s" / f"containerd-{_pins()['CONTAINERD_VERSION']}" / "bin"


def find_node_binary(name: str) -> Path:
    """A binary only a local node runs, from the build cache (never PATH: the versions must be the pinned ones)."""
    for folder in (cache_bin_dir(), containerd_bin_dir()):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise AssetsNotFound(f"{name} not found in {cache_bin_dir()} or {containerd_bin_dir()}: run `make node-assets`")


def _candidates() -> list[Path]:
    dirs = []
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        dirs.append(Path(assets))
    dirs.append(cache_bin_dir())
    return dirs


def find_binary(name: str) -> Path:
    """The first executable named ``name`` in KUBEBUILDER_ASSETS, the build cache, then PATH."""
    for folder in _candidates():
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    raise AssetsNotFound(
        f"{name} not found in KUBEBUILDER_ASSETS, {cache_bin_dir()} or PATH. "
        "Build the control plane with `make control-plane` (needs Go), set KUBEBUILDER_ASSETS to a folder "
        "holding kube-apiserver, etcd and kube-controller-manager, or use an existing cluster "
        "(AGENTID_TEST_KUBECONFIG)."
    )


def bin_dir_for_path() -> Path | None:
    """The folder to put first on PATH so that kubectl and helm match the server (None if not built)."""
    for folder in _candidates():
        if (folder / "kubectl").is_file():
            return folder
    return None
