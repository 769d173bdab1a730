"""Guardrails of a privilege broker: nobody gives an agent access they do not hold, policies bound every agent
(at admission and again at reconcile time), every human decision is attributed, and admission fails closed."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from agentid.api import v1alpha1
from agentid.webhooks.configuration import webhook_configurations
from tests.support.agents import Agent, agent_manifest, create_agent
from tests.support.clusters import ClusterHandle, status_of
from tests.support.operator import LogCapture
from tests.support.polling import eventually
from tests.support.rbac import bind, bind_user

pytestmark = pytest.mark.cluster
RBAC_GROUP = "rbac.authorization.k8s.io"


@pytest.fixture(autouse=True)
def _needs_local_webhook(cluster: ClusterHandle) -> None:
    if cluster.local is None:
        pytest.skip("the test session registers its in-process admission webhook on the embedded control plane only")


def _bind(cluster: ClusterHandle, namespace: str, user: str, cluster_role: str) -> None:
    bind_user(cluster, namespace, user, "ClusterRole", cluster_role)


@pytest.fixture(scope="module")
def agent_author_role(cluster: ClusterHandle) -> Iterator[str]:
    """What a team member needs to write AgentIdentities (the chart aggregates this into edit/admin)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    name = f"agent-author-{uuid.uuid4().hex[:6]}"
    rbac.create_cluster_role(
        {
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [v1alpha1.GROUP],
                    "resources": [v1alpha1.PLURAL],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                }
            ],
        }
    )
    yield name
    rbac.delete_cluster_role(name)


def _create_as(cluster: ClusterHandle, user: str, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(cluster.as_user(user))
    body = agent_manifest(name, namespace, **spec)
    return custom.create_namespaced_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, body)


def _denial(call: Any) -> str:
    with pytest.raises(kubernetes.client.ApiException) as refused:
        call()
    assert refused.value.status in (400, 403, 422), refused.value.body
    return str(json.loads(refused.value.body)["message"])


@pytest.fixture
def policy(cluster: ClusterHandle) -> Iterator[Any]:
    """Create AgentPolicies (cluster-scoped) for one test; each selects only that test's namespace."""
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    created: list[str] = []

    def make(namespace: str, **spec: Any) -> str:
        name = f"p-{uuid.uuid4().hex[:8]}"
        body = {
            "apiVersion": v1alpha1.API_VERSION,
            "kind": v1alpha1.POLICY_KIND,
            "metadata": {"name": name},
            "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}, **spec},
        }
        custom.create_cluster_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, body)
        created.append(name)
        return name

    yield make
    for name in created:
        custom.delete_cluster_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, name)


def test_a_namespace_editor_cannot_hand_an_agent_what_they_may_not_grant(
    cluster: ClusterHandle, agent_namespace: str, agent_author_role: str, policy: Any, configmap_editor: str
) -> None:
    dave = "dave@example.com"
    _bind(cluster, agent_namespace, dave, "edit")
    _bind(cluster, agent_namespace, dave, agent_author_role)
    # The default ceilings (secrets, serviceaccounts/token and pods/exec forbidden); admin made grantable.
    policy(agent_namespace, grantableClusterRoles=["admin", configmap_editor])

    secrets = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    message = _denial(lambda: _create_as(cluster, dave, agent_namespace, "greedy", permissions=secrets))
    assert "spec.permissions[0]: resource 'secrets' is forbidden" in message

    message = _denial(lambda: _create_as(cluster, dave, agent_namespace, "admin-wannabe", clusterRoleRefs=["admin"]))
    assert "dave@example.com may not grant ClusterRole 'admin' (no 'bind' on it, and no '" in message

    nodes = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    message = _denial(lambda: _create_as(cluster, dave, agent_namespace, "nodes", permissions=nodes))
    assert "dave@example.com may not grant 'get nodes'" in message

    # What dave does hold, he may give: configmap writes, through a ClusterRole he holds every rule of.
    _create_as(cluster, dave, agent_namespace, "fair", clusterRoleRefs=[configmap_editor])
    assert Agent(cluster, agent_namespace, "fair").wait_ready()["grantedClusterRoles"] == [configmap_editor]
    # A cluster admin may grant what dave may not (where the policy allows).
    create_agent(cluster, agent_namespace, "by-admin", clusterRoleRefs=["admin"])
    assert Agent(cluster, agent_namespace, "by-admin").wait_ready()["grantedClusterRoles"] == ["admin"]


