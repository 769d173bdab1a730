"""Supervision semantics (api.md): one pure function decides what each mode grants."""

from __future__ import annotations

from agentid.domain.supervision import ClusterRoleInfo, effective_access, is_read_only
from tests.support.factories import agent

WRITE_RULE = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"]}
WRITE_ONLY = {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]}
ROLES = {"view": ClusterRoleInfo("view", read_only=True), "edit": ClusterRoleInfo("edit", read_only=False)}


def test_autonomous_grants_every_rule_and_cluster_role() -> None:
    spec = agent(
        supervision={"mode": "Autonomous"}, permissions=[WRITE_RULE, WRITE_ONLY], clusterRoleRefs=["view", "edit"]
    ).spec
    access = effective_access(spec, ROLES)
    assert [rule.verbs for rule in access.rules] == [["get", "update"], ["patch"]]
    assert access.cluster_roles == ("view", "edit")
    assert access.withheld == ()


def test_supervised_keeps_only_read_verbs_and_read_only_cluster_roles() -> None:
    spec = agent(
        supervision={"mode": "Supervised"}, permissions=[WRITE_RULE, WRITE_ONLY], clusterRoleRefs=["view", "edit"]
    ).spec
    access = effective_access(spec, ROLES)
    assert [rule.verbs for rule in access.rules] == [["get"]]  # the write-only rule disappears entirely
    assert access.cluster_roles == ("view",)
    assert [item.reason for item in access.withheld] == ["ClusterRoleNotReadOnly"]
    assert access.problems == ()  # withholding is the mode working, not an error


def test_suspended_grants_nothing() -> None:
    spec = agent(supervision={"mode": "Suspended"}, permissions=[WRITE_RULE], clusterRoleRefs=["view"]).spec
    access = effective_access(spec, ROLES)
    assert access.empty


def test_a_missing_cluster_role_is_never_bound_and_is_a_problem() -> None:
    spec = agent(clusterRoleRefs=["view", "ghost", "view"]).spec
    access = effective_access(spec, {**ROLES, "ghost": None})
    assert access.cluster_roles == ("view",)  # also de-duplicated
    assert [problem.reason for problem in access.problems] == ["ClusterRoleNotFound"]


def test_a_cluster_role_is_read_only_only_if_every_verb_reads() -> None:
    assert is_read_only([{"verbs": ["get", "list"]}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}])
    assert not is_read_only([{"verbs": ["get"]}, {"verbs": ["watch", "create"]}])
    assert not is_read_only([{"verbs": ["*"]}])
    assert is_read_only([])
