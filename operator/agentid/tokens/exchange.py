"""RFC 8693 token exchange (and the RFC 7523 JWT-bearer grant): from a proof of being an agent to an agent token.

Called by the HTTP layer (``tokens.app``) with a parsed request; returns the signed token or raises
``claims.Refused``. Three kinds of presented token are accepted, each verified by its own authority:
- a ServiceAccount token → TokenReview → the agent whose ``status.serviceAccountUID`` is that UID (never by name);
- an agent token issued here → the issuer keyring → the agent with the UID in its ``agent`` claim;
- an assertion an agent signed with its own key (``iss`` = ``sub`` = its agent ID, single use).
The presented token's ``iss`` only routes it to a verifier; nothing is decided on unverified content.
The same agent-signed assertion also authenticates an agent as an OAuth client (RFC 7523 §2.2 ``private_key_jwt``):
for the ``client_credentials`` grant, and for introspection callers.

Refusal codes follow the request kind: an unverifiable subject or actor token is ``invalid_request`` (RFC 8693
§2.2.2), a bad grant assertion ``invalid_grant`` (RFC 7523 §3.1), a bad client assertion ``invalid_client``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentid import audit, metrics
from agentid.api.v1alpha1 import AgentIdentity
from agentid.domain import claims, keys
from agentid.domain import clock as wall_clock
from agentid.domain.claims import Actor, Error, Reason, Refused
from agentid.tokens import verification
from agentid.tokens.accounts import AccountCache
from agentid.tokens.agents import AgentCache, published_keys
from agentid.tokens.keyring import IssuerKeyring
from agentid.tokens.replay import SharedReplayGuard
from agentid.tokens.reviews import ServiceAccountReviewer, ServiceAccountUser
from agentid.tokens.settings import TokenServiceSettings

SPIFFE_PREFIX = "spiffe://"
_GRANTED = metrics.TOKEN_EXCHANGES.labels(outcome="granted", error="")  # looked up once, not per token


class KindOfToken:
    SERVICE_ACCOUNT = "service-account"
    AGENT_TOKEN = "agent-token"  # noqa: S105 - a label
    ASSERTION = "assertion"


@dataclass(frozen=True)
class ExchangeRequest:
    grant_type: str
    subject_token: str | None = None
    subject_token_type: str | None = None
    actor_token: str | None = None
    actor_token_type: str | None = None
    assertion: str | None = None
    audiences: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()  # RFC 8707: each names exactly one target
    requested_token_type: str | None = None
    lifetime: dt.timedelta | None = None
    client_id: str | None = None
    client_assertion_type: str | None = None
    client_assertion: str | None = None


@dataclass(frozen=True)
class Presented:
    """A verified token and the agent it speaks for."""

    agent: AgentIdentity
    kind: str
    audience: list[str] | None = None  # agent tokens only: the ceiling of any exchange
    act: dict[str, Any] | None = None
    chain: list[Actor] = field(default_factory=list)
    expires_at: dt.datetime | None = None
    lineage: tuple[str, ...] = ()  # agent tokens only: the jtis it was exchanged from, then its own (RFC 7009 cascade)


@dataclass(frozen=True)
class Issued:
    token: str
    claims: dict[str, Any]
    expires_in: int
    issued_token_type: str


class Exchanger:
    def __init__(
        self,
        *,
        settings: TokenServiceSettings,
        agents: AgentCache,
        accounts: AccountCache,
        keyring: IssuerKeyring,
        reviewer: ServiceAccountReviewer,
        replay: SharedReplayGuard,
        clock: Callable[[], dt.datetime] = wall_clock.now,
    ) -> None:
        self._settings = settings
        self._agents = agents
        self._accounts = accounts
        self._keyring = keyring
        self._reviewer = reviewer
        self._replay = replay
        self._clock = clock
        # The agent claim per agent object (by UID, for that same object only): it is a function of the object alone.
        self._described: dict[str, tuple[AgentIdentity, dict[str, Any]]] = {}
        agents.subscribe(self._forget_described)

    async def exchange(self, request: ExchangeRequest, *, client: str | None = None) -> Issued:
        """Issue a token or raise ``Refused``; both outcomes leave one audit record."""
        subject: Presented | None = None
        try:
            subject = await self._subject(request)
            issued = await self._issue(request, subject)
        except Refused as refusal:
            metrics.TOKEN_EXCHANGES.labels(outcome="refused", error=refusal.error.value).inc()
            agent = subject.agent if subject is not None else None
            audit.record(
                "token.exchange.refused",
                outcome="refused",
                reason=refusal.reason.value,
                agent_id=agent.status.agent_id if agent else None,
                namespace=agent.namespace if agent else None,
                name=agent.name if agent else None,
                client=client,
            )
            raise
        _GRANTED.inc()
        agent_claim = issued.claims["agent"]
        audit.record(
            "token.exchange.granted",
            outcome="granted",
            agent_id=issued.claims["sub"],
            namespace=agent_claim["namespace"],
            name=agent_claim["name"],
            uid=agent_claim["uid"],
            owner=f"{agent_claim['owner']['kind']}:{agent_claim['owner']['name']}",
            supervision=agent_claim["supervision"],
            jti=issued.claims["jti"],
            audience=claims.audiences_of(issued.claims),
            act_chain=[link.sub for link in claims.act_chain(issued.claims.get("act"))] or None,
            client=client,
        )
        return issued

    async def _subject(self, request: ExchangeRequest) -> Presented:
        client_auth = request.client_assertion is not None or request.client_assertion_type is not None
        if client_auth and request.grant_type != claims.GRANT_CLIENT_CREDENTIALS:
            raise _malformed("client authentication is only used with the client_credentials grant")
        if request.grant_type == claims.GRANT_TOKEN_EXCHANGE:
            if not request.subject_token or request.subject_token_type is None:
                raise _malformed("subject_token and subject_token_type are required")
            if request.subject_token_type not in claims.SUBJECT_TOKEN_TYPES:
                raise _malformed("unsupported subject_token_type")
            return await self.authenticate(request.subject_token, what="the subject token")
        if request.grant_type == claims.GRANT_JWT_BEARER:
            if not request.assertion:
                raise _malformed("assertion is required")
            return await self._authenticate_assertion(request.assertion, what="the assertion")
        if request.grant_type == claims.GRANT_CLIENT_CREDENTIALS:
            return await self.authenticate_client(
                request.client_assertion_type, request.client_assertion, request.client_id
            )
        raise Refused(Error.UNSUPPORTED_GRANT_TYPE, Reason.MALFORMED_REQUEST, "unsupported grant_type")

    async def _issue(self, request: ExchangeRequest, subject: Presented) -> Issued:
        if request.requested_token_type not in (None, claims.TOKEN_TYPE_ACCESS_TOKEN, claims.TOKEN_TYPE_JWT):
            raise _malformed("unsupported requested_token_type")
        now = self._clock()
        claims.check_may_get_tokens(subject.agent, now)
        not_after = [subject.expires_at] if subject.expires_at else []
        act = subject.act
        lineage = subject.lineage
        if request.actor_token is not None:
            if request.actor_token_type not in claims.SUBJECT_TOKEN_TYPES:
                raise _malformed("actor_token_type is missing or unsupported")
            actor = await self.authenticate(request.actor_token, what="the actor token")
            if actor.chain:
                raise Refused(
                    Error.INVALID_GRANT, Reason.ACTOR_DELEGATED, "an actor token must not be delegated itself"
                )
            claims.check_may_get_tokens(actor.agent, now)
            claims.check_delegation(subject.agent, actor.agent, subject.chain)
            act = Actor.of(actor.agent).claim(subject.act)
            lineage = (*lineage, *actor.lineage)
            if actor.expires_at:
                not_after.append(actor.expires_at)
        elif subject.chain:
            claims.check_chain(subject.agent, subject.chain)
        wanted = claims.requested_targets(request.audiences, request.resources)
        audience = claims.choose_audience(subject.agent, wanted, issuer=self._settings.issuer, ceiling=subject.audience)
        access_token_profile = claims.check_profile(audience, self._settings.access_token_audiences)
        lifetime = claims.choose_lifetime(subject.agent, request.lifetime, now=now, not_after=not_after)
        signing = self._keyring.signing_key()
        payload = claims.build_claims(
            subject.agent,
            issuer=self._settings.issuer,
            audience=audience,
            issued_at=now,
            lifetime=lifetime,
            jti=str(uuid.uuid4()),
            act=act,
            access_token_profile=access_token_profile,
            described=self._agent_claim(subject.agent),
        )
        if lineage:
            payload[claims.ANCESTORS] = claims.ancestors(lineage)
        typ = verification.TYP_ACCESS_TOKEN if access_token_profile else verification.TYP_JWT
        token = keys.sign_jwt(signing, payload, typ=typ)
        return Issued(
            token=token,
            claims=payload,
            expires_in=int(lifetime.total_seconds()),
            issued_token_type=request.requested_token_type or claims.TOKEN_TYPE_ACCESS_TOKEN,
        )

    def _agent_claim(self, agent: AgentIdentity) -> dict[str, Any]:
        uid = str(agent.metadata.uid)
        known = self._described.get(uid)
        if known is not None and known[0] is agent:
            return known[1]
        described = claims.agent_claim(agent)
        self._described[uid] = (agent, described)
        return described

    def _forget_described(self, old: AgentIdentity | None, new: AgentIdentity | None) -> None:
        """AgentCache listener: a changed or deleted agent's claim is made again from its new object (or never)."""
        if old is not None:
            self._described.pop(str(old.metadata.uid), None)

    # -- who is presenting? -----------------------------------------------------------------------------------

    async def authenticate(self, token: str, *, what: str) -> Presented:
        """A subject or actor token: an unverifiable one is ``invalid_request`` (RFC 8693 §2.2.2)."""
        try:
            return await self._authenticate(token, what=what)
        except Refused as refusal:
            if refusal.reason is Reason.INVALID_TOKEN:
                raise claims.invalid_token(what, Error.INVALID_REQUEST) from None
            raise

    async def authenticate_client(
        self, assertion_type: str | None, assertion: str | None, client_id: str | None
    ) -> Presented:
        """RFC 7523 §2.2 ``private_key_jwt``: an assertion signed with the agent's own key authenticates the agent as
        the client (``client_id`` = its agent ID). Anything else is ``invalid_client``."""
        what = "the client assertion"
        try:
            if assertion_type != claims.CLIENT_ASSERTION_TYPE or not assertion:
                raise claims.invalid_token(what)
            presented = await self._authenticate_assertion(assertion, what=what)
            if client_id is not None and client_id != presented.agent.status.agent_id:
                raise claims.invalid_token(what)
        except Refused as refusal:
            if refusal.reason is Reason.INVALID_TOKEN:
                raise claims.invalid_token(what, Error.INVALID_CLIENT) from None
            raise
        return presented

    async def _authenticate(self, token: str, *, what: str) -> Presented:
        """Route by the (unverified) issuer to the one verifier that may vouch for the token, then verify fully."""
        user = self._reviewer.recall(token)  # routed here before, judged by the apiserver within the review TTL
        if user is not None:
            return self._service_account_agent(user, what=what)
        max_bytes = self._settings.limits.max_token_bytes
        issuer = verification.unverified_claims(token, max_bytes).get("iss")
        if issuer == self._settings.issuer:
            return self._authenticate_agent_token(token, what=what)
        if isinstance(issuer, str) and issuer.startswith(SPIFFE_PREFIX):
            return await self._authenticate_assertion(token, what=what)
        return await self._authenticate_service_account(token, what=what)

    async def _authenticate_service_account(self, token: str, *, what: str) -> Presented:
        user = await self._reviewer.review(token, routed=True)
        if user is None:
            raise claims.invalid_token(what)
        return self._service_account_agent(user, what=what)

    def _service_account_agent(self, user: ServiceAccountUser, *, what: str) -> Presented:
        # The ServiceAccount itself says whose it is (its controller, by UID); status is never asked.
        account = self._accounts.by_uid(user.uid)
        if account is None and (departed := self._accounts.departed(user.uid)) is not None:
            gone = self._agents.by_uid(departed.agent_uid)
            if gone is not None:
                claims.check_may_get_tokens(gone, self._clock())  # revoked, expired: say so
        agent = self._agents.by_uid(account.agent_uid) if account is not None else None
        named = account is not None and (user.namespace, user.name) == (account.namespace, account.name)
        if agent is None or not named or self._accounts.account_of(agent) != account:  # its own, by name and UID
            raise claims.invalid_token(what)  # a ServiceAccount no (current) agent is bound to
        return Presented(agent=agent, kind=KindOfToken.SERVICE_ACCOUNT)

    def _authenticate_agent_token(self, token: str, *, what: str) -> Presented:
        limit = self._settings.limits.max_token_bytes
        verified = self._keyring.verify_issued(token, issuer=self._settings.issuer, max_bytes=limit)
        agent = agent_of_token(self._agents, verified.claims)
        if agent is None:
            raise claims.invalid_token(what)
        act = verified.claims.get("act")
        return Presented(
            agent=agent,
            kind=KindOfToken.AGENT_TOKEN,
            audience=claims.audiences_of(verified.claims),
            act=dict(act) if isinstance(act, dict) else None,
            chain=claims.act_chain(act),
            expires_at=dt.datetime.fromtimestamp(verified.claims["exp"], dt.UTC),
            lineage=(*claims.ancestors_of(verified.claims), verified.claims["jti"]),
        )

    async def _authenticate_assertion(self, token: str, *, what: str) -> Presented:
        limits = self._settings.limits
        header = verification.header_of(token, limits.max_token_bytes)
        issuer = verification.unverified_claims(token, limits.max_token_bytes).get("iss")
        agent = self._agents.by_agent_id(issuer) if isinstance(issuer, str) else None
        if agent is None:
            raise claims.invalid_token(what)
        published = published_keys(agent, self._accounts, self._clock())
        key = next((key for key in published if key.key_id == header["kid"]), None)
        if key is None:
            raise claims.invalid_token(what)
        verified = verification.verify(
            token,
            None,
            public_jwk=key.jwk,
            issuer=agent.status.agent_id,
            audience=[self._settings.issuer, self._settings.token_endpoint, self._settings.introspection_endpoint],
            required=verification.ASSERTION_CLAIMS,
            max_bytes=limits.max_token_bytes,
        )
        payload = verified.claims
        now = self._clock().timestamp()
        if payload["sub"] != agent.status.agent_id or "act" in payload:
            raise claims.invalid_token(what)
        if float(payload["exp"]) - now > limits.max_assertion_lifetime_seconds + verification.LEEWAY:
            raise claims.invalid_token(what)
        if not await self._replay.first_use(str(agent.status.agent_id), payload["jti"], float(payload["exp"])):
            raise claims.invalid_token(what)
        return Presented(agent=agent, kind=KindOfToken.ASSERTION)


def agent_of_token(agents: AgentCache, payload: dict[str, Any]) -> AgentIdentity | None:
    """The live agent a verified agent token names: same UID, name and agent ID (a recreated agent differs)."""
    namespace, name, uid = verification.agent_reference(payload)
    agent = agents.by_uid(uid)
    if agent is None or (agent.namespace, agent.name) != (namespace, name):
        return None
    if agent.status.agent_id != payload.get("sub"):
        return None
    return agent


def _malformed(description: str) -> Refused:
    return Refused(Error.INVALID_REQUEST, Reason.MALFORMED_REQUEST, description)
