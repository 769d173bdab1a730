"""Guardrails reach agents that already exist, by their events: a policy created, tightened, relaxed or deleted and
a namespace relabelled re-plan exactly the affected agents within seconds (the operator under test resyncs once
an hour, so nothing here can be a periodic pass)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from agentid.api import v1alpha1
from tests.support.agents import Agent, create_agent
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually
from tests.support.rbac import bind

pytestmark = pytest.mark.cluster
PROMPT = 10.0  # seconds: generous on a shared CPU, and far below the hour-long resync
READ_ONLY = {"allowedVerbs": ["get", "list", "watch"]}


@pytest.fixture
def policies(cluster: ClusterHandle) -> Iterator[kubernetes.client.CustomObjectsApi]:
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    yield custom
    for body in custom.list_cluster_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL)["items"]:
        if body["metadata"]["name"].startswith("ge-"):
            custom.delete_cluster_custom_object(
                v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, body["metadata"]["name"]
            )


def _policy(custom: kubernetes.client.CustomObjectsApi, labels: dict[str, str], **spec: Any) -> str:
    name = f"ge-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.POLICY_KIND,
        "metadata": {"name": name},
        "spec": {"namespaceSelector": {"matchLabels": labels}, **spec},
    }
    custom.create_cluster_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, body)
    return name


def _violating(agent: Agent) -> dict[str, Any]:
    return eventually(
        lambda: agent.condition("Ready").get("reason") == "PolicyViolation" and agent.condition("Ready"),
        timeout=PROMPT,
        what=f"{agent.name}: PolicyViolation",
    )


def _restored(agent: Agent, token: str) -> None:
    eventually(lambda: agent.condition("Ready").get("status") == "True", timeout=PROMPT, what="Ready again")
    eventually(lambda: agent.can(token, "create") == 200, timeout=PROMPT, what="write given back")


def _writing_agent(cluster: ClusterHandle, namespace: str, name: str) -> tuple[Agent, str]:
    agent = create_agent(cluster, namespace, name)
    agent.wait_ready()
    token = agent.service_account_token()
    eventually(lambda: agent.can(token, "create") == 200, what="write allowed")
    return agent, token


def test_a_policy_created_relaxed_and_deleted_reaches_the_existing_agent_at_once(
    cluster: ClusterHandle, agent_namespace: str, policies: kubernetes.client.CustomObjectsApi
) -> None:
    agent, token = _writing_agent(cluster, agent_namespace, "existing")
    name = _policy(policies, {"kubernetes.io/metadata.name": agent_namespace}, **READ_ONLY)
    ready = _violating(agent)
    assert "verb 'create' is not allowed" in ready["message"]
    eventually(lambda: agent.can(token, "create") == 403, timeout=PROMPT, what="write withdrawn")
    assert agent.can(token, "list") == 200
    events = kubernetes.client.EventsV1Api(cluster.admin()).list_namespaced_event(agent_namespace).items
    assert any(
        e.reason == "PolicyViolation" and e.regarding.name == "existing" and name in (e.note or "") for e in events
    ), "the Event names the policy"

    # Relaxed: the write comes back; deleted after tightening again: likewise.
    patch = {"spec": {"allowedVerbs": ["get", "list", "watch", "create", "update"]}}
    policies.patch_cluster_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, name, patch)
    _restored(agent, token)
    policies.patch_cluster_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, name, {"spec": READ_ONLY}
    )
    _violating(agent)
    policies.delete_cluster_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, name)
    _restored(agent, token)


def test_relabelling_a_namespace_under_a_policy_reaches_its_agents_at_once(
    cluster: ClusterHandle, agent_namespace: str, policies: kubernetes.client.CustomObjectsApi
) -> None:
    label = f"agentid.dev/tier-{uuid.uuid4().hex[:6]}"
    _policy(policies, {label: "restricted"}, **READ_ONLY)
    agent, token = _writing_agent(cluster, agent_namespace, "relabelled")
    core = kubernetes.client.CoreV1Api(cluster.admin())

    core.patch_namespace(agent_namespace, {"metadata": {"labels": {label: "restricted"}}})
    _violating(agent)
    eventually(lambda: agent.can(token, "create") == 403, timeout=PROMPT, what="write withdrawn")

    core.patch_namespace(agent_namespace, {"metadata": {"labels": {label: None}}})
    _restored(agent, token)


def test_an_owner_who_loses_a_right_takes_it_from_their_agent_and_gives_it_back(
    cluster: ClusterHandle, agent_namespace: str, policies: kubernetes.client.CustomObjectsApi
) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    owner = f"owner-{uuid.uuid4().hex[:6]}@example.com"
    binding = {
        "metadata": {"name": "owner-writes-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-writer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner}],
    }
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update"]}
    rbac.create_namespaced_role(agent_namespace, {"metadata": {"name": "configmap-writer"}, "rules": [rule]})
    bind(cluster, agent_namespace, binding)
    _policy(policies, {"kubernetes.io/metadata.name": agent_namespace}, ownerCeiling=True)
    agent = create_agent(cluster, agent_namespace, "owned", owner={"kind": "User", "name": owner})
    agent.wait_ready()
    token = agent.service_account_token()
    eventually(lambda: agent.can(token, "create") == 200, what="write allowed while the owner holds it")

    rbac.delete_namespaced_role_binding("owner-writes-configmaps", agent_namespace)
    ready = eventually(
        lambda: agent.condition("Ready").get("reason") == "OwnerCeiling" and agent.condition("Ready"),
        timeout=PROMPT,
        what="OwnerCeiling",
    )
    assert owner in ready["message"]
    eventually(lambda: agent.can(token, "list") == 403, timeout=PROMPT, what="access withdrawn")

    bind(cluster, agent_namespace, binding)
    _restored(agent, token)
