"""Revocation, expiry and deletion remove every access path: bindings first, then keys, then the identity."""

from __future__ import annotations

import datetime as dt

import kubernetes
import pytest

from agentid.api import v1alpha1
from agentid.domain import naming
from tests.support.agents import Agent, agent_manifest, create_agent
from tests.support.clusters import ClusterHandle, status_of
from tests.support.operator import OperatorThread
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def _gone(read: object, *args: object) -> bool:
    return status_of(read, *args) == 404


def test_revoking_denies_at_once_then_removes_keys_and_identity_and_cannot_be_undone(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = create_agent(cluster, agent_namespace, "leaky", clusterRoleRefs=["view"])
    agent.wait_ready()
    token = agent.service_account_token()
    eventually(lambda: agent.can(token, "create") == 200, what="write allowed before revocation")
    key_ids = [key["keyID"] for key in agent.status()["keys"]]

    agent.patch_spec({"revoked": True, "revocationReason": "prompt injection detected"})
    # RBAC answers first: the bindings go before anything else (403), then the ServiceAccount (401 once the
    # apiserver's 10 s token-authentication cache has expired).
    eventually(lambda: agent.can(token, "list") in (401, 403), timeout=10, what="access denied after revoke")
    status = agent.wait_phase("Revoked")
    core = kubernetes.client.CoreV1Api(cluster.admin())
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    assert _gone(core.read_namespaced_service_account, "leaky-agent", agent_namespace)
    assert _gone(core.read_namespaced_secret, "leaky-agent-key", agent_namespace)
    assert _gone(rbac.read_namespaced_role_binding, "leaky-agent", agent_namespace)
    assert _gone(rbac.read_namespaced_role_binding, naming.cluster_role_binding("leaky", "view"), agent_namespace)
    assert _gone(rbac.read_namespaced_role, "leaky-agent", agent_namespace)
    assert status["keys"] == []
    assert set(key_ids) <= set(status["revokedKeyIDs"])
    assert status["revocationReason"] == "prompt injection detected"
    assert status["revokedAt"]
    assert agent.condition("Revoked")["status"] == "True"
    assert agent.condition("Ready")["status"] == "False"
    eventually(lambda: agent.can(token, "list") == 401, timeout=30, what="token no longer authenticates")

    with pytest.raises(kubernetes.client.ApiException) as refused:
        agent.patch_spec({"revoked": False})
    assert refused.value.status == 422
    assert "revoked is terminal" in str(refused.value.body)


def test_an_agent_past_its_expiry_ends_expired_with_no_access(cluster: ClusterHandle, agent_namespace: str) -> None:
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=6)
    agent = create_agent(cluster, agent_namespace, "temp", expiresAt=expires.isoformat().replace("+00:00", "Z"))
    agent.wait_ready()
    token = agent.service_account_token()
    eventually(lambda: agent.can(token, "list") == 200, what="allowed before expiry")
    status = agent.wait_phase("Expired", timeout=30)
    assert agent.can(token, "list") in (401, 403)
    assert status["keys"] == []
    assert status["revocationReason"].startswith("expired at")
    assert agent.condition("Ready")["reason"] == "Expired"
    # Moving expiresAt later does not bring an expired agent back.
    later = (expires + dt.timedelta(days=30)).isoformat().replace("+00:00", "Z")
    agent.patch_spec({"expiresAt": later})
    assert agent.wait_phase("Expired")["keys"] == []


def test_deletion_while_the_operator_is_down_completes_when_it_returns(
    cluster: ClusterHandle, crds: None, own_operator_namespace: str
) -> None:
    namespace = own_operator_namespace
    operator = OperatorThread(cluster.kubeconfig, namespaces=[own_operator_namespace]).start()
    try:
        agent = create_agent(cluster, namespace, "orphan")
        agent.wait_ready()
    finally:
        operator.stop()
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    custom.delete_namespaced_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, "orphan")
    # The finalizer holds the object while nobody can clean up.
    body = agent.body()
    assert body["metadata"]["deletionTimestamp"]
    assert "agentid.dev/cleanup" in body["metadata"]["finalizers"]

    operator = OperatorThread(cluster.kubeconfig, namespaces=[own_operator_namespace]).start()
    try:
        eventually(
            lambda: _gone(
                custom.get_namespaced_custom_object,
                v1alpha1.GROUP,
                v1alpha1.VERSION,
                namespace,
                v1alpha1.PLURAL,
                "orphan",
            ),
            timeout=30,
            what="agent deleted",
        )
        core = kubernetes.client.CoreV1Api(cluster.admin())
        assert _gone(core.read_namespaced_service_account, "orphan-agent", namespace)
        assert _gone(core.read_namespaced_secret, "orphan-agent-key", namespace)
    finally:
        operator.stop()


def test_a_recreated_agent_gets_a_new_identity_and_old_tokens_fail(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = create_agent(cluster, agent_namespace, "phoenix")
    first = agent.wait_ready()
    old_token = agent.service_account_token()
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    custom.delete_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, agent_namespace, v1alpha1.PLURAL, "phoenix"
    )
    eventually(
        lambda: _gone(
            custom.get_namespaced_custom_object,
            v1alpha1.GROUP,
            v1alpha1.VERSION,
            agent_namespace,
            v1alpha1.PLURAL,
            "phoenix",
        ),
        what="deleted",
    )
    custom.create_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, agent_namespace, v1alpha1.PLURAL, agent_manifest("phoenix", agent_namespace)
    )
    second = Agent(cluster, agent_namespace, "phoenix").wait_ready()
    assert second["serviceAccountUID"] != first["serviceAccountUID"]
    assert second["keys"][0]["keyID"] != first["keys"][0]["keyID"]
    eventually(lambda: agent.can(old_token, "list") == 401, timeout=30, what="old token rejected")
