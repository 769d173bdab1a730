"""Live checks against the token service's RFC 7662 introspection endpoint, with a bounded cache.

Called by ``Verifier`` after local verification when the tool wants revocation and suspension to bite within
seconds rather than at the token's expiry: the answer carries the agent's *live* supervision mode. The tool
authenticates itself (RFC 7662 §2.1) with its own ServiceAccount token (read from the projected file on every
call, since kubelet rotates it) or with an agent-signed client assertion. Answers are cached by a SHA-256 of the
token (never the token itself) for at most ``ttl`` seconds and never past the token's ``exp``; the cache holds at
most ``max_entries``.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agentid.verify.errors import InvalidToken, IssuerUnavailable
from agentid.verify.principal import AgentPrincipal, MalformedClaims

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class ClientCredentials:
    """How the tool authenticates to the introspection endpoint: headers and form fields to add."""

    headers: Mapping[str, str]
    form: Mapping[str, str]


Credentials = Callable[[], ClientCredentials]


def service_account_credentials(path: str | Path) -> Credentials:
    """Authenticate with a projected ServiceAccount token (audience: the token service's issuer URL)."""

    def credentials() -> ClientCredentials:
        token = Path(path).read_text().strip()  # small file on tmpfs; re-read because kubelet rotates it
        return ClientCredentials(headers={"Authorization": f"Bearer {token}"}, form={})

    return credentials


def client_assertion_credentials(assertion: Callable[[], str]) -> Credentials:
    """Authenticate with an RFC 7523 client assertion (a fresh one per call: the service accepts each once)."""

    def credentials() -> ClientCredentials:
        form = {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion()}
        return ClientCredentials(headers={}, form=form)

    return credentials


@dataclass
class _Entry:
    answer: dict[str, Any]
    until: float


class IntrospectionClient:
    def __init__(
        self,
        endpoint: str,
        *,
        http: httpx.AsyncClient,
        credentials: Credentials,
        ttl: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self._http = http
        self._credentials = credentials
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._cache: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()
        self.calls = 0  # round trips to the token service (tests and benchmarks read it)

    def __len__(self) -> int:
        """Answers cached right now."""
        return len(self._cache)

    async def introspect(self, token: str) -> dict[str, Any]:
        """The RFC 7662 answer (cached). Raises ``IssuerUnavailable`` when the service cannot answer."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        entry = self._cache.get(digest)
        if entry is not None and entry.until > now:
            self._cache.move_to_end(digest)
            return entry.answer
        answer = await self._ask(token)
        exp = answer.get("exp")
        until = min(now + self._ttl, float(exp)) if isinstance(exp, int | float) else now + self._ttl
        if until > now:
            self._cache[digest] = _Entry(answer, until)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return answer

    async def live_principal(self, token: str, principal: AgentPrincipal) -> AgentPrincipal:
        """The locally verified principal, with the live agent claim; ``InvalidToken`` if no longer active."""
        answer = await self.introspect(token)
        if answer.get("active") is not True:
            raise InvalidToken("inactive at the token service")
        if answer.get("jti") != principal.token_id or answer.get("sub") != principal.agent_id:
            raise InvalidToken("introspection describes another token")
        try:
            return AgentPrincipal.from_claims({**principal.claims, "agent": answer.get("agent")})
        except MalformedClaims as error:
            raise InvalidToken(f"introspection answer unusable: {error}") from None

    async def _ask(self, token: str) -> dict[str, Any]:
        credentials = self._credentials()
        self.calls += 1
        try:
            response = await self._http.post(
                self.endpoint,
                data={"token": token, **credentials.form},
                headers={"Accept": "application/json", **credentials.headers},
            )
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise IssuerUnavailable(f"introspection failed: {type(error).__name__}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            raise IssuerUnavailable("introspection answered without a boolean active")
        return answer
