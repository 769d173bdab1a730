"""Agent token claims and the rules for issuing them: who may get a token, for which audience, for how long, and
on whose behalf.

Called by the token service (exchange, introspection) and the CLI (``agentid verify`` prints the delegation
chain). Pure: agents arrive parsed (``api.v1alpha1``), time arrives as an argument, nothing here does I/O.
Refusals are raised as ``Refused`` carrying the RFC 6749 error code the HTTP layer sends; descriptions name the
rule that failed and never contain a token.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agentid.api.durations import parse as parse_duration
from agentid.api.v1alpha1 import AgentIdentity, Phase, SupervisionMode
from agentid.domain import supervision

# RFC 8693 / RFC 7523 identifiers.
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANT_CLIENT_CREDENTIALS = "client_credentials"  # with private_key_jwt client authentication (RFC 7523 §2.2)
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a URN
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN, not a secret
SUBJECT_TOKEN_TYPES = frozenset({TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS_TOKEN})

ANCESTORS = "ancestors"  # the jtis of the agent tokens a token was exchanged from, oldest first (RFC 7009 cascade)
MAX_ANCESTORS = 32
MAX_CHAIN_DEPTH = 5  # the API's maximum maxDepth: deeper `act` nesting is refused before it is walked
MAX_TOKEN_LIFETIME = dt.timedelta(hours=24)  # the API's maximum tokenTTL: bounds how long issuer keys stay published
CLOCK_SKEW = dt.timedelta(seconds=60)

# Most permissive first: the effective mode of an agent is the most restrictive of what spec and status say.


class Error(StrEnum):
    """RFC 6749 §5.2 and RFC 8693 §2.2.2 error codes."""

    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_GRANT = "invalid_grant"
    INVALID_TARGET = "invalid_target"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"


class Reason(StrEnum):
    """Why a token was refused: stable strings for audit records and metrics."""

    INVALID_TOKEN = "InvalidToken"  # noqa: S105 - a reason name
    UNKNOWN_AGENT = "UnknownAgent"
    NOT_PROVISIONED = "NotProvisioned"
    SUSPENDED = "Suspended"
    REVOKED = "Revoked"
    EXPIRED = "Expired"
    FAILED = "Failed"
    DELETING = "Deleting"
    NO_AUDIENCE = "NoAudience"
    AUDIENCE_NOT_ALLOWED = "AudienceNotAllowed"
    AUDIENCE_WIDENED = "AudienceWidened"
    ONE_TARGET = "OneTarget"
    LIFETIME_TOO_LONG = "LifetimeTooLong"
    ACTOR_NOT_ALLOWED = "ActorNotAllowed"
    ACTOR_DELEGATED = "ActorDelegated"
    CHAIN_TOO_DEEP = "ChainTooDeep"
    MALFORMED_REQUEST = "MalformedRequest"


class Refused(Exception):
    """A token request the rules refuse; ``error`` is what the client sees, ``reason`` what the audit log keeps."""

    def __init__(self, error: Error, reason: Reason, description: str) -> None:
        super().__init__(f"{error.value} ({reason.value}): {description}")
        self.error = error
        self.reason = reason
        self.description = description


def invalid_token(what: str = "the presented token", error: Error = Error.INVALID_GRANT) -> Refused:
    """The one refusal for every unverifiable token: no detail on *why* leaks to the presenter.

    ``error`` is the code the request kind asks for: ``invalid_grant`` for an RFC 7523 grant assertion (RFC 7523
    §3.1), ``invalid_request`` for an RFC 8693 subject or actor token (§2.2.2), ``invalid_client`` for client
    authentication (RFC 6749 §5.2)."""
    return Refused(error, Reason.INVALID_TOKEN, f"{what} is not valid")


# -- may this agent hold tokens at all? -------------------------------------------------------------------------


def effective_supervision(agent: AgentIdentity) -> SupervisionMode:
    """The most restrictive of the requested mode (spec) and the mode in force (status).

    The spec wins as soon as it is more restrictive (a suspension bites before the operator reconciles); status
    wins while a relaxation (resume, promotion to Autonomous) has not been reconciled yet.
    """
    modes = [agent.spec.supervision.mode]
    if agent.status.supervision is not None:
        modes.append(agent.status.supervision)
    if agent.status.phase is Phase.SUSPENDED:
        modes.append(SupervisionMode.SUSPENDED)
    return supervision.most_restrictive(modes)


def token_ttl(agent: AgentIdentity) -> dt.timedelta:
    """The spec's tokenTTL, or less if the operator reports a policy's lower maximum in force (status)."""
    ttl = agent.spec.credentials.ttl
    if agent.status.token_ttl is not None:
        ttl = min(ttl, parse_duration(agent.status.token_ttl))
    return ttl


def check_may_get_tokens(agent: AgentIdentity, now: dt.datetime) -> None:
    """Raise ``Refused`` unless the agent may be issued (or keep using) tokens right now."""
    refusal = _state_refusal(agent, now)
    if refusal is not None:
        raise Refused(Error.INVALID_GRANT, refusal, _STATE_MESSAGES[refusal])


def is_live(agent: AgentIdentity, now: dt.datetime) -> bool:
    """Introspection's question: would this agent's token be honoured at this instant?"""
    return _state_refusal(agent, now) is None


_STATE_MESSAGES = {
    Reason.REVOKED: "the agent is revoked",
    Reason.EXPIRED: "the agent has expired",
    Reason.DELETING: "the agent is being deleted",
    Reason.SUSPENDED: "the agent is suspended",
    Reason.FAILED: "the agent is not provisioned correctly (phase Failed)",
    Reason.NOT_PROVISIONED: "the agent is not provisioned yet",
}


def _state_refusal(agent: AgentIdentity, now: dt.datetime) -> Reason | None:  # noqa: PLR0911 - one rule per line
    spec, status = agent.spec, agent.status
    if spec.revoked or status.phase is Phase.REVOKED:
        return Reason.REVOKED
    if status.phase is Phase.EXPIRED or (spec.expires_at is not None and _aware(spec.expires_at) <= now):
        return Reason.EXPIRED
    if agent.metadata.deletion_timestamp is not None:
        return Reason.DELETING
    if effective_supervision(agent) is SupervisionMode.SUSPENDED:
        return Reason.SUSPENDED
    if status.phase is Phase.FAILED:
        return Reason.FAILED
    if status.phase not in (Phase.ACTIVE, Phase.SUPERVISED) or not status.agent_id:
        return Reason.NOT_PROVISIONED
    return None


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


# -- audience and lifetime --------------------------------------------------------------------------------------


def permitted_audiences(agent: AgentIdentity, issuer: str) -> frozenset[str]:
    """The agent's declared audiences plus the token service itself (tokens used as subject or actor tokens)."""
    return frozenset(agent.spec.credentials.audiences) | {issuer}


