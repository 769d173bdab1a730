"""Drift is repaired by the operator, and a restarted operator with nothing to do writes nothing."""

from __future__ import annotations

import datetime as dt
import logging

import kubernetes
import pytest

from agentid.api import v1alpha1
from tests.support import audit_log
from tests.support.agents import create_agent
from tests.support.clusters import ClusterHandle, status_of
from tests.support.operator import OperatorThread
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def test_a_deleted_rolebinding_and_a_hand_edited_role_are_restored(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = create_agent(cluster, agent_namespace, "steady")
    agent.wait_ready()
    token = agent.service_account_token()
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    declared = rbac.read_namespaced_role("steady-agent", agent_namespace).rules

    rbac.delete_namespaced_role_binding("steady-agent", agent_namespace)
    rbac.patch_namespaced_role(
        "steady-agent",
        agent_namespace,
        {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]},
    )

    eventually(
        lambda: status_of(rbac.read_namespaced_role_binding, "steady-agent", agent_namespace) == 200,
        timeout=20,
        what="RoleBinding restored",
    )
    eventually(
        lambda: rbac.read_namespaced_role("steady-agent", agent_namespace).rules == declared,
        timeout=20,
        what="Role rules restored",
    )
    eventually(lambda: agent.can(token, "create") == 200, what="access works again")
    assert status_of(agent.as_agent(token).list_namespaced_secret, agent_namespace) == 403
    events = kubernetes.client.EventsV1Api(cluster.admin()).list_namespaced_event(agent_namespace).items
    assert any(e.reason == "DriftRepaired" and e.regarding.name == "steady" for e in events)


def test_removed_labels_and_a_hand_edited_service_account_are_put_back(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = create_agent(cluster, agent_namespace, "labelled")
    agent.wait_ready()
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.patch_namespaced_service_account(
        "labelled-agent",
        agent_namespace,
        {"metadata": {"annotations": {"agentid.dev/owner": "User:mallory@example.com"}}},
    )

    def owner_restored() -> bool:
        annotations = core.read_namespaced_service_account("labelled-agent", agent_namespace).metadata.annotations
        return annotations.get("agentid.dev/owner") == "User:alice@example.com"

    eventually(owner_restored, timeout=20, what="ServiceAccount annotation restored")

    # Labels removed (the operator's own watches select by them): the objects are found and labelled again.
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    unlabel = [{"op": "remove", "path": "/metadata/labels/agentid.dev~1agent"}]
    rbac.patch_namespaced_role_binding("labelled-agent", agent_namespace, unlabel)
    core.patch_namespaced_secret("labelled-agent-key", agent_namespace, unlabel)
    key_id = agent.status()["keys"][0]["keyID"]

    def relabelled() -> bool:
        binding = rbac.read_namespaced_role_binding("labelled-agent", agent_namespace).metadata.labels or {}
        secret = core.read_namespaced_secret("labelled-agent-key", agent_namespace).metadata.labels or {}
        return binding.get("agentid.dev/agent") == "labelled" and secret.get("agentid.dev/agent") == "labelled"

    eventually(relabelled, timeout=30, what="labels put back")
    assert agent.status()["keys"][0]["keyID"] == key_id  # the same key: an unlabelled Secret is adopted, not replaced


def _versions(cluster: ClusterHandle, namespace: str) -> dict[str, str]:
    """resourceVersion of every agent and owned object: any write changes one."""
    client = cluster.admin()
    selector = "app.kubernetes.io/managed-by=agentid-operator"
    core, rbac = kubernetes.client.CoreV1Api(client), kubernetes.client.RbacAuthorizationV1Api(client)
    listed = {
        "agent": kubernetes.client.CustomObjectsApi(client).list_namespaced_custom_object(
            v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL
        )["items"],
    }
    versions = {f"agent/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in listed["agent"]}
    for kind, items in (
        ("sa", core.list_namespaced_service_account(namespace, label_selector=selector).items),
        ("secret", core.list_namespaced_secret(namespace, label_selector=selector).items),
        ("role", rbac.list_namespaced_role(namespace, label_selector=selector).items),
        ("rolebinding", rbac.list_namespaced_role_binding(namespace, label_selector=selector).items),
    ):
        versions.update({f"{kind}/{o.metadata.name}": o.metadata.resource_version for o in items})
    return versions


def test_a_restarted_operator_resumes_many_agents_without_writing_anything(
    cluster: ClusterHandle, own_operator_namespace: str
) -> None:
    namespace = own_operator_namespace
    count = 20
    operator = OperatorThread(cluster.kubeconfig, namespaces=[namespace]).start()
    try:
        agents = [create_agent(cluster, namespace, f"agent-{i:02d}", clusterRoleRefs=["view"]) for i in range(count)]
        for agent in agents:
            agent.wait_ready()
        before = _versions(cluster, namespace)
    finally:
        operator.stop()
    assert len(before) == count * 6  # agent, ServiceAccount, Secret, Role, RoleBinding, ClusterRole binding
    restarted_at = dt.datetime.now(dt.UTC)
    operator = OperatorThread(cluster.kubeconfig, namespaces=[namespace]).start()
    try:
        # Give the resumed operator every chance to (wrongly) write: all agents are processed at startup.
        probe = create_agent(cluster, namespace, "probe")
        probe.wait_ready()
        after = _versions(cluster, namespace)
    finally:
        operator.stop()
    after = {key: value for key, value in after.items() if "probe" not in key}
    assert after == before
    if cluster.local is not None and cluster.local.audit_log is not None:
        writes = audit_log.writes_by(
            cluster.local.audit_log,
            user_agent_prefixes=("agentid-operator", "kopf"),
            since=restarted_at,
            namespace=namespace,
        )
        assert [write for write in writes if "probe" not in write and not write.startswith("create events")] == []


def test_the_operator_stops_its_own_work_before_kopf_collects_leftover_tasks(
    cluster: ClusterHandle, own_operator_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Kopf waits for every task started while it ran, then re-raises what any of them raised: a pass refused
    during shutdown (a namespace being deleted) crashed the operator. Its watches, passes and retries stop in
    Kopf's cleanup, so Kopf finds nothing of ours left to wait for."""
    namespace = own_operator_namespace
    roles = {"count/roles.rbac.authorization.k8s.io": "0"}
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-roles"}, "spec": {"hard": roles}})
    # What kube-controller-manager's quota controller would record (the local control plane does not run it).
    core.patch_namespaced_resource_quota_status("no-roles", namespace, {"status": {"hard": roles, "used": roles}})
    caplog.set_level(logging.DEBUG, logger="kopf._core.reactor.running")
    operator = OperatorThread(cluster.kubeconfig, namespaces=[namespace]).start()
    try:
        agent = create_agent(cluster, namespace, "over-quota")
        # Its Role is refused (quota): the pass fails and is retried after 1 s, 2 s, 4 s..., through the stop.
        eventually(lambda: agent.condition("Ready").get("reason") == "ApplyFailed", what="the refused Role reported")
    finally:
        operator.stop()
    # Kopf's own account of what it had to wait for at shutdown (its debug log; kopf._core.reactor.running).
    hung = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Hung tasks")]
    assert hung == ["Hung tasks stopping is skipped: no tasks given."]
