"""ServiceAccount tokens verified by the apiserver (TokenReview), with a short cache keyed by a token hash.

Called by the exchange handler for subject and actor tokens that are not agent tokens. The apiserver is the only
judge of a ServiceAccount token (bound Pod/Secret deleted, ServiceAccount recreated, expiry); the cache keeps
that judgement at most ``ttl`` seconds (docs/security.md: ≤ 10 s), never past the token's own expiry, and drops it
the moment the agent bound to that ServiceAccount changes. Tokens themselves are never stored, only SHA-256.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jwt

from agentid.api.v1alpha1 import AgentIdentity
from agentid.kube.client import KubeClient
from agentid.kube.resources import TOKEN_REVIEWS

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class ServiceAccountUser:
    namespace: str
    name: str
    uid: str


@dataclass
class _Entry:
    user: ServiceAccountUser
    expires: float
    routed: bool  # reviewed for a token exchange, which sends a token here only after reading its issuer


class ServiceAccountReviewer:
    def __init__(
        self,
        client: KubeClient,
        *,
        audiences: Sequence[str],
        ttl: float = 10.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._audiences = list(audiences)
        self._ttl = min(ttl, 10.0)
        self._max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()
        self._by_service_account: dict[str, set[bytes]] = collections.defaultdict(set)
        self.reviews = 0  # TokenReviews sent (metrics, benchmarks)

    async def review(self, token: str, *, routed: bool = False) -> ServiceAccountUser | None:
        """The ServiceAccount the token authenticates with one of our audiences, or None. ``routed``: the token
        exchange sent it here by its issuer (``recall`` then answers for the same token without reading it)."""
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._cache.get(digest)
        now = self._clock()
        if entry is not None:
            if entry.expires > now:
                self._cache.move_to_end(digest)
                entry.routed = entry.routed or routed
                return entry.user
            self._forget(digest)
        self.reviews += 1
        status = await self._client.create_review(TOKEN_REVIEWS, {"token": token, "audiences": self._audiences})
        user = _service_account_user(status, self._audiences)
        if user is not None:
            self._remember(digest, _Entry(user, now + self._lifetime(token), routed))
        return user

    def recall(self, token: str) -> ServiceAccountUser | None:
        """A live judgement of this very token that a token exchange asked for, or None (then route and ``review``).

        The same bytes have the same issuer and passed the same shape checks, so a warm exchange skips reading the
        token again (a twentieth of its CPU, profiled); the entry's lifetime and LRU order are ``review``'s."""
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._cache.get(digest)
        if entry is None or not entry.routed or entry.expires <= self._clock():
            return None
        self._cache.move_to_end(digest)
        return entry.user

    def forget_service_account(self, uid: str | None) -> None:
        for digest in list(self._by_service_account.pop(uid or "", ())):
            self._cache.pop(digest, None)

    def on_agent_change(self, old: AgentIdentity | None, new: AgentIdentity | None) -> None:
        """AgentCache listener: any change of an agent drops what we cached for its ServiceAccount(s)."""
        for agent in (old, new):
            if agent is not None:
                self.forget_service_account(agent.status.service_account_uid)

    def __len__(self) -> int:
        return len(self._cache)

    def _lifetime(self, token: str) -> float:
        """At most ttl, and never beyond the token's own exp (read unverified: it can only shorten the entry)."""
        try:
            exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        except (jwt.PyJWTError, ValueError, RecursionError):
            return 0.0
        if not isinstance(exp, int | float):
            return 0.0
        return max(0.0, min(self._ttl, float(exp) - self._wall_clock()))

    def _remember(self, digest: bytes, entry: _Entry) -> None:
        if entry.expires <= self._clock():
            return
        self._cache[digest] = entry
        self._by_service_account[entry.user.uid].add(digest)
        while len(self._cache) > self._max_entries:
            oldest, _ = next(iter(self._cache.items()))
            self._forget(oldest)

    def _forget(self, digest: bytes) -> None:
        entry = self._cache.pop(digest, None)
        if entry is not None:
            holders = self._by_service_account.get(entry.user.uid)
            if holders is not None:
                holders.discard(digest)
                if not holders:
                    del self._by_service_account[entry.user.uid]


def _service_account_user(  # noqa: PLR0911 - one check per line
    status: dict[str, object], audiences: Sequence[str]
) -> ServiceAccountUser | None:
    if status.get("authenticated") is not True:
        return None
    granted = status.get("audiences")
    if not isinstance(granted, list) or not set(granted) & set(audiences):
        return None
    user = status.get("user")
    if not isinstance(user, dict):
        return None
    username, uid = user.get("username"), user.get("uid")
    if not isinstance(username, str) or not isinstance(uid, str) or not uid:
        return None
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, _, name = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    if not namespace or not name:
        return None
    return ServiceAccountUser(namespace=namespace, name=name, uid=uid)
