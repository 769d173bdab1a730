"""Who is calling the introspection endpoint: RFC 7662 §2.1 requires the caller to authenticate.

Called by the HTTP layer before it introspects anything. Two ways in, exactly one per request (RFC 6749 §2.3):
- ``Authorization: Bearer <ServiceAccount token>`` minted for the token service's audience (the issuer URL),
  judged by TokenReview: the usual way for a tool running in the cluster;
- an RFC 7523 §2.2 client assertion (``private_key_jwt``) signed with an agent's own key.
Anyone else gets ``invalid_client``: unauthenticated callers cannot probe tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentid.domain.claims import Refused
from agentid.tokens import verification
from agentid.tokens.exchange import Exchanger
from agentid.tokens.reviews import SERVICE_ACCOUNT_PREFIX, ServiceAccountReviewer

CLIENT_AUTH_FIELDS = ("client_assertion", "client_assertion_type")


class AmbiguousClient(Exception):
    """More than one authentication method in one request (RFC 6749 §2.3 forbids it)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller; ``name`` goes to the audit log."""

    name: str


class IntrospectionClients:
    def __init__(self, *, reviewer: ServiceAccountReviewer, exchanger: Exchanger, max_token_bytes: int) -> None:
        self._reviewer = reviewer
        self._exchanger = exchanger
        self._max_token_bytes = max_token_bytes

    async def authenticate(self, authorization: str | None, form: Mapping[str, Sequence[str]]) -> Caller | None:
        """The caller, or None when it did not (or could not) authenticate. Raises ``AmbiguousClient``."""
        assertion_sent = any(name in form for name in CLIENT_AUTH_FIELDS)
        if authorization is not None:
            if assertion_sent:
                raise AmbiguousClient
            return await self._service_account(authorization)
        if not assertion_sent:
            return None
        try:
            presented = await self._exchanger.authenticate_client(
                _single(form, "client_assertion_type"), _single(form, "client_assertion"), _single(form, "client_id")
            )
        except Refused:
            return None
        return Caller(name=str(presented.agent.status.agent_id))

    async def _service_account(self, authorization: str) -> Caller | None:
        scheme, _, credentials = authorization.partition(" ")
        token = credentials.strip()
        if scheme.lower() != "bearer" or not verification.looks_like_jwt(token, self._max_token_bytes):
            return None
        user = await self._reviewer.review(token)
        if user is None:
            return None
        return Caller(name=f"{SERVICE_ACCOUNT_PREFIX}{user.namespace}:{user.name}")


def _single(form: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None
