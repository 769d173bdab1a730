"""agentid changes and deletes only what it created: a stranger's object under an agent's derived name is reported
as a conflict and left exactly as it was, whatever its labels, through provisioning, revocation and deletion."""

from __future__ import annotations

import uuid
from typing import Any

import kubernetes
import pytest

from agentid.api import v1alpha1
from agentid.domain import naming
from tests.support.agents import CONFIGMAP_RULE, Agent, create_agent
from tests.support.clusters import ClusterHandle, status_of
from tests.support.polling import eventually
from tests.support.tokens import MCP, TokenServiceHandle

pytestmark = pytest.mark.cluster

SECRET_RULE = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}


def _conflict(agent: Agent, *names: str) -> dict[str, Any]:
    """Wait for Ready=False/NameConflict naming every one of ``names`` ("Kind name")."""

    def reported() -> dict[str, Any] | None:
        ready = agent.condition("Ready")
        held = ready.get("reason") == "NameConflict" and ready.get("status") == "False"
        return ready if held and all(name in ready.get("message", "") for name in names) else None

    return eventually(reported, what=f"{agent.name}: NameConflict naming {names}")


def _warning_events(cluster: ClusterHandle, agent: Agent) -> list[str]:
    events = kubernetes.client.EventsV1Api(cluster.admin()).list_namespaced_event(agent.namespace).items
    return [
        event.note or ""
        for event in events
        if event.regarding.name == agent.name and event.reason == "NameConflict" and event.type == "Warning"
    ]


def _delete_agent(agent: Agent) -> None:
    custom = kubernetes.client.CustomObjectsApi(agent.cluster.admin())
    custom.delete_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, agent.namespace, v1alpha1.PLURAL, agent.name
    )
    read = custom.get_namespaced_custom_object
    eventually(
        lambda: status_of(read, v1alpha1.GROUP, v1alpha1.VERSION, agent.namespace, v1alpha1.PLURAL, agent.name) == 404,
        what=f"{agent.name} deleted",
    )


def _plain(obj: Any) -> dict[str, Any]:
    """What must not change about a stranger's object: everything but its resourceVersion-like bookkeeping."""
    metadata = obj.metadata
    kept = {
        "uid": metadata.uid,
        "resourceVersion": metadata.resource_version,
        "labels": metadata.labels,
        "owners": metadata.owner_references,
    }
    for field in ("rules", "subjects", "role_ref", "data", "type"):
        if hasattr(obj, field):
            value = getattr(obj, field)
            kept[field] = value.to_dict() if hasattr(value, "to_dict") else value
    return kept


