"""The operator survives an apiserver restart: it reconnects and goes on reconciling, without a handler error."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentid.devcluster.cluster import LocalCluster
from tests.support.agents import create_agent
from tests.support.clusters import ClusterHandle
from tests.support.operator import OperatorProcess
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def test_the_operator_survives_an_apiserver_restart(
    cluster: ClusterHandle, local_cluster: LocalCluster, own_operator_namespace: str, tmp_path: Path
) -> None:
    namespace = own_operator_namespace
    operator = OperatorProcess(cluster.kubeconfig, namespaces=[namespace], log_path=tmp_path / "operator.log")
    try:
        before = create_agent(cluster, namespace, "before")
        before.wait_ready()
        during = [create_agent(cluster, namespace, f"during-{i}") for i in range(8)]
        local_cluster.restart_apiserver()  # while those are being provisioned
        after = create_agent(cluster, namespace, "after")
        for agent in [*during, after]:
            agent.wait_ready(timeout=90)
        before.patch_spec({"supervision": {"mode": "Suspended"}})
        before.wait_phase("Suspended", timeout=60)
        eventually(lambda: operator.process.poll() is None, what="operator still running")
    finally:
        operator.stop()
    log = operator.output()
    assert "Traceback" not in log, log[-3000:]
