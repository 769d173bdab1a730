"""The token Exchanger's decisions with its collaborators faked (the TokenReview answer, the agent cache, the
issuer key): who gets a token for which ServiceAccount, and every refusal with its RFC error. The same paths
against the real apiserver: tests/integration/test_token_exchange.py and test_token_refusals.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jwt
import pytest

from agentid.domain import claims, issuer_keys, keys
from agentid.domain.claims import Error, Reason, Refused
from agentid.tokens import accounts, verification
from agentid.tokens.agents import AgentCache
from agentid.tokens.exchange import Exchanger, ExchangeRequest
from agentid.tokens.keyring import IssuerKeyring
from agentid.tokens.reviews import ServiceAccountUser
from agentid.tokens.settings import TokenServiceSettings
from tests.support.agents import agent_manifest

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
ISSUER = "https://tokens.example"
MCP = "https://mcp.example"
AGENT_ID = "spiffe://cluster.local/ns/team/agent/triage"


class RecordingReviewer:
    """TokenReview as the apiserver would answer it: the token names one ServiceAccount, or none."""

    def __init__(self, users: dict[str, ServiceAccountUser]) -> None:
        self.users = users
        self.reviewed: list[str] = []

    async def review(self, token: str, *, routed: bool = False) -> ServiceAccountUser | None:
        self.reviewed.append(token)
        return self.users.get(token)

    def recall(self, token: str) -> ServiceAccountUser | None:
        return None  # no cache: every exchange routes and reviews


def _agent(**spec: Any) -> dict[str, Any]:
    body = agent_manifest("triage", "team", credentials={"audiences": [MCP]}, **spec)
    body["metadata"].update({"uid": "uid-triage", "generation": 1, "resourceVersion": "1"})
    body["status"] = {
        "observedGeneration": 1,
        "phase": "Suspended" if spec.get("supervision", {}).get("mode") == "Suspended" else "Active",
        "agentID": AGENT_ID,
        "serviceAccountName": "triage-agent",
        "serviceAccountUID": "sa-uid",
    }
    return body


class MemoryReplay:
    """The replay guard's contract, in memory (the shared one claims a Lease in the apiserver)."""

    def __init__(self) -> None:
        self.guard = verification.ReplayGuard(clock=NOW.timestamp)

    async def first_use(self, issuer: str, jti: str, exp: float) -> bool:
        return self.guard.first_use(issuer, jti, exp)


def _service_account(agent: dict[str, Any]) -> dict[str, Any]:
    """The agent's ServiceAccount as the operator creates it: controlled by the agent's UID."""
    owner = {"apiVersion": "agentid.dev/v1alpha1", "kind": "AgentIdentity", "name": "triage", "controller": True}
    return {
        "metadata": {
            "name": "triage-agent",
            "namespace": "team",
            "uid": "sa-uid",
            "ownerReferences": [{**owner, "uid": agent["metadata"]["uid"]}],
        }
    }


