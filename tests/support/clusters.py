"""A handle on the cluster under test: the local control plane, or an existing one (AGENTID_TEST_KUBECONFIG)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
import pytest

from agentid.devcluster import assets
from agentid.devcluster.cluster import LocalCluster


@dataclass
class ClusterHandle:
    kubeconfig: Path
    local: LocalCluster | None = None
    _configuration: kubernetes.client.Configuration | None = field(default=None, repr=False)

    @property
    def configuration(self) -> kubernetes.client.Configuration:
        if self._configuration is None:
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(str(self.kubeconfig), client_configuration=configuration)
            self._configuration = configuration
        return self._configuration

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    def admin(self) -> kubernetes.client.ApiClient:
        """A sync client with the kubeconfig's (admin) credentials."""
        return kubernetes.client.ApiClient(self.configuration)

    def as_user(self, user: str, group: str | None = None) -> kubernetes.client.ApiClient:
        """The admin's client impersonating ``user`` (and one extra group): admission sees that user."""
        client = kubernetes.client.ApiClient(self.configuration)
        client.set_default_header("Impersonate-User", user)
        if group is not None:
            client.set_default_header("Impersonate-Group", group)
        return client

    def with_token(self, token: str) -> kubernetes.client.ApiClient:
        """A sync client that authenticates with a bearer token only (no client certificate)."""
        configuration = kubernetes.client.Configuration()
        configuration.host = self.configuration.host
        configuration.ssl_ca_cert = self.configuration.ssl_ca_cert
        configuration.api_key = {"authorization": f"Bearer {token}"}
        return kubernetes.client.ApiClient(configuration)

    def kubectl(
        self, *args: str, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_binary(), f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )


def kubectl_binary() -> str:
    try:
        return str(assets.find_binary("kubectl"))
    except assets.AssetsNotFound:
        return "kubectl"


def external_kubeconfig() -> Path | None:
    value = os.environ.get("AGENTID_TEST_KUBECONFIG")
    return Path(value).expanduser() if value else None


def status_of(call: object, *args: object, **kwargs: object) -> int:
    """HTTP status of a typed client call: 200 when it succeeds, the ApiException status otherwise."""
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except kubernetes.client.ApiException as error:
        return int(error.status)
    return 200


@contextlib.contextmanager
def second_cluster(cluster: ClusterHandle, why: str) -> Iterator[ClusterHandle]:
    """A control plane of its own next to the session's (with the controller manager; no audit log), for tests
    that change what the whole cluster holds; skipped on an existing cluster, where there is no second one."""
    if cluster.local is None:
        pytest.skip(f"needs the embedded control plane ({why})")
    local = LocalCluster(audit=False)
    local.start()
    try:
        yield ClusterHandle(kubeconfig=local.kubeconfig, local=local)
    finally:
        local.stop()