def test_an_admins_role_and_binding_under_the_agents_names_are_not_rewritten_nor_deleted_with_it(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    name = naming.role("ci")
    rbac.create_namespaced_role(agent_namespace, {"metadata": {"name": name}, "rules": [SECRET_RULE]})
    subject = {"kind": "User", "name": "release-admin", "apiGroup": "rbac.authorization.k8s.io"}
    binding = {
        "metadata": {"name": naming.role_binding("ci")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }
    rbac.create_namespaced_role_binding(agent_namespace, binding)
    before = (
        _plain(rbac.read_namespaced_role(name, agent_namespace)),
        _plain(rbac.read_namespaced_role_binding(name, agent_namespace)),
    )

    agent = create_agent(cluster, agent_namespace, "ci", permissions=[CONFIGMAP_RULE])
    ready = _conflict(agent, f"Role {name}")  # the binding is not even attempted while its Role is a stranger's
    assert "not created by this agent" in ready["message"]
    eventually(lambda: any(f"Role {name}" in note for note in _warning_events(cluster, agent)), what="Warning Event")
    assert agent.status()["grantedRules"] == 0
    # The admin's objects are exactly as they were: same rules, same subjects, no owner, no labels added.
    after = (
        _plain(rbac.read_namespaced_role(name, agent_namespace)),
        _plain(rbac.read_namespaced_role_binding(name, agent_namespace)),
    )
    assert after == before

    _delete_agent(agent)
    after_deletion = (
        _plain(rbac.read_namespaced_role(name, agent_namespace)),
        _plain(rbac.read_namespaced_role_binding(name, agent_namespace)),
    )
    assert after_deletion == before


def test_a_foreign_service_account_and_secret_survive_the_agents_revocation_and_deletion(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    core = kubernetes.client.CoreV1Api(cluster.admin())
    account, secret = naming.service_account("solo"), naming.key_secret("solo")
    core.create_namespaced_service_account(agent_namespace, {"metadata": {"name": account}})
    core.create_namespaced_secret(
        agent_namespace, {"metadata": {"name": secret}, "type": "Opaque", "stringData": {"password": "hunter2"}}
    )

    def stranger_objects() -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            _plain(core.read_namespaced_service_account(account, agent_namespace)),
            _plain(core.read_namespaced_secret(secret, agent_namespace)),
        )

    before = stranger_objects()
    agent = create_agent(cluster, agent_namespace, "solo")
    _conflict(agent, f"ServiceAccount {account}", f"Secret {secret}")
    assert "serviceAccountUID" not in agent.status()
    assert stranger_objects() == before

    agent.patch_spec({"revoked": True, "revocationReason": "done"})
    agent.wait_phase("Revoked")
    assert stranger_objects() == before

    _delete_agent(agent)
    assert stranger_objects() == before


def test_a_labelled_foreign_service_account_is_not_adopted_and_its_older_token_gets_nothing(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    core = kubernetes.client.CoreV1Api(cluster.admin())
    account = naming.service_account("mimic")
    labelled = {"metadata": {"name": account, "labels": naming.labels("mimic", "service-account")}}
    core.create_namespaced_service_account(token_namespace, labelled)
    minted = core.create_namespaced_service_account_token(
        account, token_namespace, {"spec": {"audiences": [token_service.issuer], "expirationSeconds": 600}}
    ).status.token
    before = _plain(core.read_namespaced_service_account(account, token_namespace))

    agent = create_agent(cluster, token_namespace, "mimic", credentials={"audiences": [MCP]})
    _conflict(agent, f"ServiceAccount {account}")
    assert "serviceAccountUID" not in agent.status()
    assert _plain(core.read_namespaced_service_account(account, token_namespace)) == before
    # The token service knows the agent (its status is written) and still refuses the stranger's token.
    eventually(lambda: token_service.service.agents.get(token_namespace, "mimic") is not None, what="agent known")
    refused = token_service.exchange(minted)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_request")  # RFC 8693 §2.2.2

    # Once the stranger is gone, the agent gets a ServiceAccount of its own, and the old token stays refused.
    core.delete_namespaced_service_account(account, token_namespace)
    status = agent.wait_ready()
    own = core.read_namespaced_service_account(account, token_namespace)
    assert status["serviceAccountUID"] == own.metadata.uid != before["uid"]
    assert token_service.exchange(minted).status_code == 400


def test_agents_whose_derived_names_used_to_collide_each_keep_their_own_objects(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    # Agent "m" bound to ClusterRole "<r>-agent" and agent "m-agent-cr-<r>" used to share the RoleBinding name
    # "m-agent-cr-<r>-agent". Now every derived name is distinct, and neither touches the other's objects.
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    stem = f"cm{uuid.uuid4().hex[:6]}"
    role = f"{stem}-agent"
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
    rbac.create_cluster_role({"metadata": {"name": role}, "rules": [rule]})
    try:
        first = create_agent(cluster, agent_namespace, "m", permissions=[], clusterRoleRefs=[role])
        second = create_agent(cluster, agent_namespace, f"m-agent-cr-{stem}")
        first.wait_ready()
        second.wait_ready()

        def owner_of(binding: str) -> str:
            references = rbac.read_namespaced_role_binding(binding, agent_namespace).metadata.owner_references
            return str(references[0].uid)

        first_binding = naming.cluster_role_binding("m", role)
        second_binding = naming.role_binding(second.name)
        assert first_binding != second_binding
        assert owner_of(first_binding) == first.body()["metadata"]["uid"]
        assert owner_of(second_binding) == second.body()["metadata"]["uid"]

        _delete_agent(second)
        assert owner_of(first_binding) == first.body()["metadata"]["uid"]
        assert first.condition("Ready")["status"] == "True"
        roles = rbac.read_namespaced_role_binding(first_binding, agent_namespace).role_ref
        assert (roles.kind, roles.name) == ("ClusterRole", role)
    finally:
        rbac.delete_cluster_role(role)