def choose_audience(
    agent: AgentIdentity, requested: Sequence[str], *, issuer: str, ceiling: Sequence[str] | None = None
) -> list[str]:
    """The audience of the new token: what was asked (or a default), never beyond what the agent may use.

    ``ceiling`` is the audience of the token being exchanged when it is itself an agent token: a token is only
    ever narrowed, so a delegate never gets a wider audience than the token it was handed.
    """
    wanted = list(dict.fromkeys(requested))
    if not wanted:
        wanted = list(dict.fromkeys(ceiling)) if ceiling else sorted(agent.spec.credentials.audiences)
    if not wanted:
        raise Refused(Error.INVALID_TARGET, Reason.NO_AUDIENCE, "no audience requested and the agent declares none")
    allowed = permitted_audiences(agent, issuer)
    refused = [audience for audience in wanted if audience not in allowed]
    if refused:
        raise Refused(
            Error.INVALID_TARGET,
            Reason.AUDIENCE_NOT_ALLOWED,
            f"audience not allowed for this agent: {', '.join(refused[:3])}"[:300],
        )
    if ceiling is not None:
        wider = [audience for audience in wanted if audience not in ceiling]
        if wider:
            raise Refused(
                Error.INVALID_TARGET,
                Reason.AUDIENCE_WIDENED,
                "the requested audience is wider than the audience of the subject token",
            )
    return wanted