def test_the_owner_ceiling_holds_even_when_a_powerful_sync_identity_applies_the_agent(
    cluster: ClusterHandle, agent_namespace: str, policy: Any
) -> None:
    argocd = "system:serviceaccount:argocd:argocd-application-controller"
    bind(
        cluster,
        agent_namespace,
        {
            "metadata": {"name": "argocd-admin"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "argocd-application-controller", "namespace": "argocd"}],
        },
    )
    _bind(cluster, agent_namespace, "alice@example.com", "view")  # alice may only read
    policy(agent_namespace, ownerCeiling=True)

    writes = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"]}]
    message = _denial(lambda: _create_as(cluster, argocd, agent_namespace, "synced", permissions=writes))
    assert "the owner alice@example.com does not hold 'update configmaps'" in message
    assert "owner ceiling" in message

    reads = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    _create_as(cluster, argocd, agent_namespace, "synced", permissions=reads)
    assert Agent(cluster, agent_namespace, "synced").wait_ready()["grantedRules"] == 1


CEILINGS = [
    ("owner pattern", {"allowedOwners": ["*@corp.example"]}, {}, "matches none of the allowed owners"),
    ("supervision mode", {"allowedSupervisionModes": ["Supervised", "Suspended"]}, {}, "Autonomous is not allowed"),
    ("expiry required", {"maxLifetime": "72h"}, {}, "spec.expiresAt: required"),
    ("lifetime bounded", {"maxLifetime": "72h"}, {"expiresAt": "2030-01-01T00:00:00Z"}, "is more than 3 days"),
    ("token lifetime", {"maxTokenTTL": "5m"}, {"credentials": {"tokenTTL": "1h"}}, "1h exceeds the maximum 0:05:00"),
    ("verbs", {"allowedVerbs": ["get", "list", "watch"]}, {}, "verb 'create' is not allowed"),
    ("api groups", {"allowedAPIGroups": ["apps"]}, {}, "API group '' is not allowed"),
    ("resources", {"allowedResources": ["deployments"]}, {}, "resource 'configmaps' is not allowed"),
    (
        "forbidden verbs",
        {},
        {"permissions": [{"apiGroups": [RBAC_GROUP], "resources": ["roles"], "verbs": ["escalate"]}]},
        "verb 'escalate' is forbidden",
    ),
    (
        "grantable cluster roles",
        {"grantableClusterRoles": ["view"]},
        {"clusterRoleRefs": ["edit"]},
        "ClusterRole 'edit' is not grantable",
    ),
]


@pytest.mark.parametrize(("case", "ceiling", "spec", "message"), CEILINGS, ids=[c[0] for c in CEILINGS])
def test_each_policy_ceiling_denies_at_admission(
    cluster: ClusterHandle, agent_namespace: str, policy: Any, case: str, ceiling: dict, spec: dict, message: str
) -> None:
    policy(agent_namespace, **ceiling)
    denied = _denial(lambda: create_agent(cluster, agent_namespace, "bounded", **spec))
    assert message in denied, case
    assert "[policy p-" in denied


def test_tightening_a_policy_shrinks_an_existing_agent_and_never_silently(
    cluster: ClusterHandle, agent_namespace: str, policy: Any
) -> None:
    agent = create_agent(cluster, agent_namespace, "before-the-rules")
    agent.wait_ready()
    token = agent.service_account_token()
    eventually(lambda: agent.can(token, "create") == 200, what="write allowed before the policy")

    name = policy(agent_namespace, allowedVerbs=["get", "list", "watch"])
    eventually(lambda: agent.condition("Ready").get("reason") == "PolicyViolation", what="PolicyViolation")
    eventually(lambda: agent.can(token, "create") == 403, what="write withdrawn")
    assert agent.can(token, "list") == 200
    assert "verb 'create' is not allowed" in agent.condition("AccessReady")["message"]
    events = kubernetes.client.EventsV1Api(cluster.admin()).list_namespaced_event(agent_namespace).items
    assert any(e.reason == "PolicyViolation" and e.regarding.name == "before-the-rules" for e in events)

    custom = kubernetes.client.CustomObjectsApi(cluster.admin())

    def counted() -> bool:
        status = custom.get_cluster_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, name).get(
            "status", {}
        )
        return status.get("agents") == 1 and status.get("outOfBounds") == 1

    eventually(counted, timeout=30, what="policy status counts the agent as out of bounds")


