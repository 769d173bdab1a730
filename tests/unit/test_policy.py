"""AgentPolicy: selection, strictest combination, the ordered chain of checks, and reconcile-time shrinking."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agentid.api.v1alpha1 import AgentPolicy, SupervisionMode
from agentid.domain import policy
from agentid.domain.supervision import ClusterRoleInfo
from tests.support.factories import NOW, agent

VIEW = {
    "view": ClusterRoleInfo("view", read_only=True, resources=frozenset({"configmaps", "pods"})),
    "edit": ClusterRoleInfo("edit", read_only=False, resources=frozenset({"configmaps", "secrets"})),
}


def make(name: str = "p", **spec: Any) -> AgentPolicy:
    return AgentPolicy.from_body({"metadata": {"name": name, "generation": 1}, "spec": spec})


def test_label_selectors_follow_kubernetes_semantics() -> None:
    selector = make(
        namespaceSelector={
            "matchLabels": {"team": "finance"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["dev"]}],
        }
    )
    assert policy.selects(selector.spec.namespace_selector, {"team": "finance", "tier": "prod"})
    assert policy.selects(selector.spec.namespace_selector, {"team": "finance"})
    assert not policy.selects(selector.spec.namespace_selector, {"team": "finance", "tier": "dev"})
    assert not policy.selects(selector.spec.namespace_selector, {"team": "ops"})
    assert policy.selects(make().spec.namespace_selector, {})  # empty selects everything


def test_the_strictest_combination_of_several_policies_wins() -> None:
    combined = policy.effective_policy(
        [
            make("a", allowedVerbs=["get", "list", "update"], maxTokenTTL="1h", allowedOwners=["*@example.com"]),
            make("b", allowedVerbs=["get", "list"], maxTokenTTL="10m", forbiddenResources=["configmaps"]),
            make("c", namespaceSelector={"matchLabels": {"other": "x"}}, allowedVerbs=[]),
        ],
        {"team": "finance"},
    )
    assert combined.names == ("a", "b")
    assert combined.allowed_verbs == {"get", "list"}
    assert combined.max_token_ttl == dt.timedelta(minutes=10)
    assert combined.forbidden_resources == {"configmaps", "secrets", "serviceaccounts/token", "pods/exec"}
    assert combined.owner_patterns == (("*@example.com",),)


def test_violations_come_in_check_order_with_paths_and_the_policy_name() -> None:
    governing = policy.effective_policy(
        [make("finance", allowedOwners=["*@corp.example"], allowedVerbs=["get"], maxLifetime="24h")], {}
    )
    found = policy.violations(agent().spec, governing, NOW)
    assert [v.path for v in found] == ["spec.owner.name", "spec.expiresAt", "spec.permissions[0]"]
    assert str(found[2]) == (
        "spec.permissions[0]: verb 'list' is not allowed; verb 'watch' is not allowed; verb 'create' is not allowed; "
        "verb 'update' is not allowed [policy finance]"
    )
    assert policy.violations(agent().spec, policy.NO_POLICY, NOW) == []


def test_without_any_policy_the_built_in_baseline_still_forbids_what_reaches_other_agents_keys() -> None:
    baseline = policy.effective_policy([], {"team": "finance"})
    assert baseline.names == ("agentid-baseline",)
    secrets = agent(
        permissions=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}], clusterRoleRefs=["edit"]
    )
    found = policy.violations(secrets.spec, baseline, NOW, VIEW)
    assert [v.path for v in found] == ["spec.permissions[0]", "spec.clusterRoleRefs[0]"]
    assert "it grants 'secrets', which is forbidden" in found[1].message
    access = policy.governed_access(secrets.spec, baseline, VIEW, NOW)
    assert access.empty
    grantable = policy.effective_policy([make(grantableClusterRoles=["edit"])], {})
    assert policy.governed_access(agent(clusterRoleRefs=["edit"]).spec, grantable, VIEW, NOW).cluster_roles == ("edit",)


def test_a_tightened_policy_narrows_rules_and_cluster_roles_and_records_why() -> None:
    governing = policy.effective_policy(
        [make(allowedVerbs=["get", "list", "watch"], grantableClusterRoles=["view"])], {}
    )
    access = policy.governed_access(agent(clusterRoleRefs=["view", "edit"]).spec, governing, VIEW, NOW)
    assert [rule.verbs for rule in access.rules] == [["get", "list", "watch"]]
    assert access.cluster_roles == ("view",)
    assert {item.reason for item in access.problems} == {"PolicyViolation"}


def test_a_disallowed_mode_is_lowered_and_an_unaccountable_owner_gets_nothing() -> None:
    supervised_only = policy.effective_policy([make(allowedSupervisionModes=["Supervised", "Suspended"])], {})
    assert policy.allowed_mode(agent().spec, supervised_only) is SupervisionMode.SUPERVISED
    access = policy.governed_access(agent().spec, supervised_only, VIEW, NOW)
    assert all(set(rule.verbs) <= {"get", "list", "watch"} for rule in access.rules)
    foreign_owner = policy.effective_policy([make(allowedOwners=["*@corp.example"])], {})
    assert policy.governed_access(agent().spec, foreign_owner, VIEW, NOW).empty


def test_lifetime_is_measured_from_now() -> None:
    governing = policy.effective_policy([make(maxLifetime="48h")], {})
    soon = agent(expiresAt=(NOW + dt.timedelta(hours=47)).isoformat())
    later = agent(expiresAt=(NOW + dt.timedelta(hours=49)).isoformat())
    assert policy.violations(soon.spec, governing, NOW) == []
    assert [v.path for v in policy.violations(later.spec, governing, NOW)] == ["spec.expiresAt"]