def requested_targets(audiences: Sequence[str], resources: Sequence[str]) -> list[str]:
    """The audiences a request asks for. RFC 8707: a ``resource`` yields a token for exactly that one resource, so
    several resources, or an ``audience`` naming anything else, are refused rather than merged into one token."""
    if not resources:
        return list(audiences)
    if len(set(resources) | set(audiences)) != 1:
        raise Refused(
            Error.INVALID_TARGET, Reason.ONE_TARGET, "a token is issued for exactly one resource; request one per token"
        )
    return [resources[0]]


def check_profile(audience: Sequence[str], access_token_audiences: Iterable[str]) -> bool:
    """Whether the token is minted as an RFC 9068 access token (``typ: at+jwt``, ``client_id``): when its audience is
    one configured for that profile. Such a token has that one audience only: a token cannot be both profiles."""
    profiled = set(audience) & set(access_token_audiences)
    if profiled and len(audience) > 1:
        raise Refused(
            Error.INVALID_TARGET, Reason.ONE_TARGET, "an RFC 9068 access token is issued for exactly one audience"
        )
    return bool(profiled)


def choose_lifetime(
    agent: AgentIdentity,
    requested: dt.timedelta | None,
    *,
    now: dt.datetime,
    not_after: Iterable[dt.datetime] = (),
) -> dt.timedelta:
    """How long the new token lives: the request (or tokenTTL), never past tokenTTL, the agent's expiresAt, or
    the expiry of the tokens it was exchanged from (``not_after``)."""
    ttl = token_ttl(agent)
    if requested is not None and requested > ttl:
        raise Refused(
            Error.INVALID_REQUEST,
            Reason.LIFETIME_TOO_LONG,
            f"requested lifetime {int(requested.total_seconds())}s exceeds the agent's tokenTTL "
            f"({int(ttl.total_seconds())}s)",
        )
    lifetime = min(requested if requested is not None else ttl, MAX_TOKEN_LIFETIME)
    limits = list(not_after)
    if agent.spec.expires_at is not None:
        limits.append(_aware(agent.spec.expires_at))
    for limit in limits:
        lifetime = min(lifetime, limit - now)
    if lifetime < dt.timedelta(seconds=1):
        raise Refused(Error.INVALID_GRANT, Reason.EXPIRED, "the token would expire before it is issued")
    return dt.timedelta(seconds=int(lifetime.total_seconds()))


# -- delegation -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """One link of a delegation chain, as written in an ``act`` claim."""

    sub: str
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None

    @classmethod
    def of(cls, agent: AgentIdentity) -> Actor:
        return cls(sub=agent.status.agent_id or "", namespace=agent.namespace, name=agent.name, uid=agent.metadata.uid)

    def claim(self, prior: Mapping[str, Any] | None = None) -> dict[str, Any]:
        act: dict[str, Any] = {"sub": self.sub}
        if self.namespace and self.name and self.uid:
            act["agent"] = {"namespace": self.namespace, "name": self.name, "uid": self.uid}
        if prior:
            act["act"] = dict(prior)
        return act


def act_chain(act: Any) -> list[Actor]:
    """Flatten a nested RFC 8693 ``act`` claim, current actor first. Malformed or over-deep chains are refused."""
    chain: list[Actor] = []
    node = act
    while node is not None:
        if len(chain) >= MAX_CHAIN_DEPTH:
            raise Refused(Error.INVALID_GRANT, Reason.CHAIN_TOO_DEEP, "the delegation chain is too deep")
        if not isinstance(node, Mapping) or not isinstance(node.get("sub"), str):
            raise invalid_token()
        agent = node.get("agent")
        agent = agent if isinstance(agent, Mapping) else {}
        chain.append(
            Actor(
                sub=node["sub"],
                namespace=_str_or_none(agent.get("namespace")),
                name=_str_or_none(agent.get("name")),
                uid=_str_or_none(agent.get("uid")),
            )
        )
        node = node.get("act")
    return chain


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def check_delegation(subject: AgentIdentity, actor: AgentIdentity, prior: Sequence[Actor]) -> None:
    """May ``actor`` act on behalf of ``subject``, on top of the chain the subject token already carries?

    Every actor in the chain must be one of the subject's ``allowedActors`` (a removed actor stops delegated
    exchanges at once), and the chain, the new actor included, may be at most ``maxDepth`` long.
    """
    if (actor.namespace, actor.name) not in _allowed_actors(subject):
        raise Refused(
            Error.INVALID_GRANT, Reason.ACTOR_NOT_ALLOWED, "the actor is not in the subject agent's allowedActors"
        )
    check_chain(subject, [Actor.of(actor), *prior])


