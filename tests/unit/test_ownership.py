"""What is the agent's: derived names never collide, and only a controller reference from the agent's incarnation,
on an object no older than the agent, makes an object its own (agentid.domain.naming, .ownership)."""

from __future__ import annotations

import itertools
from typing import Any

from agentid.domain import lifecycle, naming, ownership, reasons
from agentid.domain.ownership import Owner
from agentid.domain.supervision import Access, Withheld
from tests.support.factories import agent

AGENT_CREATED = "2026-01-01T10:00:00Z"
OWNER = Owner.of({"metadata": {"uid": "uid-triage", "creationTimestamp": AGENT_CREATED}})


def _object(*, owners: list[dict[str, Any]], created: str = "2026-01-01T10:00:01Z", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "triage-agent", "ownerReferences": owners, "creationTimestamp": created, "labels": labels}
    }


def _reference(uid: str = "uid-triage", *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "agentid.dev/v1alpha1",
        "kind": "AgentIdentity",
        "name": "triage",
        "uid": uid,
        "controller": controller,
    }


def test_derived_names_of_different_agents_never_collide() -> None:
    # Agent names are DNS subdomains; ClusterRole names are path segments (':' allowed). Every combination of
    # short names from awkward alphabets, including the classic "m" + ClusterRole "x-agent" vs agent "m-agent-cr-x".
    agent_names = ["m", "m-agent", "m-agent-cr-x", "m-agent-cr-x-agent", "a.b", "a-agent.b", "x", "x-agent"]
    agent_names += [
        "".join(chars) for chars in itertools.product("a-.", repeat=3) if chars[0] == "a" and chars[-1] == "a"
    ]
    cluster_roles = ["x", "x-agent", "agent", "view", "system:view", "a:b", "agent:x", "-", ":", "x" * 300]
    owners: dict[tuple[str, str], str] = {}
    for agent_name in agent_names:
        for kind, name in naming.derived(agent_name, cluster_roles):
            assert owners.setdefault((kind, name), agent_name) == agent_name, (kind, name)
    assert len(set(naming.derived("m", cluster_roles))) == 4 + len(cluster_roles)


def test_a_cluster_role_binding_name_gives_back_its_agent_and_cluster_role() -> None:
    name = naming.cluster_role_binding("m", "system:aggregate-to-view")
    prefix, cluster_role = name.split(":", 1)
    assert (prefix, cluster_role) == (naming.role_binding("m"), "system:aggregate-to-view")
    assert ":" not in naming.role_binding("m-agent-cr-x")


def test_a_controller_reference_to_this_incarnation_is_proof_of_ownership() -> None:
    assert ownership.owns(OWNER, _object(owners=[_reference()]))


def test_labels_are_not_proof_of_ownership() -> None:
    labelled = _object(owners=[], **naming.labels("triage", "service-account"))
    assert not ownership.owns(OWNER, labelled)


def test_a_reference_to_another_incarnation_or_a_plain_owner_reference_is_not_proof() -> None:
    assert not ownership.owns(OWNER, _object(owners=[_reference("uid-older")]))
    assert not ownership.owns(OWNER, _object(owners=[_reference(controller=False)]))
    assert not ownership.owns(Owner(""), _object(owners=[_reference("")]))


def test_an_object_older_than_the_agent_is_never_its_own_even_with_a_reference_added_later() -> None:
    # e.g. a ServiceAccount created (and tokens minted for it) before the agent existed, then given a reference
    assert not ownership.owns(OWNER, _object(owners=[_reference()], created="2026-01-01T09:59:00Z"))
    # the apiservers' clocks may disagree a little: a second is tolerated
    assert ownership.owns(OWNER, _object(owners=[_reference()], created="2026-01-01T09:59:59Z"))


def test_conflicts_are_the_agents_derived_names_a_stranger_holds() -> None:
    current = agent(clusterRoleRefs=["view"])
    taken = {("Role", "triage-agent"), ("RoleBinding", "triage-agent:view"), ("Role", "someone-else")}
    assert ownership.conflicts(current, taken) == (("Role", "triage-agent"), ("RoleBinding", "triage-agent:view"))


def test_a_conflict_withholds_all_access_and_names_what_is_held_first() -> None:
    access = Access(rules=agent().spec.permissions, withheld=(Withheld("Other", "later"),))
    held = ownership.withhold(access, [("Role", "triage-agent")])
    assert held.empty
    assert held.problems[0].reason == reasons.NAME_CONFLICT
    assert "Role triage-agent" in held.problems[0].message
    assert ownership.withhold(access, []) is access


def test_removal_deletes_every_owned_object_access_first_and_names_nothing_else() -> None:
    objects = {
        ("ServiceAccount", "triage-agent"): {"metadata": {"uid": "sa"}},
        ("Secret", "triage-agent-key"): {"metadata": {"uid": "key"}},
        ("RoleBinding", "triage-agent:view"): {"metadata": {"uid": "crb"}},
    }
    observed = lifecycle.Observed(objects=objects, strangers=frozenset({("Role", "triage-agent")}))
    unlisted = (lifecycle.ObjectRef("RoleBinding", "triage-agent", "rb"),)
    plan = lifecycle.removal(observed, unlisted)
    assert plan.applies == ()
    assert [(ref.kind, ref.name, ref.uid) for ref in plan.deletes] == [
        ("RoleBinding", "triage-agent", "rb"),
        ("RoleBinding", "triage-agent:view", "crb"),
        ("Secret", "triage-agent-key", "key"),
        ("ServiceAccount", "triage-agent", "sa"),
    ]
