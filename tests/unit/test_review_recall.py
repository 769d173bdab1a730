"""The TokenReview cache's ``recall``: a warm token exchange skips reading the token again only for a judgement the
apiserver gave within the cache's lifetime for a token the exchange itself routed to it (other callers' reviews,
expired entries and entries dropped for an agent change are not recalled)."""

from __future__ import annotations

import time
from typing import Any

import jwt

from agentid.tokens.reviews import ServiceAccountReviewer

AUDIENCE = "https://tokens.example"
TOKEN = jwt.encode({"iss": "https://kubernetes.default.svc", "exp": int(time.time()) + 3600}, "k" * 32)


class FakeApiserver:
    """TokenReview: every token authenticates as the ServiceAccount team/triage-agent."""

    def __init__(self) -> None:
        self.reviews = 0

    async def create_review(self, resource: Any, spec: dict[str, Any]) -> dict[str, Any]:
        self.reviews += 1
        user = {"username": "system:serviceaccount:team:triage-agent", "uid": "sa-uid"}
        return {"authenticated": True, "audiences": [AUDIENCE], "user": user}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _reviewer(clock: Clock) -> tuple[ServiceAccountReviewer, FakeApiserver]:
    apiserver = FakeApiserver()
    reviewer = ServiceAccountReviewer(apiserver, audiences=[AUDIENCE], ttl=10.0, clock=clock)  # type: ignore[arg-type]
    return reviewer, apiserver


async def test_a_token_the_exchange_routed_is_recalled_until_the_entry_expires() -> None:
    clock = Clock()
    reviewer, apiserver = _reviewer(clock)
    assert reviewer.recall(TOKEN) is None  # never reviewed
    user = await reviewer.review(TOKEN, routed=True)
    assert user is not None
    assert reviewer.recall(TOKEN) == user
    clock.now += 10.5
    assert reviewer.recall(TOKEN) is None  # the TTL still bounds the judgement
    assert apiserver.reviews == 1


async def test_a_review_for_another_caller_is_not_recalled_until_an_exchange_routes_the_token() -> None:
    reviewer, apiserver = _reviewer(Clock())
    assert await reviewer.review(TOKEN) is not None  # e.g. an introspection caller's bearer token
    assert reviewer.recall(TOKEN) is None  # its issuer was never read: the exchange must route it first
    assert await reviewer.review(TOKEN, routed=True) is not None  # answered from the cache...
    assert apiserver.reviews == 1
    assert reviewer.recall(TOKEN) is not None  # ...and now routed


async def test_an_agent_change_drops_what_recall_would_answer() -> None:
    reviewer, _ = _reviewer(Clock())
    await reviewer.review(TOKEN, routed=True)
    reviewer.forget_service_account("sa-uid")
    assert reviewer.recall(TOKEN) is None