def check_chain(subject: AgentIdentity, chain: Sequence[Actor]) -> None:
    """An existing chain is still acceptable: every actor still allowed, and no deeper than ``maxDepth``."""
    allowed = _allowed_actors(subject)
    for link in chain:
        if link.namespace is None or (link.namespace, link.name) not in allowed:
            raise Refused(
                Error.INVALID_GRANT,
                Reason.ACTOR_NOT_ALLOWED,
                "an actor in the delegation chain is not in the subject agent's allowedActors",
            )
    max_depth = subject.spec.delegation.max_depth
    if len(chain) > max_depth:
        raise Refused(
            Error.INVALID_GRANT,
            Reason.CHAIN_TOO_DEEP,
            f"the delegation chain would be {len(chain)} deep; the agent allows {max_depth}",
        )


def _allowed_actors(subject: AgentIdentity) -> set[tuple[str, str]]:
    return {ref.resolve(subject.namespace) for ref in subject.spec.delegation.allowed_actors}


# -- the claims themselves --------------------------------------------------------------------------------------


def agent_claim(agent: AgentIdentity) -> dict[str, Any]:
    """The ``agent`` claim: which agent, who is accountable for it, and under what supervision it acts."""
    return {
        "namespace": agent.namespace,
        "name": agent.name,
        "uid": agent.metadata.uid,
        "owner": {"kind": agent.spec.owner.kind, "name": agent.spec.owner.name},
        "supervision": effective_supervision(agent).value,
        "attributes": dict(agent.spec.attributes),
    }


def build_claims(
    agent: AgentIdentity,
    *,
    issuer: str,
    audience: Sequence[str],
    issued_at: dt.datetime,
    lifetime: dt.timedelta,
    jti: str,
    act: Mapping[str, Any] | None = None,
    access_token_profile: bool = False,
    described: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims of an agent token (api.md "Agent tokens"). ``aud`` is a string when there is one audience.

    With ``access_token_profile`` the RFC 9068 ``client_id`` claim is added: the agent is the OAuth client.
    ``described``: ``agent_claim(agent)`` made earlier for this very object (an issuer keeps one per agent object;
    tokens then share it, and nothing changes a claim once built)."""
    if not agent.status.agent_id:
        raise Refused(Error.INVALID_GRANT, Reason.NOT_PROVISIONED, _STATE_MESSAGES[Reason.NOT_PROVISIONED])
    iat = int(issued_at.timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": agent.status.agent_id,
        "aud": audience[0] if len(audience) == 1 else list(audience),
        "exp": iat + int(lifetime.total_seconds()),
        "iat": iat,
        "nbf": iat,
        "jti": jti,
        "agent": agent_claim(agent) if described is None else described,
    }
    if access_token_profile:
        claims["client_id"] = agent.status.agent_id
    if act:
        claims["act"] = dict(act)
    return claims


def audiences_of(claims: Mapping[str, Any]) -> list[str]:
    """``aud`` as a list (RFC 7519 allows a string or an array of strings)."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return list(aud)
    return []


def ancestors(lineage: Sequence[str]) -> list[str]:
    """The ``ancestors`` claim of a token exchanged from tokens with this lineage: revoking any of them revokes it.
    Dropping the oldest would let a descendant outlive an ancestor's revocation, so a longer lineage is refused."""
    unique = list(dict.fromkeys(lineage))
    if len(unique) > MAX_ANCESTORS:
        raise Refused(
            Error.INVALID_GRANT, Reason.CHAIN_TOO_DEEP, f"a token may be exchanged from at most {MAX_ANCESTORS} tokens"
        )
    return unique


def ancestors_of(claims: Mapping[str, Any]) -> list[str]:
    """The ``ancestors`` of one of our verified tokens (malformed: refused like any unverifiable token)."""
    value = claims.get(ANCESTORS, [])
    if not isinstance(value, list) or not all(isinstance(jti, str) for jti in value) or len(value) > MAX_ANCESTORS:
        raise invalid_token()
    return list(value)
