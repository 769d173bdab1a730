"""Pure rules of agent tokens: who may hold them, audiences, lifetimes, delegation chains, the claims."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agentid.api.v1alpha1 import AgentIdentity, SupervisionMode
from agentid.domain import claims
from agentid.domain.claims import Actor, Error, Reason, Refused
from tests.support.agents import agent_manifest

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
ISSUER = "https://tokens.example"


def agent(
    name: str = "triage",
    namespace: str = "finance",
    *,
    status: dict[str, Any] | None = None,
    uid: str | None = None,
    deleting: bool = False,
    **spec: Any,
) -> AgentIdentity:
    body = agent_manifest(name, namespace, **spec)
    body["metadata"]["uid"] = uid or f"uid-{name}"
    if deleting:
        body["metadata"]["deletionTimestamp"] = NOW.isoformat()
    body["status"] = {
        "phase": "Active",
        "agentID": f"spiffe://cluster.local/ns/{namespace}/agent/{name}",
        "serviceAccountName": f"{name}-agent",
        "serviceAccountUID": f"sa-{name}",
        "supervision": spec.get("supervision", {}).get("mode", "Autonomous"),
        **(status or {}),
    }
    return AgentIdentity.from_body(body)


def refusal(call: Any) -> Refused:
    with pytest.raises(Refused) as raised:
        call()
    return raised.value


# -- eligibility --------------------------------------------------------------------------------------------------


def test_an_active_agent_may_get_tokens() -> None:
    claims.check_may_get_tokens(agent(), NOW)
    assert claims.is_live(agent(), NOW)


@pytest.mark.parametrize(
    ("spec", "status", "reason"),
    [
        ({"supervision": {"mode": "Suspended"}}, {}, Reason.SUSPENDED),
        ({}, {"phase": "Suspended"}, Reason.SUSPENDED),
        ({"revoked": True}, {}, Reason.REVOKED),
        ({}, {"phase": "Revoked"}, Reason.REVOKED),
        ({"expiresAt": "2026-11-29T11:59:59Z"}, {}, Reason.EXPIRED),
        ({}, {"phase": "Expired"}, Reason.EXPIRED),
        ({}, {"phase": "Failed"}, Reason.FAILED),
        ({}, {"phase": "Pending"}, Reason.NOT_PROVISIONED),
        ({}, {"agentID": None}, Reason.NOT_PROVISIONED),
    ],
    ids=[
        "suspended in spec (before the operator reconciles)",
        "suspended in status",
        "revoked in spec",
        "revoked in status",
        "expiresAt passed",
        "phase Expired",
        "phase Failed",
        "not provisioned yet",
        "no agent ID yet",
    ],
)
def test_agents_that_may_not_hold_tokens_are_refused_with_invalid_grant(
    spec: dict[str, Any], status: dict[str, Any], reason: Reason
) -> None:
    subject = agent(status=status, **spec)
    refused = refusal(lambda: claims.check_may_get_tokens(subject, NOW))
    assert (refused.error, refused.reason) == (Error.INVALID_GRANT, reason)
    assert not claims.is_live(subject, NOW)


def test_an_agent_being_deleted_may_not_get_tokens() -> None:
    assert refusal(lambda: claims.check_may_get_tokens(agent(deleting=True), NOW)).reason is Reason.DELETING


def test_a_resumed_agent_stays_refused_until_the_operator_has_restored_it() -> None:
    resumed = agent(supervision={"mode": "Autonomous"}, status={"phase": "Suspended", "supervision": "Suspended"})
    assert refusal(lambda: claims.check_may_get_tokens(resumed, NOW)).reason is Reason.SUSPENDED


def test_effective_supervision_is_the_most_restrictive_of_spec_and_status() -> None:
    downgraded = agent(supervision={"mode": "Supervised"}, status={"supervision": "Autonomous"})
    promoted = agent(supervision={"mode": "Autonomous"}, status={"supervision": "Supervised"})
    assert claims.effective_supervision(downgraded) is SupervisionMode.SUPERVISED
    assert claims.effective_supervision(promoted) is SupervisionMode.SUPERVISED
    assert claims.effective_supervision(agent()) is SupervisionMode.AUTONOMOUS


# -- audience ----------------------------------------------------------------------------------------------------

AUDIENCES = {"credentials": {"audiences": ["https://mcp.example", "https://crm.example"]}}


def test_the_requested_audience_is_granted_when_the_agent_declares_it() -> None:
    subject = agent(**AUDIENCES)
    assert claims.choose_audience(subject, ["https://mcp.example"], issuer=ISSUER) == ["https://mcp.example"]


def test_without_a_requested_audience_the_token_gets_the_declared_ones() -> None:
    subject = agent(**AUDIENCES)
    assert claims.choose_audience(subject, [], issuer=ISSUER) == ["https://crm.example", "https://mcp.example"]


def test_the_token_service_itself_is_always_a_permitted_audience() -> None:
    assert claims.choose_audience(agent(), [ISSUER], issuer=ISSUER) == [ISSUER]


def test_an_undeclared_audience_is_refused_with_invalid_target() -> None:
    refused = refusal(lambda: claims.choose_audience(agent(**AUDIENCES), ["https://evil.example"], issuer=ISSUER))
    assert (refused.error, refused.reason) == (Error.INVALID_TARGET, Reason.AUDIENCE_NOT_ALLOWED)


def test_an_agent_without_audiences_and_no_request_is_refused_with_invalid_target() -> None:
    refused = refusal(lambda: claims.choose_audience(agent(), [], issuer=ISSUER))
    assert (refused.error, refused.reason) == (Error.INVALID_TARGET, Reason.NO_AUDIENCE)


def test_exchanging_an_agent_token_never_widens_its_audience() -> None:
    subject = agent(**AUDIENCES)
    ceiling = ["https://mcp.example"]
    assert claims.choose_audience(subject, [], issuer=ISSUER, ceiling=ceiling) == ceiling
    refused = refusal(lambda: claims.choose_audience(subject, ["https://crm.example"], issuer=ISSUER, ceiling=ceiling))
    assert (refused.error, refused.reason) == (Error.INVALID_TARGET, Reason.AUDIENCE_WIDENED)


# -- lifetime ----------------------------------------------------------------------------------------------------


def test_the_default_lifetime_is_the_agents_token_ttl() -> None:
    subject = agent(credentials={"tokenTTL": "10m"})
    assert claims.choose_lifetime(subject, None, now=NOW) == dt.timedelta(minutes=10)


def test_a_shorter_lifetime_may_be_requested_but_not_a_longer_one() -> None:
    subject = agent(credentials={"tokenTTL": "10m"})
    assert claims.choose_lifetime(subject, dt.timedelta(minutes=2), now=NOW) == dt.timedelta(minutes=2)
    refused = refusal(lambda: claims.choose_lifetime(subject, dt.timedelta(minutes=11), now=NOW))
    assert (refused.error, refused.reason) == (Error.INVALID_REQUEST, Reason.LIFETIME_TOO_LONG)


def test_a_token_never_outlives_the_agent_or_the_token_it_was_exchanged_from() -> None:
    expiring = agent(credentials={"tokenTTL": "1h"}, expiresAt="2026-11-29T12:05:00Z")
    assert claims.choose_lifetime(expiring, None, now=NOW) == dt.timedelta(minutes=5)
    parent_expiry = NOW + dt.timedelta(minutes=3)
    assert claims.choose_lifetime(agent(), None, now=NOW, not_after=[parent_expiry]) == dt.timedelta(minutes=3)


# -- delegation --------------------------------------------------------------------------------------------------

ORCHESTRATOR = agent("orchestrator")
PLANNER = agent("planner", namespace="planning")


def delegating(max_depth: int = 1) -> AgentIdentity:
    return agent(
        delegation={
            "allowedActors": [{"name": "orchestrator"}, {"name": "planner", "namespace": "planning"}],
            "maxDepth": max_depth,
        }
    )


def test_an_allowed_actor_may_act_for_the_subject() -> None:
    claims.check_delegation(delegating(), ORCHESTRATOR, [])


def test_an_actor_not_in_allowed_actors_is_refused() -> None:
    stranger = agent("stranger")
    refused = refusal(lambda: claims.check_delegation(delegating(), stranger, []))
    assert (refused.error, refused.reason) == (Error.INVALID_GRANT, Reason.ACTOR_NOT_ALLOWED)


def test_allowed_actors_default_to_the_subjects_namespace() -> None:
    same_name_elsewhere = agent("orchestrator", namespace="elsewhere")
    assert refusal(lambda: claims.check_delegation(delegating(), same_name_elsewhere, [])).reason is (
        Reason.ACTOR_NOT_ALLOWED
    )


def test_a_chain_longer_than_max_depth_is_refused() -> None:
    prior = [Actor.of(PLANNER)]
    claims.check_delegation(delegating(max_depth=2), ORCHESTRATOR, prior)
    refused = refusal(lambda: claims.check_delegation(delegating(max_depth=1), ORCHESTRATOR, prior))
    assert (refused.error, refused.reason) == (Error.INVALID_GRANT, Reason.CHAIN_TOO_DEEP)


def test_an_actor_removed_from_allowed_actors_breaks_the_chains_it_is_in() -> None:
    prior = [Actor.of(agent("former"))]
    refused = refusal(lambda: claims.check_delegation(delegating(max_depth=3), ORCHESTRATOR, prior))
    assert refused.reason is Reason.ACTOR_NOT_ALLOWED


def test_act_claims_nest_with_the_current_actor_outermost_and_flatten_back() -> None:
    first = Actor.of(PLANNER).claim()
    second = Actor.of(ORCHESTRATOR).claim(first)
    chain = claims.act_chain(second)
    assert [link.sub for link in chain] == [ORCHESTRATOR.status.agent_id, PLANNER.status.agent_id]
    assert chain[0] == Actor.of(ORCHESTRATOR)


@pytest.mark.parametrize("act", ["someone", {"no": "sub"}, {"sub": 7}], ids=["a string", "no sub", "sub not a string"])
def test_a_malformed_act_claim_is_an_invalid_token(act: Any) -> None:
    assert refusal(lambda: claims.act_chain(act)).reason is Reason.INVALID_TOKEN


def test_a_hostile_deeply_nested_act_claim_is_refused_without_walking_it() -> None:
    act: dict[str, Any] = {"sub": "x"}
    for _ in range(10_000):
        act = {"sub": "x", "act": act}
    assert refusal(lambda: claims.act_chain(act)).reason is Reason.CHAIN_TOO_DEEP


# -- claims ------------------------------------------------------------------------------------------------------


def test_claims_carry_identity_owner_supervision_attributes_and_the_chain() -> None:
    subject = agent(supervision={"mode": "Supervised"}, attributes={"costCenter": "4711"})
    act = Actor.of(ORCHESTRATOR).claim()
    payload = claims.build_claims(
        subject,
        issuer=ISSUER,
        audience=["https://mcp.example"],
        issued_at=NOW,
        lifetime=dt.timedelta(minutes=15),
        jti="j-1",
        act=act,
    )
    iat = int(NOW.timestamp())
    assert payload == {
        "iss": ISSUER,
        "sub": "spiffe://cluster.local/ns/finance/agent/triage",
        "aud": "https://mcp.example",
        "exp": iat + 900,
        "iat": iat,
        "nbf": iat,
        "jti": "j-1",
        "agent": {
            "namespace": "finance",
            "name": "triage",
            "uid": "uid-triage",
            "owner": {"kind": "User", "name": "alice@example.com"},
            "supervision": "Supervised",
            "attributes": {"costCenter": "4711"},
        },
        "act": {
            "sub": "spiffe://cluster.local/ns/finance/agent/orchestrator",
            "agent": {"namespace": "finance", "name": "orchestrator", "uid": "uid-orchestrator"},
        },
    }


def test_several_audiences_are_an_array() -> None:
    payload = claims.build_claims(
        agent(), issuer=ISSUER, audience=["a", "b"], issued_at=NOW, lifetime=dt.timedelta(minutes=1), jti="j"
    )
    assert payload["aud"] == ["a", "b"]
    assert claims.audiences_of(payload) == ["a", "b"]
