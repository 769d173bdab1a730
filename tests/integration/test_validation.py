"""Bad input is refused by the API server with a precise message; what only the operator sees is a condition."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes
import pytest

from agentid.api import v1alpha1
from tests.support import date_times
from tests.support.agents import agent_manifest, create_agent
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def _without(path: str) -> Any:
    def change(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            node = node[part]
        del node[leaf]

    return change


def _set(path: str, value: Any) -> Any:
    def change(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return change


RULE = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
INVALID = [
    ("missing owner", _without("owner"), "owner: Required value"),
    ("missing purpose", _without("purpose"), "purpose: Required value"),
    ("empty owner name", _set("owner", {"kind": "User", "name": ""}), "spec.owner.name"),
    ("unknown supervision mode", _set("supervision", {"mode": "YOLO"}), 'Unsupported value: "YOLO"'),
    ("unknown key algorithm", _set("credentials", {"keyAlgorithm": "HS256"}), 'Unsupported value: "HS256"'),
    ("wildcard verb", _set("permissions", [{**RULE, "verbs": ["*"]}]), "verbs must not contain '*'"),
    ("wildcard resource", _set("permissions", [{**RULE, "resources": ["*"]}]), "resources must not contain '*'"),
    (
        "wildcard subresource",
        _set("permissions", [{**RULE, "resources": ["pods/*"]}]),
        "resources must not contain '*'",
    ),
    ("rotation below 1h", _set("credentials", {"rotationPeriod": "30m"}), "must be at least 1h"),
    ("tokenTTL above 24h", _set("credentials", {"tokenTTL": "25h"}), "must be at most 24h"),
    ("duration garbage", _set("credentials", {"tokenTTL": "fifteen minutes"}), "spec.credentials.tokenTTL"),
    ("expiresAt not RFC 3339", _set("expiresAt", "next tuesday"), "spec.expiresAt"),
    ("too many attributes", _set("attributes", {f"k{i}": "v" for i in range(33)}), "must have at most 32 items"),
    ("1 MiB attribute", _set("attributes", {"blob": "x" * (1 << 20)}), "spec.attributes.blob"),
    ("attribute key with spaces", _set("attributes", {"cost center": "1"}), "attribute keys must be"),
    ("purpose too long", _set("purpose", "p" * 513), "spec.purpose: Too long"),
    ("thousands of rules", _set("permissions", [RULE] * 2000), "must have at most 64 items"),
    ("maxDepth over 5", _set("delegation", {"maxDepth": 6}), "spec.delegation.maxDepth"),
    ("unknown field", _set("superpowers", True), 'unknown field "spec.superpowers"'),
    ("empty verbs", _set("permissions", [{**RULE, "verbs": []}]), "spec.permissions[0].verbs"),
]


@pytest.mark.parametrize(("case", "change", "message"), INVALID, ids=[case for case, _, _ in INVALID])
def test_the_api_server_refuses_invalid_agents_with_a_precise_message(
    cluster: ClusterHandle, crds: None, namespace: str, case: str, change: Any, message: str
) -> None:
    manifest = agent_manifest("bad", namespace)
    change(manifest["spec"])
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    with pytest.raises(kubernetes.client.ApiException) as refused:
        custom.create_namespaced_custom_object(
            v1alpha1.GROUP,
            v1alpha1.VERSION,
            namespace,
            v1alpha1.PLURAL,
            copy.deepcopy(manifest),
            field_validation="Strict",
        )
    assert refused.value.status in (400, 422), case
    assert message in json.loads(refused.value.body)["message"]


def test_a_name_too_long_for_a_label_is_refused(cluster: ClusterHandle, crds: None, namespace: str) -> None:
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    with pytest.raises(kubernetes.client.ApiException) as refused:
        custom.create_namespaced_custom_object(
            v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, agent_manifest("a" * 64, namespace)
        )
    assert "at most 63 characters" in json.loads(refused.value.body)["message"]


def test_a_missing_cluster_role_gives_ready_false_and_recovers_once_it_exists(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    role_name = f"agentid-test-{agent_namespace[-6:]}"
    agent = create_agent(cluster, agent_namespace, "waiting", clusterRoleRefs=[role_name])

    def failing() -> bool:
        ready = agent.condition("Ready")
        return ready.get("status") == "False" and ready.get("reason") == "ClusterRoleNotFound"

    eventually(failing, what="Ready=False/ClusterRoleNotFound")
    assert role_name in agent.condition("Ready")["message"]
    assert agent.status()["phase"] == "Failed"
    assert agent.status()["grantedClusterRoles"] == []

    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    rbac.create_cluster_role(
        {
            "metadata": {"name": role_name},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        }
    )
    try:
        status = agent.wait_ready()
        assert status["grantedClusterRoles"] == [role_name]
        assert status["phase"] == "Active"
    finally:
        rbac.delete_cluster_role(role_name)


def test_the_crd_refuses_every_date_time_the_model_cannot_use_and_admits_the_rest(
    cluster: ClusterHandle, crds: None, namespace: str
) -> None:
    """No webhook serves ``namespace``: the verdicts are the schema's own, and match the model's for each case."""
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    wrong = []
    for number, case in enumerate(date_times.CASES):
        manifest = agent_manifest(f"expiry-{number}", namespace, expiresAt=case.text)
        try:
            stored = custom.create_namespaced_custom_object(
                v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, manifest
            )
        except kubernetes.client.ApiException as refused:
            message = json.loads(refused.body)["message"]
            expected = case.apiserver_message
            if expected is None or expected not in message or "spec.expiresAt" not in message:
                wrong.append(f"{case.text} ({case.why}) refused: {message}")
            continue
        if case.apiserver_message is not None:
            wrong.append(f"{case.text} ({case.why}) admitted, expected a refusal with {case.apiserver_message!r}")
        else:
            v1alpha1.AgentIdentity.from_body(stored)  # what was stored, the operator can parse
    assert wrong == []


def test_where_no_webhook_guards_the_operator_uses_every_date_time_the_crd_admits(
    cluster: ClusterHandle, unguarded_agent_namespace: str
) -> None:
    """What the schema admits reaches the operator unchecked by the webhook: 9 fractional digits and an offset at
    the very end of the calendar are parsed and the agent becomes Ready (not InvalidSpec), while year 0 is refused
    by the CRD before the operator sees it."""
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    with pytest.raises(kubernetes.client.ApiException) as refused:
        custom.create_namespaced_custom_object(
            v1alpha1.GROUP,
            v1alpha1.VERSION,
            unguarded_agent_namespace,
            v1alpha1.PLURAL,
            agent_manifest("year-zero", unguarded_agent_namespace, expiresAt="0000-01-01T00:00:00Z"),
        )
    assert date_times.FORMAT in json.loads(refused.value.body)["message"]

    far = "9999-12-31T23:59:59.999999999+01:00"
    agent = create_agent(cluster, unguarded_agent_namespace, "far-future", expiresAt=far)
    status = agent.wait_ready()
    assert status["phase"] == "Active"
    assert agent.body()["spec"]["expiresAt"] == far
