"""Every manifest in examples/ applies cleanly, and every agent in them becomes Ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

from agentid.api import v1alpha1
from tests.support.agents import Agent
from tests.support.clusters import ClusterHandle
from tests.support.operator import OperatorThread
from tests.support.polling import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.existing_cluster]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _documents() -> list[dict]:
    return [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def _example_namespaces() -> list[str]:
    return sorted({doc["metadata"]["namespace"] for doc in _documents() if doc["kind"] == v1alpha1.KIND})


def _namespaces_gone(cluster: ClusterHandle) -> None:
    """A reused cluster (kind, the normal case) may still be deleting the examples' fixed namespaces from the
    previous run: applying into a Terminating namespace fails, so wait (bounded) until they are gone."""
    core = kubernetes.client.CoreV1Api(cluster.admin())
    fixed = [doc["metadata"]["name"] for doc in _documents() if doc["kind"] == "Namespace"]

    def terminating() -> list[str]:
        present = {ns.metadata.name: ns for ns in core.list_namespace().items}
        return [name for name in fixed if name in present and present[name].metadata.deletion_timestamp]

    eventually(lambda: not terminating(), timeout=180, what="the previous run's example namespaces are gone")


@pytest.fixture
def examples_operator(cluster: ClusterHandle, crds: None) -> Iterator[OperatorThread]:
    _namespaces_gone(cluster)
    operator = OperatorThread(cluster.kubeconfig, namespaces=_example_namespaces()).start()
    yield operator
    cluster.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", str(EXAMPLES))
    operator.stop()


def test_every_example_applies_and_every_agent_becomes_ready(
    cluster: ClusterHandle, examples_operator: OperatorThread
) -> None:
    applied = cluster.kubectl("apply", "--server-side", "-f", str(EXAMPLES))
    assert applied.returncode == 0
    agents = [doc for doc in _documents() if doc["kind"] == v1alpha1.KIND]
    assert len(agents) >= 3
    modes = set()
    for doc in agents:
        status = Agent(cluster, doc["metadata"]["namespace"], doc["metadata"]["name"]).wait_ready(timeout=60)
        modes.add(status["supervision"])
    assert modes == {"Autonomous", "Supervised", "Suspended"}
    for namespace in _example_namespaces():  # the GitOps way to wait: kubectl wait on the Ready condition
        waited = cluster.kubectl("wait", "--for=condition=Ready", "agentidentities", "--all", "-n", namespace)
        assert waited.returncode == 0
