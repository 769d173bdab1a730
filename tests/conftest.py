"""Session fixtures: one cluster for the whole run (local control plane by default), namespaces per test."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from agentid.devcluster.cluster import LocalCluster
from tests.support.cluster_setup import configure_local_cluster
from tests.support.clusters import ClusterHandle, external_kubeconfig


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    kubeconfig = external_kubeconfig()
    if kubeconfig is not None:
        yield ClusterHandle(kubeconfig=kubeconfig)
        return
    local = LocalCluster()
    configure_local_cluster(local)
    local.start()
    try:
        yield ClusterHandle(kubeconfig=local.kubeconfig, local=local)
    finally:
        local.stop()


@pytest.fixture
def local_cluster(cluster: ClusterHandle) -> LocalCluster:
    """Tests about the embedded control plane itself are skipped on an external cluster."""
    if cluster.local is None:
        pytest.skip("needs the embedded local control plane (AGENTID_TEST_KUBECONFIG is set)")
    return cluster.local


@pytest.fixture
def namespace(cluster: ClusterHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (the namespace controller finishes the job)."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.create_namespace({"metadata": {"name": name, "labels": {"agentid.dev/test": "true"}}})
    yield name
    core.delete_namespace(name)
