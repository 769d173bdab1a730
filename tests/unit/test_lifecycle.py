"""A reconciliation pass as pure decisions: terminal states, the object plan, status, Events, wake-ups."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agentid.api.v1alpha1 import Phase
from agentid.domain import desired, lifecycle, naming
from agentid.domain.keyring import KeyAction, ObservedKey, key_statuses
from agentid.domain.lifecycle import Observed, Outcome, contains, plan_objects
from agentid.domain.supervision import Access, ClusterRoleInfo, Withheld, effective_access
from tests.support.factories import NOW, agent

VIEW = {"view": ClusterRoleInfo("view", read_only=True)}
KEY = ObservedKey("kid-1", agent().spec.credentials.key_algorithm, NOW, {"kid": "kid-1"})
AGENT_ID = "spiffe://cluster.local/ns/finance/agent/triage"


def observed_as_applied(manifests: list[dict[str, Any]], *, extra: dict[str, Any] | None = None) -> Observed:
    """What the cluster holds after the manifests were applied (the server adds fields of its own)."""
    objects = {}
    for manifest in manifests:
        body = {**manifest, "metadata": {**manifest["metadata"], "uid": "u", "resourceVersion": "7"}}
        objects[(manifest["kind"], manifest["metadata"]["name"])] = body
    objects.update(extra or {})
    return Observed(objects=objects, key=KEY)


def test_a_new_agent_gets_its_service_account_role_and_bindings() -> None:
    new = agent(clusterRoleRefs=["view"])
    plan = plan_objects(new, Observed(), access=effective_access(new.spec, VIEW), agent_id=AGENT_ID, terminal=False)
    assert [(m["kind"], m["metadata"]["name"]) for m in plan.applies] == [
        ("ServiceAccount", "triage-agent"),
        ("Role", "triage-agent"),
        ("RoleBinding", "triage-agent"),
        ("RoleBinding", "triage-agent:view"),
    ]
    assert plan.deletes == ()
    assert plan.repaired == ()  # first provisioning is not drift


def test_nothing_is_written_when_the_cluster_already_matches() -> None:
    current = agent(clusterRoleRefs=["view"], status={"phase": "Active", "observedGeneration": 1})
    access = effective_access(current.spec, VIEW)
    wanted = [desired.service_account(current, AGENT_ID), *desired.access_objects(current, access)]
    plan = plan_objects(current, observed_as_applied(wanted), access=access, agent_id=AGENT_ID, terminal=False)
    assert plan.empty


def test_hand_edits_and_deletions_are_drift_when_the_spec_did_not_change() -> None:
    current = agent(status={"phase": "Active", "observedGeneration": 1})
    access = effective_access(current.spec, {})
    role = desired.role(current, access)
    role["rules"] = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    plan = plan_objects(
        current,
        observed_as_applied([desired.service_account(current, AGENT_ID), role]),
        access=access,
        agent_id=AGENT_ID,
        terminal=False,
    )
    assert sorted(plan.repaired) == ["Role triage-agent (modified)", "RoleBinding triage-agent (missing)"]


def test_suspension_deletes_bindings_before_roles_and_keeps_identity_and_key() -> None:
    before = agent(clusterRoleRefs=["view"], status={"phase": "Active", "observedGeneration": 1})
    applied = [
        desired.service_account(before, AGENT_ID),
        *desired.access_objects(before, effective_access(before.spec, VIEW)),
    ]
    suspended = agent(
        clusterRoleRefs=["view"],
        supervision={"mode": "Suspended"},
        generation=2,
        status={"phase": "Active", "observedGeneration": 1},
    )
    plan = plan_objects(
        suspended,
        observed_as_applied(applied),
        access=effective_access(suspended.spec, VIEW),
        agent_id=AGENT_ID,
        terminal=False,
    )
    assert [(ref.kind, ref.name) for ref in plan.deletes] == [
        ("RoleBinding", "triage-agent"),
        ("RoleBinding", "triage-agent:view"),
        ("Role", "triage-agent"),
    ]
    assert plan.applies == ()


def test_revocation_deletes_everything_in_order_bindings_keys_identity() -> None:
    current = agent(revoked=True, status={"phase": "Active", "observedGeneration": 1})
    applied = [
        desired.service_account(current, AGENT_ID),
        *desired.access_objects(current, effective_access(current.spec, {})),
    ]
    secret = {("Secret", "triage-agent-key"): {"kind": "Secret", "metadata": {"name": "triage-agent-key", "uid": "s"}}}
    plan = plan_objects(
        current,
        observed_as_applied(applied, extra=secret),
        access=effective_access(current.spec, {}),
        agent_id=AGENT_ID,
        terminal=True,
    )
    assert [ref.kind for ref in plan.deletes] == ["RoleBinding", "Role", "Secret", "ServiceAccount"]
    assert plan.deletes[2].uid == "s"  # deletes are guarded by UID against a newer twin


def test_revoked_and_expired_are_terminal_even_if_the_spec_changes_later() -> None:
    assert lifecycle.terminal_phase(agent(revoked=True), NOW) is Phase.REVOKED
    assert lifecycle.terminal_phase(agent(expiresAt="2026-11-29T11:00:00Z"), NOW) is Phase.EXPIRED
    assert lifecycle.terminal_phase(agent(expiresAt="2026-11-29T13:00:00Z"), NOW) is None
    expired = agent(expiresAt="2027-01-01T00:00:00Z", status={"phase": "Expired"})
    assert lifecycle.terminal_phase(expired, NOW) is Phase.EXPIRED


def _outcome(current: Any, phase: Phase, action: KeyAction = KeyAction.KEEP) -> Outcome:
    access = effective_access(current.spec, VIEW)
    return Outcome(
        phase=phase,
        access=access,
        keys=tuple(key_statuses(KEY, now=NOW)),
        key=KEY,
        service_account_uid="sa-uid",
        key_action=action,
    )


def test_status_of_a_provisioned_agent_has_every_condition_stamped_with_the_generation() -> None:
    current = agent(generation=3)
    status = lifecycle.compute_status(current, _outcome(current, Phase.ACTIVE), agent_id=AGENT_ID, now=NOW)
    assert status.phase is Phase.ACTIVE
    assert status.agent_id == AGENT_ID
    assert status.service_account_name == naming.service_account("triage")
    assert {c.type: (c.status, c.reason) for c in status.conditions} == {
        "Revoked": ("False", "NotRevoked"),
        "CredentialsReady": ("True", "KeyActive"),
        "AccessReady": ("True", "Granted"),
        "Ready": ("True", "Provisioned"),
    }
    assert all(c.observed_generation == 3 for c in status.conditions)
    assert status.next_rotation_time == NOW + dt.timedelta(hours=720)


def test_last_transition_time_moves_only_when_a_condition_flips() -> None:
    current = agent()
    first = lifecycle.compute_status(current, _outcome(current, Phase.ACTIVE), agent_id=AGENT_ID, now=NOW)
    later = NOW + dt.timedelta(minutes=5)
    again_body = agent(status=first.model_dump(mode="json", by_alias=True, exclude_none=True))
    second = lifecycle.compute_status(again_body, _outcome(again_body, Phase.ACTIVE), agent_id=AGENT_ID, now=later)
    assert [c.last_transition_time for c in second.conditions] == [NOW] * 4
    suspended = agent(supervision={"mode": "Suspended"}, status=first.model_dump(mode="json", by_alias=True))
    third = lifecycle.compute_status(suspended, _outcome(suspended, Phase.SUSPENDED), agent_id=AGENT_ID, now=later)
    ready = next(c for c in third.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.last_transition_time) == ("True", "Suspended", NOW)


def test_events_name_the_transition_and_the_person_who_caused_it() -> None:
    current = agent(
        supervision={"mode": "Suspended", "reason": "incident 42"},
        generation=2,
        status={
            "phase": "Active",
            "supervision": "Autonomous",
            "observedGeneration": 1,
            "lastChangedBy": {"username": "bob@example.com", "time": "2026-11-29T11:59:00Z"},
        },
    )
    status = lifecycle.compute_status(current, _outcome(current, Phase.SUSPENDED), agent_id=AGENT_ID, now=NOW)
    events = lifecycle.transition_events(
        current, status, _outcome(current, Phase.SUSPENDED), actor=status.last_changed_by
    )
    assert [(e.type, e.reason) for e in events] == [("Warning", "Suspended")]
    assert events[0].message == "Autonomous -> Suspended by bob@example.com: incident 42"


def test_a_rotation_and_a_lost_secret_announce_themselves() -> None:
    current = agent(status={"phase": "Active", "supervision": "Autonomous", "observedGeneration": 1})
    rotated = _outcome(current, Phase.ACTIVE, KeyAction.ROTATE)
    status = lifecycle.compute_status(current, rotated, agent_id=AGENT_ID, now=NOW)
    assert [e.reason for e in lifecycle.transition_events(current, status, rotated, actor=None)] == ["KeyRotated"]
    lost = _outcome(current, Phase.ACTIVE, KeyAction.REPLACE_LOST)
    events = lifecycle.transition_events(current, status, lost, actor=None)
    assert [(e.type, e.reason) for e in events] == [("Warning", "KeyRegenerated")]


def test_the_next_wakeup_is_the_earliest_of_rotation_retirement_and_expiry() -> None:
    current = agent(expiresAt="2026-11-30T00:00:00Z")
    status = lifecycle.compute_status(current, _outcome(current, Phase.ACTIVE), agent_id=AGENT_ID, now=NOW)
    assert lifecycle.next_wakeup(current, status) == dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    revoked = status.model_copy(update={"phase": Phase.REVOKED})
    assert lifecycle.next_wakeup(current, revoked) is None


def test_status_patches_null_out_removed_fields_and_are_none_when_equal() -> None:
    assert lifecycle.status_patch({"phase": "Active"}, {"phase": "Active"}) is None
    assert lifecycle.status_patch({"phase": "Active", "revokedAt": "x"}, {"phase": "Active"}) == {
        "phase": "Active",
        "revokedAt": None,
    }


def test_desired_is_contained_in_observed_by_maps_but_lists_must_match() -> None:
    assert contains({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2}})
    assert not contains({"rules": [1, 2]}, {"rules": [1]})
    assert not contains({"a": 1}, {"a": 1, "x": None})


def test_a_suspended_agent_is_suspended_even_when_its_grant_would_be_out_of_bounds() -> None:

    current = agent(supervision={"mode": "Suspended"})
    problem = Access(withheld=(Withheld("PolicyViolation", "spec.permissions[0]: verb 'update' is not allowed", True),))
    assert lifecycle.phase_for(current, problem, None) is Phase.SUSPENDED
    outcome = Outcome(phase=Phase.SUSPENDED, access=problem, keys=(), key=KEY, service_account_uid="u")
    status = lifecycle.compute_status(current, outcome, agent_id=AGENT_ID, now=NOW)
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "Suspended")
    access_ready = next(c for c in status.conditions if c.type == "AccessReady")
    assert "on resume" in access_ready.message
