"""agentid.verify without a cluster: principals, per-tool rules, the JWKS cache's rate limit, hostile headers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import jwt
import pytest

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import keys
from agentid.verify import (
    AgentPrincipal,
    IntrospectionClient,
    InvalidToken,
    IssuerUnavailable,
    JWKSCache,
    JWTVerifier,
    Policy,
    Rule,
    Supervision,
)
from agentid.verify.audit import decision_record
from agentid.verify.introspection import ClientCredentials
from agentid.verify.principal import MalformedClaims
from agentid.verify.resource import challenge, metadata_url

ISSUER = "https://tokens.example"
TOOL = "https://tool.example/mcp"
KEY = keys.generate(KeyAlgorithm.ES256)
OTHER = keys.generate(KeyAlgorithm.ES256)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "spiffe://cluster.local/ns/finance/agent/triage",
        "aud": TOOL,
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": "j-1",
        "agent": {
            "namespace": "finance",
            "name": "triage",
            "uid": "u-1",
            "owner": {"kind": "User", "name": "alice@example.com"},
            "supervision": "Autonomous",
            "attributes": {"team": "finance"},
        },
    }
    base.update(overrides)
    return base


def principal(supervision: str = "Autonomous", depth: int = 0, **agent: Any) -> AgentPrincipal:
    act: dict[str, Any] | None = None
    for index in range(depth):
        act = {"sub": f"spiffe://cluster.local/ns/finance/agent/actor-{index}", **({"act": act} if act else {})}
    payload = claims(**({"act": act} if act else {}))
    payload["agent"] = {**payload["agent"], "supervision": supervision, **agent}
    return AgentPrincipal.from_claims(payload)


def test_the_library_pulls_in_no_kubernetes_client_kopf_aiohttp_or_pydantic() -> None:
    """What a tool imports: checked in a fresh interpreter, transitive imports included."""
    probe = (
        "import sys, agentid.verify, agentid.verify.asgi; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kopf', 'kubernetes', 'aiohttp', 'pydantic'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


# -- principal ----------------------------------------------------------------------------------------------------


def test_a_principal_carries_agent_owner_supervision_attributes_and_the_act_chain() -> None:
    subject = principal(depth=2)
    assert subject.agent_id.endswith("/agent/triage")
    assert (subject.namespace, subject.name, str(subject.owner)) == ("finance", "triage", "User:alice@example.com")
    assert subject.supervision is Supervision.AUTONOMOUS
    assert subject.attributes == {"team": "finance"}
    assert [actor.agent_id.rsplit("/", 1)[-1] for actor in subject.act_chain] == ["actor-1", "actor-0"]
    assert subject.actor is not None
    assert subject.actor.agent_id.endswith("actor-1")
    assert subject.delegation_depth == 2


@pytest.mark.parametrize(
    "broken",
    [
        {"agent": None},
        {"agent": {"namespace": "a", "name": "b", "uid": "c", "owner": {"kind": "User"}, "supervision": "Autonomous"}},
        {"agent": {**claims()["agent"], "supervision": "Relaxed"}},
        {"agent": {**claims()["agent"], "attributes": {"a": 1}}},
        {"act": {"act": {}}},
        {"act": "nope"},
        {"sub": 7},
    ],
)
def test_claims_that_are_not_an_agent_tokens_are_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(MalformedClaims):
        AgentPrincipal.from_claims(claims(**broken))


# -- policy -------------------------------------------------------------------------------------------------------

POLICY = Policy(
    [
        Rule(name="read", tools=("read_*", "list_*")),
        Rule(
            name="write",
            tools=("write_*",),
            modes=(Supervision.AUTONOMOUS,),
            attributes={"team": "finance"},
            max_delegation_depth=1,
        ),
        Rule(name="admin", tools=("admin_*",), owners=("Group:platform",), agents=("ops/*",)),
    ]
)


def test_supervised_agents_get_read_only_tools() -> None:
    supervised = principal("Supervised")
    assert POLICY.decide(supervised, "read_invoice").allowed
    denied = POLICY.decide(supervised, "write_invoice")
    assert not denied.allowed
    assert denied.reason == "Supervised agents may not use this tool"
    assert POLICY.allowed_tools(supervised, ["read_a", "write_b", "other"]) == ["read_a"]


def test_suspended_agents_get_nothing_whatever_the_rules_say() -> None:
    assert POLICY.decide(principal("Suspended"), "read_invoice").reason == "the agent is suspended"


def test_rules_by_attribute_owner_agent_and_delegation_depth() -> None:
    assert POLICY.decide(principal(), "write_invoice").rule == "write"
    assert not POLICY.decide(principal(attributes={"team": "sales"}), "write_invoice").allowed
    assert not POLICY.decide(principal(depth=2), "write_invoice").allowed
    assert POLICY.decide(principal(depth=1), "write_invoice").allowed
    assert not POLICY.decide(principal(), "admin_reset").allowed
    ops = principal(namespace="ops", owner={"kind": "Group", "name": "platform"})
    assert POLICY.decide(ops, "admin_reset").allowed
    assert POLICY.decide(principal(), "unknown").reason == "no rule grants this tool"


def test_an_audit_record_attributes_the_decision_and_never_holds_the_token() -> None:
    subject = principal(depth=1)
    record = decision_record(subject, "write_invoice", POLICY.decide(subject, "write_invoice"), resource=TOOL)
    assert record["decision"] == "allow"
    assert record["agent"] == "finance/triage"
    assert record["owner"] == "User:alice@example.com"
    assert record["supervision"] == "Autonomous"
    assert record["act_chain"] == ["spiffe://cluster.local/ns/finance/agent/actor-0"]
    assert record["jti"] == "j-1"
    assert "token" not in json.dumps(record).replace("tool", "")


def test_rfc9728_metadata_url_and_challenges() -> None:
    assert metadata_url(TOOL) == "https://tool.example/.well-known/oauth-protected-resource/mcp"
    assert challenge(TOOL) == f'Bearer resource_metadata="{metadata_url(TOOL)}"'
    assert 'error="insufficient_scope"' in challenge(TOOL, "insufficient_scope", 'say "no"')
    assert '"no"' not in challenge(TOOL, "insufficient_scope", 'say "no"')


# -- JWKS cache and the verifier ---------------------------------------------------------------------------------


class Issuer:
    """A discovery document and JWKS served through httpx's MockTransport (the HTTP client is the real one)."""

    def __init__(self) -> None:
        self.published = [KEY]
        self.jwks_requests = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks.json"})
        if request.url.path == "/jwks.json":
            self.jwks_requests += 1
            return httpx.Response(200, json={"keys": [keys.public_only(key.jwk) for key in self.published]})
        return httpx.Response(404)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sign(payload: dict[str, Any], key: keys.SigningKey = KEY, **header: Any) -> str:
    return jwt.encode(payload, key.private_key, algorithm=key.jws_algorithm, headers={"kid": key.key_id, **header})


