"""Who is calling: the typed view of a verified agent token.

Built by the verifiers (``jwt_verifier``, ``introspection``) from claims they have already verified; read by
policies, audit records and tool code. Agent tokens carry an ``agent`` claim (namespace, name, uid, owner,
supervision, attributes) and, when an agent acts for another, a nested RFC 8693 ``act`` claim (current actor
outermost). The chain is for audit; authorisation uses the subject and the current actor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_CHAIN_DEPTH = 5  # the token service never issues deeper chains; anything deeper is not one of its tokens


class Supervision(StrEnum):
    AUTONOMOUS = "Autonomous"
    SUPERVISED = "Supervised"
    SUSPENDED = "Suspended"


class MalformedClaims(ValueError):
    """Verified claims that are not an agent token's (the verifier turns this into an invalid token)."""


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Actor:
    """One link of a delegation chain: an agent acting on behalf of the one after it."""

    agent_id: str
    namespace: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class AgentPrincipal:
    agent_id: str  # `sub`: spiffe://<trust domain>/ns/<namespace>/agent/<name>
    namespace: str
    name: str
    uid: str
    owner: Owner
    supervision: Supervision
    attributes: Mapping[str, str]
    issuer: str
    audience: tuple[str, ...]
    expires_at: int
    token_id: str  # `jti`: correlates the tool's audit with the token service's
    act_chain: tuple[Actor, ...] = ()  # current actor first
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def actor(self) -> Actor | None:
        """The agent actually making this call on the subject's behalf, if any."""
        return self.act_chain[0] if self.act_chain else None

    @property
    def delegation_depth(self) -> int:
        return len(self.act_chain)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> AgentPrincipal:
        """Raise ``MalformedClaims`` unless the claims are an agent token's."""
        agent = claims.get("agent")
        if not isinstance(agent, Mapping):
            raise MalformedClaims("no agent claim")
        owner = agent.get("owner")
        if not isinstance(owner, Mapping):
            raise MalformedClaims("no owner")
        attributes = agent.get("attributes", {})
        if not isinstance(attributes, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in attributes.items()
        ):
            raise MalformedClaims("attributes are not a map of strings")
        try:
            supervision = Supervision(str(agent.get("supervision")))
        except ValueError:
            raise MalformedClaims("unknown supervision mode") from None
        aud = claims.get("aud")
        audience = (aud,) if isinstance(aud, str) else tuple(aud) if isinstance(aud, list) else ()
        return cls(
            agent_id=_text(claims, "sub"),
            namespace=_text(agent, "namespace"),
            name=_text(agent, "name"),
            uid=_text(agent, "uid"),
            owner=Owner(kind=_text(owner, "kind"), name=_text(owner, "name")),
            supervision=supervision,
            attributes=dict(attributes),
            issuer=_text(claims, "iss"),
            audience=tuple(str(item) for item in audience),
            expires_at=_number(claims, "exp"),
            token_id=_text(claims, "jti"),
            act_chain=act_chain(claims.get("act")),
            claims=dict(claims),
        )


def act_chain(act: Any) -> tuple[Actor, ...]:
    """Flatten a nested ``act`` claim, current actor first."""
    chain: list[Actor] = []
    node = act
    while node is not None:
        if len(chain) >= MAX_CHAIN_DEPTH:
            raise MalformedClaims("delegation chain too deep")
        if not isinstance(node, Mapping):
            raise MalformedClaims("act is not an object")
        agent = node.get("agent")
        agent = agent if isinstance(agent, Mapping) else {}
        namespace, name = agent.get("namespace"), agent.get("name")
        chain.append(
            Actor(
                agent_id=_text(node, "sub"),
                namespace=namespace if isinstance(namespace, str) else None,
                name=name if isinstance(name, str) else None,
            )
        )
        node = node.get("act")
    return tuple(chain)


def _text(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedClaims(f"{name} is missing or not a string")
    return value


def _number(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedClaims(f"{name} is missing or not a number")
    return int(value)
