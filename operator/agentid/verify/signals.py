"""A Shared Signals (SSF 1.0) receiver: what lets a tool that verifies tokens offline honour a suspension or a
revocation within a second instead of at the token's expiry.

Called by ``Verifier`` (``check`` after local verification) and run as a background task by the tool
(``await receiver.run()``). It owns one poll stream (RFC 8936, long poll) at the token service, or takes pushed
SETs (RFC 8935) through ``push_endpoint``. Every Security Event Token is verified like a token (the issuer's JWKS,
``typ: secevent+jwt``, exact issuer, the stream's audience) before it is applied:
- CAEP ``session-revoked``: tokens of that agent issued at or before the event are refused, whether it is the
  subject or any actor of the ``act`` chain;
- CAEP ``assurance-level-change`` (namespace ``agentid.dev/supervision``): the agent's live supervision mode;
  ``Suspended`` refuses its tokens (again anywhere in the chain) until a change back;
- CAEP ``token-claims-change``: recorded (the live ``agent`` claim), principals keep the token's claims.
On (re)start the receiver drains and deletes its earlier streams (catch-up of what it had not acknowledged) and
creates a fresh one, which starts with a snapshot of every agent refused right now. While the stream has not
answered for ``fail_closed_after`` seconds (at least 15: a quiet stream answers every 10 s), ``check`` raises
``IssuerUnavailable`` (the tool answers 503) rather than admit tokens it can no longer vouch for; ``None`` keeps
admitting (fail open), a choice the tool makes. Push streams cannot tell quiet from cut: no window applies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from agentid.verify.errors import InvalidToken, IssuerUnavailable
from agentid.verify.introspection import Credentials
from agentid.verify.jwks import JWKSCache
from agentid.verify.principal import AgentPrincipal, Supervision

logger = logging.getLogger(__name__)
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SESSION_REVOKED = CAEP + "session-revoked"
ASSURANCE_LEVEL_CHANGE = CAEP + "assurance-level-change"
TOKEN_CLAIMS_CHANGE = CAEP + "token-claims-change"
EVENT_TYPES = (SESSION_REVOKED, ASSURANCE_LEVEL_CHANGE, TOKEN_CLAIMS_CHANGE)
SUPERVISION_NAMESPACE = "agentid.dev/supervision"
POLL = "urn:ietf:rfc:8936"
PUSH = "urn:ietf:rfc:8935"
SET_TYPE = "secevent+jwt"
MAX_SET_BYTES = 64 * 1024
LONG_POLL = httpx.Timeout(30.0, connect=5.0)
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
MIN_FAIL_CLOSED = 15.0  # the transmitter answers a long poll within 10 s even when nothing happens
Scope = MutableMapping[str, Any]  # the ASGI types, without depending on an ASGI framework
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class SETError(Exception):
    """A SET that cannot be applied; ``err`` is the RFC 8935 §2.4 / RFC 8936 error code."""

    def __init__(self, err: str, description: str) -> None:
        super().__init__(description)
        self.err = err
        self.description = description


@dataclass
class SignalState:
    """What the events said so far, per agent ID. Pure: ``apply`` and ``refusal`` do no I/O."""

    revoked: dict[str, float] = field(default_factory=dict)  # agent ID → sessions revoked at (epoch seconds)
    levels: dict[str, Supervision] = field(default_factory=dict)  # agent ID → live supervision
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent ID → live `agent` claim
    applied: int = 0

    def apply(self, payload: dict[str, Any]) -> None:
        sub_id = payload.get("sub_id")
        events = payload.get("events")
        if not isinstance(events, dict):
            raise SETError("invalid_request", "the SET has no events")
        agent_id = sub_id.get("uri") if isinstance(sub_id, dict) and sub_id.get("format") == "uri" else None
        for event_type, body in events.items():
            if event_type not in EVENT_TYPES:
                continue  # verification and unknown events change nothing (RFC 8417 §2.2: ignore what you don't know)
            if not isinstance(agent_id, str) or not isinstance(body, dict):
                raise SETError("invalid_request", "the event has no uri subject or no body")
            self._apply(event_type, agent_id, body)
        self.applied += 1

    def _apply(self, event_type: str, agent_id: str, body: dict[str, Any]) -> None:
        stamp = body.get("event_timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, int | float):
            raise SETError("invalid_request", "the event has no event_timestamp")
        if event_type == SESSION_REVOKED:
            self.revoked[agent_id] = max(float(stamp), self.revoked.get(agent_id, 0.0))
        elif event_type == ASSURANCE_LEVEL_CHANGE and body.get("namespace") == SUPERVISION_NAMESPACE:
            try:
                self.levels[agent_id] = Supervision(str(body.get("current_level")))
            except ValueError:
                raise SETError("invalid_request", "unknown supervision level") from None
        elif event_type == TOKEN_CLAIMS_CHANGE and isinstance(body.get("claims"), dict):
            agent = body["claims"].get("agent")
            if isinstance(agent, dict):
                self.claims[agent_id] = agent

    def refusal(self, principal: AgentPrincipal) -> str | None:
        """Why this principal's token is refused now (subject or any actor revoked or suspended), or None."""
        issued_at = principal.claims.get("iat")
        issued = float(issued_at) if isinstance(issued_at, int | float) else 0.0
        for agent_id in (principal.agent_id, *(actor.agent_id for actor in principal.act_chain)):
            revoked = self.revoked.get(agent_id)
            if revoked is not None and issued <= revoked:
                return "an agent of the token's chain was revoked"
            if self.levels.get(agent_id) is Supervision.SUSPENDED:
                return "an agent of the token's chain is suspended"
        return None

    def live(self, principal: AgentPrincipal) -> AgentPrincipal:
        """The principal with the subject's live supervision mode (policies see what holds now)."""
        level = self.levels.get(principal.agent_id)
        if level is None or level is principal.supervision:
            return principal
        return dataclasses.replace(principal, supervision=level)