def make_verifier(issuer: Issuer, clock: Clock) -> JWTVerifier:
    http = httpx.AsyncClient(transport=httpx.MockTransport(issuer.handle))
    cache = JWKSCache(ISSUER, http=http, min_refetch_interval=10, max_age=300, clock=clock)
    return JWTVerifier(issuer=ISSUER, audience=TOOL, keys=cache)


def test_unknown_kids_refetch_the_jwks_at_most_once_per_interval() -> None:
    issuer, clock = Issuer(), Clock()
    verifier = make_verifier(issuer, clock)

    async def scenario() -> None:
        assert (await verifier.verify(sign(claims()))).name == "triage"
        assert issuer.jwks_requests == 1
        rotated = sign(claims(), OTHER)
        for _ in range(20):  # a flood of unknown kids within the interval: no refetch
            with pytest.raises(InvalidToken, match="unknown kid"):
                await verifier.verify(rotated)
        assert issuer.jwks_requests == 1
        issuer.published = [KEY, OTHER]  # the issuer rotated
        clock.now += 10
        assert (await verifier.verify(rotated)).name == "triage"
        assert issuer.jwks_requests == 2

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("alg none", jwt.encode(claims(), None, algorithm="none", headers={"kid": KEY.key_id})),
        ("foreign key under the issuer's kid", sign(claims(), OTHER, kid=KEY.key_id)),
        ("jku header", sign(claims(), jku="https://evil.example/jwks")),
        ("expired beyond the skew", sign(claims(exp=int(time.time()) - 120))),
        ("wrong audience", sign(claims(aud="https://other.example"))),
        ("two audiences", sign(claims(aud=[TOOL, "https://other.example"]))),
        ("wrong issuer", sign(claims(iss="https://evil.example"))),
        ("no agent claim", sign(claims(agent=None))),
        ("typ JWE", sign(claims(), typ="JWE")),
        ("tampered", sign(claims())[:-6] + "AAAAAA"),
    ],
)
def test_hostile_tokens_are_invalid(name: str, token: str) -> None:
    verifier = make_verifier(Issuer(), Clock())
    with pytest.raises(InvalidToken):
        asyncio.run(verifier.verify(token))