def test_who_changed_the_supervision_is_in_status_and_in_the_event(
    cluster: ClusterHandle, agent_namespace: str, agent_author_role: str
) -> None:
    carol = "carol@example.com"
    _bind(cluster, agent_namespace, carol, "edit")
    _bind(cluster, agent_namespace, carol, agent_author_role)
    agent = create_agent(cluster, agent_namespace, "watched")
    agent.wait_ready()
    assert agent.status()["createdBy"]["username"] == "admin"

    custom = kubernetes.client.CustomObjectsApi(cluster.as_user(carol))
    custom.patch_namespaced_custom_object(
        v1alpha1.GROUP,
        v1alpha1.VERSION,
        agent_namespace,
        v1alpha1.PLURAL,
        "watched",
        {"spec": {"supervision": {"mode": "Suspended", "reason": "looks off"}}},
    )
    status = agent.wait_phase("Suspended")
    assert status["lastChangedBy"]["username"] == carol
    assert status["lastChangedBy"]["changes"] == ["supervision"]
    assert status["createdBy"]["username"] == "admin"
    events = kubernetes.client.EventsV1Api(cluster.admin()).list_namespaced_event(agent_namespace).items
    suspended = [e for e in events if e.reason == "Suspended" and e.regarding.name == "watched"]
    assert suspended
    assert f"by {carol}" in suspended[0].note

    # The attribution cannot be forged through the API: the webhook restores it.
    forged = {
        "metadata": {
            "annotations": {"agentid.dev/last-changed-by": '{"username":"mallory","time":"2026-01-01T00:00:00Z"}'}
        }
    }
    custom.patch_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, agent_namespace, v1alpha1.PLURAL, "watched", forged
    )
    annotations = agent.body()["metadata"]["annotations"]
    assert json.loads(annotations["agentid.dev/last-changed-by"])["username"] == carol


def test_an_autonomous_agent_without_expiry_is_admitted_with_a_warning(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    # Admission warnings travel in the HTTP response headers; kubectl prints them.
    applied = cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(agent_manifest("warned", agent_namespace)))
    assert "has no expiresAt" in applied.stderr
    expiring = agent_manifest("expiring", agent_namespace, expiresAt="2030-01-01T00:00:00Z")
    applied = cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(expiring))
    assert "has no expiresAt" not in applied.stderr


@pytest.fixture
def broken_webhook(cluster: ClusterHandle) -> Iterator[str]:
    """A namespace whose agents must pass a webhook that is down (nothing listens on its port)."""
    assert cluster.local is not None
    namespace = f"a-broken-{uuid.uuid4().hex[:6]}"
    label = {"agentid.dev/admission": f"broken-{namespace[-6:]}"}
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.create_namespace({"metadata": {"name": namespace, "labels": label}})
    configurations = webhook_configurations(
        base_url="https://127.0.0.1:9",
        ca_bundle=cluster.local.ca.pem,
        namespace_selector={"matchLabels": label},
        name=f"broken-{namespace[-6:]}",
        include_policies=False,
    )
    cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(configurations))
    yield namespace
    for configuration in configurations:
        cluster.kubectl("delete", configuration["kind"], configuration["metadata"]["name"])
    core.delete_namespace(namespace)


def test_with_the_webhook_down_agent_writes_fail_closed_and_nothing_else_is_blocked(
    cluster: ClusterHandle, operator: Any, broken_webhook: str
) -> None:
    with pytest.raises(kubernetes.client.ApiException) as refused:
        create_agent(cluster, broken_webhook, "blocked")
    assert "failed calling webhook" in json.loads(refused.value.body)["message"]
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.create_namespaced_config_map(broken_webhook, {"metadata": {"name": "unaffected"}})
    assert status_of(core.read_namespaced_config_map, "unaffected", broken_webhook) == 200


