"""RFC 7662 introspection of agent tokens against live agent state.

Called by the HTTP layer once the caller has authenticated (``tokens.clients``). A token past its ``exp`` is
inactive at once: the skew allowance is for tokens from other clocks, never for the issuer's own.
A token is active only if it verifies (issuer key still published, not expired, right
issuer) *and* the agent it names still exists with the same UID and may hold tokens right now *and* its current
actor (if delegated) is live and still allowed. Anything else is ``{"active": false}`` with no other member, so
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
        clock: Callable[[], dt.datetime] = wall_clock.now,
    ) -> None:
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
        except Refused:
            return dict(INACTIVE)
        payload = verified.claims
        agent = agent_of_token(self._agents, payload)
        now = self._clock()
        if agent is None or not claims.is_live(agent, now) or not self._actor_live(agent, chain, now):
            audit.record(
                "token.introspection.inactive",
                outcome="inactive",
                jti=payload.get("jti"),
                agent_id=payload.get("sub"),
                reason="unknown agent" if agent is None else "agent or actor may not hold tokens",
                client=caller,
            )
            return dict(INACTIVE)
        response: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        response.update({name: payload[name] for name in _REPORTED if name in payload})
        response["agent"] = claims.agent_claim(agent)  # live supervision, not the one at issuance
        return response

    def _actor_live(self, subject: AgentIdentity, chain: list[claims.Actor], now: dt.datetime) -> bool:
        """Authorisation uses ``sub`` and the current actor: that actor must be live and still allowed."""
        if not chain:
            return True
        try:
            claims.check_chain(subject, chain)
        except Refused:
            return False
        current = chain[0]
        actor = self._agents.by_uid(current.uid) if current.uid else None
        return actor is not None and actor.status.agent_id == current.sub and claims.is_live(actor, now)