class SignalReceiver:
    def __init__(
        self,
        issuer: str,
        *,
        http: httpx.AsyncClient,
        keys: JWKSCache,
        credentials: Credentials,
        name: str = "agentid.verify",
        fail_closed_after: float | None = 30.0,
        delivery: str = POLL,
        push_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if delivery == PUSH and not push_url:
            raise ValueError("push delivery needs the URL of this tool's push endpoint")
        if fail_closed_after is not None and fail_closed_after < MIN_FAIL_CLOSED:
            raise ValueError(
                f"fail_closed_after must be at least {MIN_FAIL_CLOSED} s: a quiet stream answers every 10 s"
            )
        self.issuer = issuer
        self.name = name
        self.state = SignalState()
        self.fail_closed_after = fail_closed_after
        self.stream_id: str | None = None
        self.audience: str | None = None
        self._http = http
        self._keys = keys
        self._credentials = credentials
        self._delivery = delivery
        self._push_url = push_url
        self._push_secret = secrets.token_urlsafe(32)
        self._clock = clock
        self._heard_at: float | None = None  # the last time the stream answered (poll) or was set up (push)
        self.connected = asyncio.Event()

    # -- the verifier's question ------------------------------------------------------------------------------

    def check(self, principal: AgentPrincipal) -> AgentPrincipal:
        """Raise ``InvalidToken`` if an event refuses the token, ``IssuerUnavailable`` while the stream is down
        longer than the fail-closed window; otherwise the principal with its live supervision."""
        if self.fail_closed_after is not None and self._delivery == POLL:
            heard = self._heard_at
            if heard is None or self._clock() - heard > self.fail_closed_after:
                raise IssuerUnavailable("the security event stream is down")
        reason = self.state.refusal(principal)
        if reason is not None:
            raise InvalidToken(reason)
        return self.state.live(principal)

    # -- the stream -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe and receive forever (cancel to stop); reconnects with backoff, catching up each time."""
        self.connected.clear()  # set again once this run has subscribed
        failures = 0
        while True:
            try:
                acks = await self._subscribe()
                failures = 0
                if self._delivery == PUSH:
                    await asyncio.Event().wait()  # the push endpoint does the rest
                await self._poll_forever(acks)
            except (httpx.HTTPError, ValueError, SETError) as error:
                failures += 1
                logger.warning("security event stream of %s failed: %s", self.issuer, error)
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1])

    async def _subscribe(self) -> list[str]:
        """A fresh stream, then drain and delete this receiver's earlier ones. For poll, the live supervision state
        is rebuilt aside — what the earlier streams still held, in order, then the new stream's snapshot — and
        swapped in at once: no window without the suspensions in force, and none kept that ended while away.
        Returns the SETs to acknowledge with the first poll."""
        earlier = [stream for stream in await self._request("GET", "/ssf/streams") if _named(stream, self.name)]
        delivery: dict[str, Any] = {"method": self._delivery}
        if self._delivery == PUSH:
            delivery.update(endpoint_url=self._push_url, authorization_header=f"Bearer {self._push_secret}")
        body = {"delivery": delivery, "events_requested": list(EVENT_TYPES), "description": self.name}
        created = await self._request("POST", "/ssf/streams", body)
        rebuilt = SignalState(revoked=dict(self.state.revoked), claims=dict(self.state.claims))
        for stream in earlier:
            if stream.get("delivery", {}).get("method") == POLL:
                await self._drain(stream, rebuilt, ack_last=True)
            await self._request("DELETE", f"/ssf/streams?stream_id={stream['stream_id']}")
        self.stream_id, self.audience = str(created["stream_id"]), str(created["aud"])
        acks: list[str] = []
        if self._delivery == POLL:
            self._poll_url = str(created["delivery"]["endpoint_url"])
            acks = await self._drain(created, rebuilt, ack_last=False)  # the snapshot
            rebuilt.applied += self.state.applied
            self.state = rebuilt
        self._heard_at = self._clock()
        self.connected.set()
        return acks

    async def _drain(self, stream: dict[str, Any], state: SignalState, *, ack_last: bool) -> list[str]:
        """Everything a stream of ours holds now (an earlier one: what happened while this receiver was away)."""
        url, audience = str(stream["delivery"]["endpoint_url"]), str(stream["aud"])
        acks: list[str] = []
        while True:
            answer = await self._poll(url, {"ack": acks, "returnImmediately": True})
            acks = await self._apply_all(answer, audience, state)
            if not answer.get("moreAvailable"):
                if acks and ack_last:
                    await self._poll(url, {"ack": acks, "returnImmediately": True, "maxEvents": 0})
                return acks

    async def _poll_forever(self, acks: list[str]) -> None:
        while True:
            answer = await self._poll(self._poll_url, {"ack": acks, "returnImmediately": False})
            self._heard_at = self._clock()
            assert self.audience is not None  # noqa: S101 - set by _subscribe
            acks = await self._apply_all(answer, self.audience, self.state)

    async def _apply_all(self, answer: dict[str, Any], audience: str, state: SignalState) -> list[str]:
        sets = answer.get("sets")
        if not isinstance(sets, dict):
            raise ValueError("the poll answer has no sets")
        for token in sets.values():
            state.apply(await self.verified(str(token), audience))
        return list(sets)

    async def _poll(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._http.post(url, json=body, headers=self._headers(), timeout=LONG_POLL)
        response.raise_for_status()
        answer = response.json()
        if not isinstance(answer, dict):
            raise ValueError("the poll answer is not an object")
        return answer

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self._http.request(method, self.issuer + path, json=body, headers=self._headers())
        response.raise_for_status()
        return response.json() if response.content else None

    def _headers(self) -> dict[str, str]:
        return dict(self._credentials().headers)

    # -- a SET, by poll or push -------------------------------------------------------------------------------

    async def receive(self, token: str) -> None:
        """Verify one SET of the current stream and apply it; raises ``SETError`` (RFC 8935 error code) otherwise."""
        if self.audience is None:
            raise SETError("invalid_request", "no stream yet")
        self.state.apply(await self.verified(token, self.audience))

    async def verified(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a SET signed by the issuer for ``audience``; raises ``SETError`` otherwise."""
        if not 0 < len(token) <= MAX_SET_BYTES:
            raise SETError("invalid_request", "an empty or oversized SET")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SETError("invalid_request", "not a JWS") from None
        if header.get("typ") != SET_TYPE or not isinstance(header.get("kid"), str):
            raise SETError("invalid_request", "not a secevent+jwt")
        key = await self._keys.key(header["kid"])
        if key is None or header.get("alg") != key.algorithm_name:
            raise SETError("invalid_key", "the SET is not signed by a key of the issuer")
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                issuer=self.issuer,
                audience=audience,
                options={"require": ["iss", "iat", "jti", "aud", "events"], "verify_exp": False},
            )
        except jwt.InvalidIssuerError:
            raise SETError("invalid_issuer", "wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise SETError("invalid_audience", "wrong audience") from None
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise SETError("authentication_failed", "the SET does not verify") from None
        return payload

    @property
    def push_path(self) -> str | None:
        """The path of this receiver's push endpoint (``AgentAuthMiddleware`` serves it without an agent token)."""
        if self._delivery != PUSH or self._push_url is None:
            return None
        return urllib.parse.urlsplit(self._push_url).path or "/"

    @property
    def push_endpoint(self) -> Callable[[Scope, ASGIReceive, ASGISend], Awaitable[None]]:
        """An ASGI app taking RFC 8935 pushes: mount it at the ``push_url`` the receiver was built with."""

        async def app(scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
                return
            status, body = await self._pushed(scope, receive)
            headers = [(b"content-type", b"application/json")] if body else []
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return app

    async def _pushed(self, scope: Scope, receive: ASGIReceive) -> tuple[int, bytes]:  # noqa: PLR0911
        headers = {name.decode().lower(): value.decode() for name, value in scope.get("headers", [])}
        if scope.get("method") != "POST":
            return 405, b""
        if not secrets.compare_digest(headers.get("authorization", ""), f"Bearer {self._push_secret}"):
            return 401, b""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_SET_BYTES:
                return 413, b""
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        if headers.get("content-type", "").split(";")[0].strip() != "application/secevent+jwt":
            return 400, _err("invalid_request", "the body must be application/secevent+jwt")
        if self.audience is None:
            return 503, b""  # pushed before the stream's creation answer was read: the transmitter retries
        try:
            await self.receive(b"".join(chunks).decode("ascii", errors="replace"))
        except SETError as error:
            return 400, _err(error.err, error.description)
        except IssuerUnavailable:
            return 503, b""
        return 202, b""


async def _lifespan(receive: ASGIReceive, send: ASGISend) -> None:
    """Nothing to start or stop: acknowledge the server's lifespan messages."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _named(stream: Any, name: str) -> bool:
    return isinstance(stream, dict) and stream.get("description") == name and isinstance(stream.get("stream_id"), str)


def _err(err: str, description: str) -> bytes:
    return json.dumps({"err": err, "description": description}).encode()
