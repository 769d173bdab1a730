"""The Helm chart on the node: install with the locally built image, the token service reachable at a fixed
issuer, uninstall with the documented cleanup.

The issuer is ``https://<bridge gateway>:<port>``, a forward to the token Service's ClusterIP, so that both
kube-apiserver (on the host, for agent-token authentication) and Pods reach it under one name. Its serving
certificate comes from the cluster CA: the chart reuses an existing ``<release>-tokens-tls`` Secret (created here
with Helm's ownership marks, so the release adopts it), and kube-apiserver trusts that CA from the start.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentid.devcluster import assets
from agentid.devcluster import node as devnode
from tests.node.conftest import NodeEnv

CHART = Path(__file__).resolve().parents[2] / "charts" / "agentid-operator"


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str

    @property
    def fullname(self) -> str:
        return self.name if "agentid" in self.name else f"{self.name}-agentid"

    @property
    def operator(self) -> str:
        return f"{self.fullname}-operator"

    @property
    def tokens(self) -> str:
        return f"{self.fullname}-tokens"


def helm(env: NodeEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(assets.find_binary("helm")), f"--kubeconfig={env.cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def values(env: NodeEnv, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image": {
            "repository": env.agentid_image.repository,
            "tag": env.agentid_image.tag,
            "pullPolicy": "Never",
        },
        "tokenService": {"issuer": env.issuer},
        "operator": {"resyncSeconds": 3600},  # prompt behaviour must come from events, not from a resync
    }
    for key, value in extra.items():
        base[key] = {**base.get(key, {}), **value}
    return base


def _tokens_tls_secret(env: NodeEnv, release: Release) -> dict[str, Any]:
    service = release.tokens
    names = [service, f"{service}.{release.namespace}", f"{service}.{release.namespace}.svc"]
    pair = env.local.ca.serving(f"{release.name}-tokens", devnode.NETWORK.gateway, *names)
    encode = lambda path: base64.b64encode(Path(path).read_bytes()).decode()  # noqa: E731
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": f"{release.fullname}-tokens-tls",
            "namespace": release.namespace,
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": release.name,
                "meta.helm.sh/release-namespace": release.namespace,
            },
        },
        "data": {"ca.crt": encode(env.local.ca.cert_path), "tls.crt": encode(pair.cert), "tls.key": encode(pair.key)},
    }


def install(env: NodeEnv, release: Release, tmp: Path, **extra: Any) -> float:
    """``helm install --wait``; returns its duration. Starts the issuer forward to the token Service."""
    env.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": release.namespace}})
    env.apply(_tokens_tls_secret(env, release))
    values_file = tmp / f"{release.name}-values.yaml"
    values_file.write_text(yaml.safe_dump(values(env, **extra)))
    started = time.monotonic()
    helm(env, "install", release.name, str(CHART), "-n", release.namespace, f"--values={values_file}",
         "--wait", "--timeout=240s")  # fmt: skip
    took = time.monotonic() - started
    cluster_ip = env.kubectl(
        "get", "service", release.tokens, "-n", release.namespace, "-o", "jsonpath={.spec.clusterIP}"
    )
    port = json.loads(
        env.kubectl("get", "service", release.tokens, "-n", release.namespace, "-o", "jsonpath={.spec.ports[0].port}")
    )
    env.node.forward(env.issuer_port, cluster_ip, int(port))
    return took