def _exchanger(body: dict[str, Any], users: dict[str, ServiceAccountUser]) -> tuple[Exchanger, RecordingReviewer]:
    cache = AgentCache()
    cache.upsert(body)
    known = accounts.AccountCache()
    known.upsert(accounts.project(_service_account(body)))
    keyring = IssuerKeyring(None, namespace="agentid", secret_name="issuer", policy=issuer_keys.RotationPolicy())  # type: ignore[arg-type]
    keyring._ring = issuer_keys.plan([], NOW, keyring.policy, keys.generate)
    reviewer = RecordingReviewer(users)
    exchanger = Exchanger(
        settings=TokenServiceSettings(issuer=ISSUER),
        agents=cache,
        accounts=known,
        keyring=keyring,
        reviewer=reviewer,  # type: ignore[arg-type]
        replay=MemoryReplay(),  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    return exchanger, reviewer


def _request(token: str, **extra: Any) -> ExchangeRequest:
    return ExchangeRequest(
        grant_type=claims.GRANT_TOKEN_EXCHANGE,
        subject_token=token,
        subject_token_type=claims.TOKEN_TYPE_JWT,
        **extra,
    )


OWN = ServiceAccountUser("team", "triage-agent", "sa-uid")
# JWT-shaped like a ServiceAccount token (what the apiserver issues); only the fake TokenReview vouches for it.
SA_TOKEN = jwt.encode({"iss": "https://kubernetes.default.svc", "sub": "sa"}, "not-the-apiservers-key-but-long-enough")
FORGED = jwt.encode({"iss": "https://kubernetes.default.svc", "sub": "x"}, "someone-elses-key-long-enough-for-hs256")


async def test_the_agents_own_service_account_token_gets_an_agent_token() -> None:
    exchanger, reviewer = _exchanger(_agent(), {SA_TOKEN: OWN})
    issued = await exchanger.exchange(_request(SA_TOKEN, audiences=(MCP,)))
    assert reviewer.reviewed == [SA_TOKEN]
    assert issued.claims["sub"] == AGENT_ID
    assert issued.claims["agent"]["uid"] == "uid-triage"
    assert claims.audiences_of(issued.claims) == [MCP]
    header = jwt.get_unverified_header(issued.token)
    assert header["typ"] == "JWT"


async def test_the_agent_claim_follows_every_change_of_the_agent() -> None:
    exchanger, _ = _exchanger(_agent(attributes={"team": "red"}), {SA_TOKEN: OWN})
    first = await exchanger.exchange(_request(SA_TOKEN, audiences=(MCP,)))
    assert first.claims["agent"] == claims.agent_claim(exchanger._agents.get("team", "triage"))  # type: ignore[arg-type]
    assert (await exchanger.exchange(_request(SA_TOKEN, audiences=(MCP,)))).claims["agent"] == first.claims["agent"]
    exchanger._agents.upsert(_agent(attributes={"team": "blue"}, supervision={"mode": "Supervised"}))
    later = await exchanger.exchange(_request(SA_TOKEN, audiences=(MCP,)))
    assert later.claims["agent"]["attributes"] == {"team": "blue"}
    assert later.claims["agent"]["supervision"] == "Supervised"
    assert first.claims["agent"]["attributes"] == {"team": "red"}  # an issued token's claims never change


@pytest.mark.parametrize(
    "user",
    [
        ServiceAccountUser("team", "triage-agent", "another-uid"),  # same name, another ServiceAccount (a stranger)
        ServiceAccountUser("team", "other-agent", "sa-uid"),  # the UID, but not under the agent's name
        ServiceAccountUser("elsewhere", "triage-agent", "sa-uid"),  # the UID, but another namespace
    ],
)
async def test_a_service_account_is_matched_by_uid_name_and_namespace_together(user: ServiceAccountUser) -> None:
    exchanger, _ = _exchanger(_agent(), {SA_TOKEN: user})
    with pytest.raises(Refused) as refused:
        await exchanger.exchange(_request(SA_TOKEN, audiences=(MCP,)))
    assert refused.value.error is Error.INVALID_REQUEST  # RFC 8693 §2.2.2: an invalid subject_token


async def test_a_token_the_apiserver_does_not_authenticate_is_refused_without_a_lookup() -> None:
    exchanger, reviewer = _exchanger(_agent(), {})
    with pytest.raises(Refused) as refused:
        await exchanger.exchange(_request(FORGED))
    assert refused.value.error is Error.INVALID_REQUEST
    assert reviewer.reviewed == [FORGED]


async def test_a_suspended_agent_gets_nothing() -> None:
    exchanger, _ = _exchanger(_agent(supervision={"mode": "Suspended"}), {SA_TOKEN: OWN})
    with pytest.raises(Refused) as refused:
        await exchanger.exchange(_request(SA_TOKEN, audiences=(MCP,)))
    assert (refused.value.error, refused.value.reason) == (Error.INVALID_GRANT, Reason.SUSPENDED)


async def test_an_audience_the_agent_does_not_declare_is_invalid_target() -> None:
    exchanger, _ = _exchanger(_agent(), {SA_TOKEN: OWN})
    with pytest.raises(Refused) as refused:
        await exchanger.exchange(_request(SA_TOKEN, audiences=("https://evil.example",)))
    assert (refused.value.error, refused.value.reason) == (Error.INVALID_TARGET, Reason.AUDIENCE_NOT_ALLOWED)


async def test_malformed_requests_are_invalid_request() -> None:
    exchanger, reviewer = _exchanger(_agent(), {SA_TOKEN: OWN})
    for request in (
        ExchangeRequest(grant_type=claims.GRANT_TOKEN_EXCHANGE),
        ExchangeRequest(grant_type=claims.GRANT_TOKEN_EXCHANGE, subject_token=SA_TOKEN, subject_token_type="saml"),
    ):
        with pytest.raises(Refused) as refused:
            await exchanger.exchange(request)
        assert refused.value.error is Error.INVALID_REQUEST
    assert reviewer.reviewed == []
