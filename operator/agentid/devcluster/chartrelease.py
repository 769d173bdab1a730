"""The project's Helm chart on a LocalNode: installed with the locally built image, its token service reachable at a
fixed issuer that kube-apiserver trusts from the start.

Used by the node tests and the in-Pod demo (``hack/demo_node.py``). The issuer is ``https://<bridge gateway>:<port>``,
a forward to the token Service's ClusterIP, so kube-apiserver (on the host, authenticating agent tokens) and Pods
reach it under one name. Its serving certificate comes from the cluster CA: the chart reuses an existing
``<release>-tokens-tls`` Secret (created here with Helm's ownership marks, so the release adopts it).
"""

from __future__ import annotations

import base64
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentid.devcluster import assets, images
from agentid.devcluster import node as devnode
from agentid.devcluster.cluster import LocalCluster
from agentid.devcluster.ports import free_port
from agentid.tokens import authnconfig

KUBE_AUDIENCE = authnconfig.DEFAULT_KUBE_AUDIENCE


@dataclass(frozen=True)
class Issuer:
    url: str
    port: int


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


def trust_in_cluster_issuer(cluster: LocalCluster) -> Issuer:
    """Before ``cluster.start()``: kube-apiserver accepts agent tokens of the in-cluster token service (it retries
    discovery until the release runs)."""
    port = free_port()
    issuer = Issuer(f"https://{devnode.NETWORK.gateway}:{port}", port)
    config = authnconfig.authentication_configuration(
        issuer.url, audiences=[KUBE_AUDIENCE], ca_pem=cluster.ca.pem.decode()
    )
    path = cluster.write_file("authentication-config.yaml", yaml.safe_dump(config, sort_keys=False))
    cluster.apiserver_args.append(f"--authentication-config={path}")
    return issuer


def helm(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(assets.find_binary("helm")), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def values(image: images.ImageArchive, issuer: Issuer, **extra: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image": {"repository": image.repository, "tag": image.tag, "pullPolicy": "Never"},
        "tokenService": {"issuer": issuer.url},
        "operator": {"resyncSeconds": 3600},  # prompt behaviour comes from events, not from a resync
    }
    for key, value in extra.items():
        base[key] = {**base.get(key, {}), **value}
    return base


def _tokens_tls_secret(cluster: LocalCluster, release: Release) -> dict[str, Any]:
    service = release.tokens
    names = [service, f"{service}.{release.namespace}", f"{service}.{release.namespace}.svc"]
    pair = cluster.ca.serving(f"{release.name}-tokens", devnode.NETWORK.gateway, *names)

    def encode(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

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
        "data": {"ca.crt": encode(cluster.ca.cert_path), "tls.crt": encode(pair.cert), "tls.key": encode(pair.key)},
    }


def install(
    node: devnode.LocalNode, chart: Path, release: Release, chart_values: dict[str, Any], issuer: Issuer
) -> float:
    """``helm install --wait``; returns its duration. Then the issuer forward to the token Service starts."""
    cluster = node.cluster
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": release.namespace}}
    documents = [namespace, _tokens_tls_secret(cluster, release)]
    node.kubectl("apply", "--server-side", "-f", "-", input_text=yaml.safe_dump_all(documents))
    values_file = cluster.workdir / f"{release.name}-values.yaml"
    values_file.write_text(yaml.safe_dump(chart_values))
    started = time.monotonic()
    helm(cluster, "install", release.name, str(chart), "-n", release.namespace, f"--values={values_file}",
         "--wait", "--timeout=240s")  # fmt: skip
    took = time.monotonic() - started
    service = ["get", "service", release.tokens, "-n", release.namespace, "-o"]
    cluster_ip = node.kubectl(*service, "jsonpath={.spec.clusterIP}").stdout
    port = node.kubectl(*service, "jsonpath={.spec.ports[0].port}").stdout
    node.forward(issuer.port, cluster_ip, int(port))
    return took


WORKLOAD_POD = "agent-workload"
# Runs inside the workload Pod (the agentid image's Python): exchange the projected ServiceAccount token for an
# agent token for the Kubernetes audience, keep it in /tmp, and call the apiserver with it ("call" reuses it).
WORKLOAD_SCRIPT = r"""
import json, os, ssl, subprocess, sys, urllib.error, urllib.request
ca = "/etc/agentid-ca/ca.crt"
if sys.argv[1] == "exchange":
    done = subprocess.run(
        ["agentid", "token", "--issuer", os.environ["AGENTID_ISSUER"], "--subject-token",
         "/var/run/secrets/agentid/token", "--audience", os.environ["KUBE_AUDIENCE"], "--cacert", ca],
        capture_output=True, text=True)
    if done.returncode != 0:
        print(json.dumps({"exchange": "refused", "detail": done.stderr.strip()[-200:]}))
        sys.exit(0)
    open("/tmp/agent-token", "w").write(done.stdout.strip())
token = open("/tmp/agent-token").read()
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
request = urllib.request.Request(
    f"https://{host}:{port}/api/v1/namespaces/{os.environ['NAMESPACE']}/configmaps",
    headers={"Authorization": "Bearer " + token})
try:
    status = urllib.request.urlopen(request, timeout=10, context=ssl.create_default_context(cafile=ca)).status
except urllib.error.HTTPError as error:
    status = error.code
print(json.dumps({"exchange": "granted" if sys.argv[1] == "exchange" else "reused", "apiserver": status}))
"""


def agent_workload_pod(
    image: images.ImageArchive, issuer: Issuer, namespace: str, service_account: str
) -> dict[str, Any]:
    """A Pod running as an agent (its ServiceAccount), with a projected token for the token service's audience and
    no Kubernetes credentials: ``kubectl exec ... python -c WORKLOAD_SCRIPT exchange|call`` acts as the agent."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": WORKLOAD_POD, "namespace": namespace},
        "spec": {
            "serviceAccountName": service_account,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "agent",
                    "image": image.name,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import signal; signal.sigwait({signal.SIGTERM})"],
                    "env": [
                        {"name": "AGENTID_ISSUER", "value": issuer.url},
                        {"name": "KUBE_AUDIENCE", "value": KUBE_AUDIENCE},
                        {"name": "NAMESPACE", "value": namespace},
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "subject", "mountPath": "/var/run/secrets/agentid", "readOnly": True},
                        {"name": "ca", "mountPath": "/etc/agentid-ca", "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the container's emptyDir
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "subject",
                    "projected": {
                        "sources": [
                            {
                                "serviceAccountToken": {
                                    "path": "token",
                                    "audience": issuer.url,
                                    "expirationSeconds": 600,
                                }
                            }
                        ]
                    },
                },
                # The token service's certificate and the apiserver's come from the cluster CA, which every
                # namespace gets as kube-root-ca.crt.
                {
                    "name": "ca",
                    "configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
                },
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            ],
        },
    }