def test_audit_records_are_json_lines_with_the_required_fields_and_no_secrets(
    cluster: ClusterHandle, agent_namespace: str, policy: Any, operator_logs: LogCapture
) -> None:
    agent = create_agent(cluster, agent_namespace, "audited")
    agent.wait_ready()
    agent.patch_spec({"supervision": {"mode": "Supervised"}})
    agent.wait_phase("Supervised")
    policy(agent_namespace, allowedSupervisionModes=["Suspended"])
    _denial(lambda: create_agent(cluster, agent_namespace, "refused"))
    pems = agent.private_key_pems()

    records = []
    for line in operator_logs.lines:
        if line.startswith("agentid.audit "):
            payload = line.split(" ", 2)[2]
            records.append(json.loads(payload))
    mine = [r for r in records if r.get("namespace") == agent_namespace]
    actions = {r["audit"] for r in mine}
    assert {"Provisioned", "SupervisionChanged", "AdmissionDenied"} <= actions
    for record in mine:
        assert record["time"]
        assert record["namespace"] == agent_namespace
        assert "owner" in record or record["audit"] == "AdmissionDenied"
    provisioned = next(r for r in mine if r["audit"] == "Provisioned")
    assert provisioned["agent_id"].startswith("spiffe://")
    denied = next(r for r in mine if r["audit"] == "AdmissionDenied")
    assert denied["actor"] == "admin"
    text = json.dumps(mine)
    for pem in pems:
        for line in pem.decode().splitlines()[1:-1]:
            assert line not in text
    assert dt.datetime.fromisoformat(provisioned["time"])


def test_the_kill_switch_works_even_for_an_agent_outside_its_policy_and_above_its_owner(
    cluster: ClusterHandle, agent_namespace: str, agent_author_role: str, policy: Any
) -> None:
    agent = create_agent(cluster, agent_namespace, "rogue")
    agent.wait_ready()
    # The rules tighten after the fact: the agent is now outside its policy, and its owner holds nothing here.
    policy(agent_namespace, allowedVerbs=["get"], ownerCeiling=True)
    eventually(lambda: agent.condition("Ready").get("reason") == "PolicyViolation", what="out of bounds")
    erin = "erin@example.com"
    _bind(cluster, agent_namespace, erin, agent_author_role)  # may write agents, holds nothing else
    custom = kubernetes.client.CustomObjectsApi(cluster.as_user(erin))
    patch = {"spec": {"supervision": {"mode": "Suspended", "reason": "incident"}}}
    custom.patch_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, agent_namespace, v1alpha1.PLURAL, "rogue", patch
    )
    assert agent.wait_phase("Suspended")["lastChangedBy"]["username"] == erin
    revoke = {"spec": {"revoked": True, "revocationReason": "incident"}}
    custom.patch_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, agent_namespace, v1alpha1.PLURAL, "rogue", revoke
    )
    agent.wait_phase("Revoked")
    # Widening, on the other hand, is still checked: erin may not resume it into access she does not hold. (Under
    # the owner ceiling the owner must hold what even a Suspended agent declares: alice may read configmaps.)
    _bind(cluster, agent_namespace, "alice@example.com", "view")
    leases = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]
    message = _denial(
        lambda: create_agent(cluster, agent_namespace, "dormant", supervision={"mode": "Suspended"}, permissions=leases)
    )
    assert "the owner alice@example.com does not hold 'get leases.coordination.k8s.io'" in message
    other = create_agent(
        cluster,
        agent_namespace,
        "paused",
        supervision={"mode": "Suspended"},
        permissions=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    )
    other.wait_ready()
    resume = {"spec": {"supervision": {"mode": "Autonomous"}}}
    message = _denial(
        lambda: custom.patch_namespaced_custom_object(
            v1alpha1.GROUP, v1alpha1.VERSION, agent_namespace, v1alpha1.PLURAL, "paused", resume
        )
    )
    assert "erin@example.com may not grant 'get configmaps'" in message


def test_a_new_agent_carries_the_cleanup_finalizer_from_its_first_write(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    """The mutating webhook adds it at creation: no window in which a deletion could skip the cleanup."""
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    created = custom.create_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, agent_namespace, v1alpha1.PLURAL, agent_manifest("sealed", agent_namespace)
    )
    assert created["metadata"]["finalizers"] == ["agentid.dev/cleanup"]
    assert Agent(cluster, agent_namespace, "sealed").wait_ready()["phase"] == "Active"
