"""RFC 7662 introspection of agent tokens against live agent state.

Called by the HTTP layer once the caller has authenticated (``tokens.clients``). A token past its ``exp`` is
inactive at once: the skew allowance is for tokens from other clocks, never for the issuer's own.
A token is active only if it verifies (issuer key still published, not expired, right
issuer) *and* the agent it names still exists with the same UID and may hold tokens right now *and* every actor
of its delegation chain is live and still allowed *and* neither it nor a token it was exchanged from was revoked
(RFC 7009). Anything else is ``{"active": false}`` with no other member, so
a suspension or revocation shows here the moment the token service's watch sees the spec change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from agentid import audit, metrics
from agentid.api.v1alpha1 import AgentIdentity
from agentid.domain import claims
from agentid.domain import clock as wall_clock
from agentid.domain.claims import Refused
from agentid.tokens.agents import AgentCache
from agentid.tokens.exchange import agent_of_token
from agentid.tokens.keyring import IssuerKeyring
from agentid.tokens.revocations import RevocationStore
from agentid.tokens.settings import TokenServiceSettings

INACTIVE: dict[str, Any] = {"active": False}
_REPORTED = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "act")


class Introspector:
    def __init__(
        self,
        *,
        settings: TokenServiceSettings,
        agents: AgentCache,
        keyring: IssuerKeyring,
        revocations: RevocationStore | None = None,
        clock: Callable[[], dt.datetime] = wall_clock.now,
    ) -> None:
        self._revocations = revocations
        self._settings = settings
        self._agents = agents
        self._keyring = keyring
        self._clock = clock

    def introspect(self, token: str, *, caller: str | None = None) -> dict[str, Any]:
        response = self._introspect(token, caller)
        metrics.INTROSPECTIONS.labels(active=str(response["active"]).lower()).inc()
        return response

    def _introspect(self, token: str, caller: str | None) -> dict[str, Any]:
        limit = self._settings.limits.max_token_bytes
        try:
            verified = self._keyring.verify_issued(token, issuer=self._settings.issuer, max_bytes=limit)
            chain = claims.act_chain(verified.claims.get("act"))
            revoked = self._revoked(verified.claims)
        except Refused:
            return dict(INACTIVE)
        payload = verified.claims
        agent = agent_of_token(self._agents, payload)
        now = self._clock()
        if revoked or agent is None or not claims.is_live(agent, now) or not self._actor_live(agent, chain, now):
            reason = (
                "revoked" if revoked else "unknown agent" if agent is None else "agent or actor may not hold tokens"
            )
            audit.record(
                "token.introspection.inactive",
                outcome="inactive",
                jti=payload.get("jti"),
                agent_id=payload.get("sub"),
                reason=reason,
                client=caller,
            )
            return dict(INACTIVE)
        response: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        response.update({name: payload[name] for name in _REPORTED if name in payload})
        response["agent"] = claims.agent_claim(agent)  # live supervision, not the one at issuance
        return response

    def _actor_live(self, subject: AgentIdentity, chain: list[claims.Actor], now: dt.datetime) -> bool:
        """Every actor of the chain must still exist, be live and be allowed: a revoked or suspended agent anywhere
        in the chain voids the token (the cascade), not only when it is the current actor."""
        if not chain:
            return True
        try:
            claims.check_chain(subject, chain)
        except Refused:
            return False
        for link in chain:
            actor = self._agents.by_uid(link.uid) if link.uid else None
            if actor is None or actor.status.agent_id != link.sub or not claims.is_live(actor, now):
                return False
        return True

    def _revoked(self, payload: dict[str, Any]) -> bool:
        """RFC 7009: the token itself or any token it was exchanged from was revoked."""
        if self._revocations is None:
            return False
        return any(self._revocations.is_revoked(jti) for jti in (payload.get("jti"), *claims.ancestors_of(payload)))