def test_rfc9068_access_tokens_are_accepted() -> None:
    verifier = make_verifier(Issuer(), Clock())
    assert asyncio.run(verifier.verify(sign(claims(client_id="x"), typ="at+jwt"))).name == "triage"


def test_symmetric_algorithms_cannot_be_allowed() -> None:
    cache = JWKSCache(ISSUER, http=httpx.AsyncClient())
    with pytest.raises(ValueError, match="asymmetric"):
        JWTVerifier(issuer=ISSUER, audience=TOOL, keys=cache, algorithms=["HS256"])


# -- introspection cache ------------------------------------------------------------------------------------------


class Introspection:
    """An introspection endpoint answering from a dict of token -> answer, counting calls and checking the caller."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.calls = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if request.headers.get("authorization") != "Bearer tool-sa-token":
            return httpx.Response(401, json={"error": "invalid_client"})
        token = dict(httpx.QueryParams(request.content.decode()))["token"]
        return httpx.Response(200, json=self.answers.get(token, {"active": False}))


def live_client(endpoint: Introspection, clock: Clock, **options: Any) -> IntrospectionClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint.handle))
    credentials = ClientCredentials(headers={"Authorization": "Bearer tool-sa-token"}, form={})
    return IntrospectionClient(
        f"{ISSUER}/introspect", http=http, credentials=lambda: credentials, clock=clock, **options
    )


def test_introspection_answers_are_cached_for_the_ttl_never_past_exp_and_bounded() -> None:
    clock = Clock()
    answers = {f"t{i}": {"active": True, "exp": clock.now + 100} for i in range(5)}
    answers["short"] = {"active": True, "exp": clock.now + 2}
    endpoint = Introspection(answers)
    live = live_client(endpoint, clock, ttl=5.0, max_entries=3)

    async def scenario() -> None:
        for _ in range(3):
            await live.introspect("t0")
        assert endpoint.calls == 1  # cached
        clock.now += 5
        await live.introspect("t0")
        assert endpoint.calls == 2  # the TTL passed
        await live.introspect("short")
        clock.now += 2
        await live.introspect("short")
        assert endpoint.calls == 4  # never cached past the token's exp
        for token in ("t1", "t2", "t3", "t4"):
            await live.introspect(token)
        assert len(live) == 3  # bounded

    asyncio.run(scenario())


def test_an_inactive_token_or_an_answer_about_another_token_is_invalid() -> None:
    subject = principal()
    answers = {
        "inactive": {"active": False},
        "other": {"active": True, "jti": "someone-else", "sub": subject.agent_id, "agent": subject.claims["agent"]},
        "live": {
            "active": True,
            "jti": subject.token_id,
            "sub": subject.agent_id,
            "agent": {**subject.claims["agent"], "supervision": "Supervised"},
        },
    }
    live = live_client(Introspection(answers), Clock())

    async def scenario() -> None:
        for token in ("inactive", "other"):
            with pytest.raises(InvalidToken):
                await live.live_principal(token, subject)
        assert (await live.live_principal("live", subject)).supervision is Supervision.SUPERVISED

    asyncio.run(scenario())


def test_a_refused_caller_is_not_an_inactive_token() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(Introspection({}).handle))
    anonymous = ClientCredentials(headers={}, form={})
    live = IntrospectionClient(f"{ISSUER}/introspect", http=http, credentials=lambda: anonymous)
    with pytest.raises(IssuerUnavailable):
        asyncio.run(live.introspect("t0"))
