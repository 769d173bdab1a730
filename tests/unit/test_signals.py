"""Which CAEP events an AgentIdentity change means (domain.signals), and how a receiver's state applies SETs and
judges principals (agentid.verify.signals.SignalState): pure logic, no apiserver."""

from __future__ import annotations

from typing import Any

import pytest

from agentid.domain import signals
from agentid.verify.principal import AgentPrincipal, Supervision
from agentid.verify.signals import SETError, SignalState
from tests.unit.test_claims import NOW, agent

AGENT_ID = "spiffe://cluster.local/ns/finance/agent/triage"
ACTOR_ID = "spiffe://cluster.local/ns/finance/agent/planner"


def only(events: list[signals.Event]) -> signals.Event:
    assert len(events) == 1, events
    return events[0]


def test_a_suspension_is_an_assurance_level_increase_and_a_resume_a_decrease() -> None:
    autonomous = agent(supervision={"mode": "Autonomous"})
    suspended = agent(supervision={"mode": "Suspended"}, status={"supervision": "Autonomous"})
    event = only(signals.events_for(autonomous, suspended, NOW))
    assert event.event_type == signals.ASSURANCE_LEVEL_CHANGE
    assert event.agent_id == AGENT_ID
    assert event.body["namespace"] == signals.SUPERVISION_NAMESPACE
    assert (event.body["previous_level"], event.body["current_level"]) == ("Autonomous", "Suspended")
    assert event.body["change_direction"] == "increase"
    resumed = agent(supervision={"mode": "Supervised"}, status={"supervision": "Supervised"})
    back = only(signals.events_for(suspended, resumed, NOW))
    assert (back.body["current_level"], back.body["change_direction"]) == ("Supervised", "decrease")


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (agent(revoked=True), "revoked"),
        (agent(expiresAt="2026-11-29T11:00:00Z"), "expired"),
        (agent(deleting=True), "deleted"),
        (None, "deleted"),
    ],
)
def test_the_end_of_an_agent_is_session_revoked(new: Any, reason: str) -> None:
    event = only(signals.events_for(agent(), new, NOW))
    assert event.event_type == signals.SESSION_REVOKED
    assert event.body["reason_admin"] == {"en": f"the agent was {reason}"}
    assert event.body["event_timestamp"] == int(NOW.timestamp())


def test_changed_attributes_are_a_token_claims_change_and_nothing_else_is_an_event() -> None:
    event = only(signals.events_for(agent(), agent(attributes={"team": "payments"}), NOW))
    assert event.event_type == signals.TOKEN_CLAIMS_CHANGE
    assert event.body["claims"]["agent"]["attributes"] == {"team": "payments"}
    assert signals.events_for(agent(), agent(), NOW) == []
    assert signals.events_for(None, agent(), NOW) == []  # a new agent has no tokens to void
    unprovisioned = agent(status={"agentID": None, "phase": "Pending"})
    assert signals.events_for(None, unprovisioned, NOW) == []


def test_a_set_has_the_ssf_shape_and_a_uri_subject() -> None:
    event = only(signals.events_for(agent(), None, NOW))
    payload = signals.set_claims(event, issuer="https://tokens.example", audience="aud-1", now=NOW)
    assert payload["sub_id"] == {"format": "uri", "uri": AGENT_ID}
    assert set(payload["events"]) == {signals.SESSION_REVOKED}
    assert {"iss", "aud", "iat", "jti"} <= set(payload)


def test_a_new_stream_starts_from_the_refusals_in_force() -> None:
    suspended = agent("planner", supervision={"mode": "Suspended"})
    events = signals.snapshot([agent(), suspended], {"spiffe://gone": 100}, NOW)
    assert {(event.event_type, event.agent_id) for event in events} == {
        (signals.SESSION_REVOKED, "spiffe://gone"),
        (signals.ASSURANCE_LEVEL_CHANGE, ACTOR_ID),
    }


# -- the receiver's state -----------------------------------------------------------------------------------------


def principal(issued_at: int, *, actor: str | None = None, supervision: str = "Autonomous") -> AgentPrincipal:
    claims: dict[str, Any] = {
        "iss": "https://tokens.example",
        "sub": AGENT_ID,
        "aud": "https://mcp.example",
        "exp": issued_at + 900,
        "iat": issued_at,
        "jti": "j",
        "agent": {
            "namespace": "finance",
            "name": "triage",
            "uid": "u",
            "owner": {"kind": "User", "name": "a"},
            "supervision": supervision,
            "attributes": {},
        },
    }
    if actor is not None:
        claims["act"] = {"sub": actor}
    return AgentPrincipal.from_claims(claims)


def set_payload(event_type: str, subject: str, **body: Any) -> dict[str, Any]:
    return {"sub_id": {"format": "uri", "uri": subject}, "events": {event_type: {"event_timestamp": 1000, **body}}}


def test_session_revoked_refuses_tokens_issued_until_then_as_subject_or_actor() -> None:
    state = SignalState()
    state.apply(set_payload(signals.SESSION_REVOKED, ACTOR_ID))
    assert state.refusal(principal(999, actor=ACTOR_ID)) is not None
    assert state.refusal(principal(1000, actor=ACTOR_ID)) is not None
    assert state.refusal(principal(1001, actor=ACTOR_ID)) is None  # issued after: a recreated agent's token
    assert state.refusal(principal(999)) is None  # the subject itself was not revoked


def test_a_suspended_level_refuses_until_it_changes_back_and_policies_see_the_live_mode() -> None:
    state = SignalState()
    change = {"namespace": signals.SUPERVISION_NAMESPACE, "current_level": "Suspended"}
    state.apply(set_payload(signals.ASSURANCE_LEVEL_CHANGE, AGENT_ID, **change))
    assert state.refusal(principal(5000)) is not None
    state.apply(set_payload(signals.ASSURANCE_LEVEL_CHANGE, AGENT_ID, **{**change, "current_level": "Supervised"}))
    assert state.refusal(principal(5000)) is None
    assert state.live(principal(5000)).supervision is Supervision.SUPERVISED


def test_unknown_events_are_ignored_and_malformed_ones_refused() -> None:
    state = SignalState()
    state.apply({"sub_id": {"format": "opaque", "id": "x"}, "events": {signals.VERIFICATION: {"state": "s"}}})
    assert state.revoked == {}
    assert state.levels == {}
    with pytest.raises(SETError):
        state.apply({"sub_id": {"format": "uri", "uri": AGENT_ID}, "events": {signals.SESSION_REVOKED: {}}})
    with pytest.raises(SETError):
        state.apply({"events": "nope"})
