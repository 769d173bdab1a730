"""Kill the operator (SIGKILL) in the middle of provisioning: on restart it converges, one key per agent."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest

from tests.support.agents import Agent, create_agent
from tests.support.clusters import ClusterHandle
from tests.support.operator import OperatorProcess
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def test_killed_mid_provisioning_the_operator_converges_with_exactly_one_key_per_agent(
    cluster: ClusterHandle, own_operator_namespace: str, tmp_path: Path
) -> None:
    namespace = own_operator_namespace
    log = tmp_path / "operator.log"
    operator = OperatorProcess(cluster.kubeconfig, namespaces=[namespace], log_path=log)
    count = 15
    try:
        agents = [create_agent(cluster, namespace, f"agent-{i:02d}", clusterRoleRefs=["view"]) for i in range(count)]
        core = kubernetes.client.CoreV1Api(cluster.admin())

        def some_provisioned() -> bool:
            # Kill once provisioning is underway but not finished: some Secrets exist, not all agents have status.
            return bool(core.list_namespaced_secret(namespace, label_selector="agentid.dev/agent").items)

        eventually(some_provisioned, timeout=60, what="provisioning started")
        operator.kill()
        operator = OperatorProcess(cluster.kubeconfig, namespaces=[namespace], log_path=log)
        statuses = [agent.wait_ready(timeout=60) for agent in agents]
    finally:
        operator.stop()

    secrets = core.list_namespaced_secret(namespace, label_selector="agentid.dev/agent").items
    assert sorted(s.metadata.name for s in secrets) == sorted(f"agent-{i:02d}-agent-key" for i in range(count))
    for agent, status in zip(agents, statuses, strict=True):
        active = [key for key in status["keys"] if key["state"] == "Active"]
        assert len(active) == 1
        secret = next(s for s in secrets if s.metadata.name == f"{agent.name}-agent-key")
        assert secret.metadata.annotations["agentid.dev/key-id"] == active[0]["keyID"]
        assert len(Agent(cluster, namespace, agent.name).private_key_pems()) == 1
    service_accounts = core.list_namespaced_service_account(namespace, label_selector="agentid.dev/agent").items
    assert len(service_accounts) == count
    bindings = (
        kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
        .list_namespaced_role_binding(namespace, label_selector="agentid.dev/agent")
        .items
    )
    assert len(bindings) == count * 2  # no orphans, no duplicates
    assert "Traceback" not in log.read_text()
