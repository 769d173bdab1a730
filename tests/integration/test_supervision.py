"""Supervision changes the agent's live access, proven with the agent's own ServiceAccount token."""

from __future__ import annotations

import json

import kubernetes
import pytest

from tests.support.agents import create_agent
from tests.support.clusters import ClusterHandle, status_of
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def test_each_supervision_mode_grants_exactly_its_access(cluster: ClusterHandle, agent_namespace: str) -> None:
    agent = create_agent(cluster, agent_namespace, "triage", supervision={"mode": "Autonomous"})
    status = agent.wait_ready()
    assert status["phase"] == "Active"
    token = agent.service_account_token()

    # Autonomous: the declared write succeeds; an undeclared call is 403.
    eventually(lambda: agent.can(token, "create") == 200, what="declared write allowed")
    assert status_of(agent.as_agent(token).list_namespaced_secret, agent_namespace) == 403

    # Supervised: reads succeed, the declared write is 403.
    agent.patch_spec({"supervision": {"mode": "Supervised", "reason": "needs review"}})
    agent.wait_phase("Supervised")
    eventually(lambda: agent.can(token, "create") == 403, what="write denied while Supervised")
    assert agent.can(token, "list") == 200

    # Suspended: reads 403 too, but the identity stays (same ServiceAccount token still authenticates).
    agent.patch_spec({"supervision": {"mode": "Suspended"}})
    suspended = agent.wait_phase("Suspended")
    eventually(lambda: agent.can(token, "list") == 403, what="read denied while Suspended")
    assert suspended["grantedRules"] == 0
    assert agent.condition("Ready")["reason"] == "Suspended"

    # Back to Autonomous: the write works again with the very same token.
    agent.patch_spec({"supervision": {"mode": "Autonomous"}})
    agent.wait_phase("Active")
    eventually(lambda: agent.can(token, "create") == 200, what="write allowed again")


def test_supervised_agents_get_read_only_cluster_roles_only(
    cluster: ClusterHandle, agent_namespace: str, configmap_editor: str
) -> None:
    roles = ["view", configmap_editor]
    agent = create_agent(cluster, agent_namespace, "reader", supervision={"mode": "Supervised"}, clusterRoleRefs=roles)
    status = agent.wait_ready()
    assert status["grantedClusterRoles"] == ["view"]
    assert f"ClusterRole {configmap_editor!r} is not read-only" in agent.condition("AccessReady")["message"]
    agent.patch_spec({"supervision": {"mode": "Autonomous"}})
    assert agent.wait_phase("Active")["grantedClusterRoles"] == roles


@pytest.mark.existing_cluster
def test_cluster_roles_reaching_secrets_are_refused_by_the_built_in_baseline(
    cluster: ClusterHandle, agent_namespace: str, admission_webhook: None
) -> None:
    """edit reads Secrets, and with them the private keys of the other agents in the namespace."""
    with pytest.raises(kubernetes.client.ApiException) as refused:
        create_agent(cluster, agent_namespace, "keyhunter", clusterRoleRefs=["view", "edit"])
    message = json.loads(refused.value.body)["message"]
    assert "ClusterRole 'edit': it grants" in message
    assert "it grants 'secrets', which is forbidden" in message
    assert "[policy agentid-baseline]" in message


def test_a_cluster_role_that_grows_to_reach_secrets_is_withdrawn_at_once(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    role = f"grower-{agent_namespace[-6:]}"
    rbac.create_cluster_role(
        {
            "metadata": {"name": role},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        }
    )
    try:
        agent = create_agent(cluster, agent_namespace, "grown", clusterRoleRefs=[role])
        assert agent.wait_ready()["grantedClusterRoles"] == [role]
        token = agent.service_account_token()
        eventually(lambda: agent.can(token, "list") == 200, what="granted through the ClusterRole")
        grown = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}
        rbac.patch_cluster_role(
            role, {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}, grown]}
        )
        eventually(lambda: agent.condition("Ready").get("reason") == "PolicyViolation", what="withdrawn")
        assert agent.status()["grantedClusterRoles"] == []
        eventually(
            lambda: status_of(agent.as_agent(token).list_namespaced_secret, agent_namespace) == 403, what="no secrets"
        )
    finally:
        rbac.delete_cluster_role(role)
