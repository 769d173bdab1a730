"""Which Shared Signals (SSF 1.0 / CAEP 1.0) events a change of an AgentIdentity means, and their SET claims.

Called by the token service's transmitter (``tokens.ssf``) with the old and new agent its watch saw. Pure: time
arrives as an argument, nothing here signs or sends. Three CAEP event types:
- ``session-revoked`` when an agent can never hold tokens again (revoked, expired, being deleted, deleted): every
  token of that agent (as subject or as an actor of a delegation) issued at or before ``event_timestamp`` is void;
- ``assurance-level-change`` when its effective supervision mode changes (Suspended is the level at which no token
  is honoured). Chosen over ``credential-change`` because supervision is the level of human oversight the agent
  acts under, which the agent's credentials (keys, ServiceAccount) do not change — CAEP's ``credential-change`` is
  for created/revoked/updated credentials, and a suspension is reversible without touching any credential;
- ``token-claims-change`` when the ``agent`` claim of tokens issued from now on differs (owner, attributes).
Subjects are RFC 9493 ``uri`` identifiers: the agent ID.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from agentid.api.v1alpha1 import AgentIdentity, SupervisionMode
from agentid.domain import claims
from agentid.domain.claims import Reason, Refused

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SESSION_REVOKED = CAEP + "session-revoked"
ASSURANCE_LEVEL_CHANGE = CAEP + "assurance-level-change"
TOKEN_CLAIMS_CHANGE = CAEP + "token-claims-change"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
EVENT_TYPES = (SESSION_REVOKED, ASSURANCE_LEVEL_CHANGE, TOKEN_CLAIMS_CHANGE)
SUPERVISION_NAMESPACE = "agentid.dev/supervision"  # a custom CAEP assurance namespace: the supervision modes
DELIVERY_PUSH = "urn:ietf:rfc:8935"
DELIVERY_POLL = "urn:ietf:rfc:8936"
SET_TYPE = "secevent+jwt"

# More oversight is more assurance; Suspended is the top: nothing the agent does is honoured.
_LEVEL = {SupervisionMode.AUTONOMOUS: 0, SupervisionMode.SUPERVISED: 1, SupervisionMode.SUSPENDED: 2}
_TERMINAL = {Reason.REVOKED: "revoked", Reason.EXPIRED: "expired", Reason.DELETING: "deleted"}


@dataclass(frozen=True)
class Event:
    """One CAEP event about one agent, before it is addressed to a stream and signed."""

    event_type: str
    agent_id: str
    body: dict[str, Any]


def subject(agent_id: str) -> dict[str, str]:
    """RFC 9493 §3.2.7: the agent ID is a URI."""
    return {"format": "uri", "uri": agent_id}


def events_for(old: AgentIdentity | None, new: AgentIdentity | None, now: dt.datetime) -> list[Event]:
    """The events a watch change means, in the order a receiver should apply them (possibly none)."""
    agent = new or old
    agent_id = agent.status.agent_id if agent is not None else None
    if agent is None or not agent_id:
        return []  # never provisioned: it never held a token
    stamp = int(now.timestamp())
    reason = "deleted" if new is None else terminal_reason(new, now)
    if reason is not None:
        return [Event(SESSION_REVOKED, agent_id, _revoked(reason, stamp))]  # the transmitter announces it once
    if old is None or new is None:
        return []
    events: list[Event] = []
    before, after = claims.effective_supervision(old), claims.effective_supervision(new)
    if before is not after:
        events.append(Event(ASSURANCE_LEVEL_CHANGE, agent_id, _level_change(before, after, stamp)))
    old_claim, new_claim = _comparable(old), _comparable(new)
    if old_claim != new_claim and old.status.agent_id:
        body = {"event_timestamp": stamp, "claims": {"agent": claims.agent_claim(new)}}
        events.append(Event(TOKEN_CLAIMS_CHANGE, agent_id, body))
    return events


def snapshot(agents: list[AgentIdentity], revoked: dict[str, int], now: dt.datetime) -> list[Event]:
    """The state a new stream starts from: every agent whose tokens are refused right now (revoked or deleted
    recently: ``revoked`` maps agent ID to when; suspended: its level)."""
    stamp = int(now.timestamp())
    events = [Event(SESSION_REVOKED, agent_id, _revoked("revoked", when)) for agent_id, when in revoked.items()]
    for agent in agents:
        if agent.status.agent_id and claims.effective_supervision(agent) is SupervisionMode.SUSPENDED:
            body = _level_change(SupervisionMode.SUPERVISED, SupervisionMode.SUSPENDED, stamp)
            events.append(Event(ASSURANCE_LEVEL_CHANGE, agent.status.agent_id, body))
    return events


def set_claims(event: Event, *, issuer: str, audience: str, now: dt.datetime) -> dict[str, Any]:
    """The claims of a Security Event Token (RFC 8417 §2.2) as SSF 1.0 §4.1 shapes it: ``sub_id`` at the top."""
    return {
        "iss": issuer,
        "aud": audience,
        "iat": int(now.timestamp()),
        "jti": uuid.uuid4().hex,
        "sub_id": subject(event.agent_id),
        "events": {event.event_type: event.body},
    }


def verification_claims(
    *, issuer: str, audience: str, stream_id: str, state: str | None, now: dt.datetime
) -> dict[str, Any]:
    """SSF 1.0 §8.1.4: the verification event a receiver asked for, echoing its ``state``; its subject is the
    stream itself."""
    body = {"state": state} if state is not None else {}
    return {
        "iss": issuer,
        "aud": audience,
        "iat": int(now.timestamp()),
        "jti": uuid.uuid4().hex,
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": {VERIFICATION: body},
    }


def terminal_reason(agent: AgentIdentity, now: dt.datetime) -> str | None:
    """Why the agent can never hold tokens again (revoked, expired, deleted), or None. Expiry is a matter of
    time, not of a watch event: both sides of a change may already be past ``expiresAt``."""
    try:
        claims.check_may_get_tokens(agent, now)
    except Refused as refusal:
        return _TERMINAL.get(refusal.reason)
    return None


def _revoked(reason: str, stamp: int) -> dict[str, Any]:
    return {
        "event_timestamp": stamp,
        "initiating_entity": "policy" if reason == "expired" else "admin",
        "reason_admin": {"en": f"the agent was {reason}"},
    }


def _level_change(before: SupervisionMode, after: SupervisionMode, stamp: int) -> dict[str, Any]:
    return {
        "event_timestamp": stamp,
        "namespace": SUPERVISION_NAMESPACE,
        "previous_level": before.value,
        "current_level": after.value,
        "change_direction": "increase" if _LEVEL[after] > _LEVEL[before] else "decrease",
        "initiating_entity": "admin",
    }


def _comparable(agent: AgentIdentity) -> dict[str, Any]:
    claim = claims.agent_claim(agent)
    claim.pop("supervision")
    return claim
