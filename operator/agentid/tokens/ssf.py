"""The Shared Signals (SSF 1.0) transmitter: streams, their bounded event logs, SET signing, push delivery.

Fed by the AgentCache listener (``on_agent_change``, synchronous, from the live watch): every CAEP event of
``domain.signals`` becomes one Security Event Token per enabled stream, appended to that stream's log and signed
with the issuer key (``typ: secevent+jwt``) when it is first delivered — signing is the fan-out's cost, so it is
paid by delivery, not by the watch callback that also feeds exchange and introspection. A SET leaves the log
only when the receiver acknowledges it (RFC 8936 poll ``ack``) or accepts it (RFC 8935 push, 202): delivery is
at-least-once, and a receiver that was away finds every unacknowledged SET still there. Logs are bounded
(``max_log``): past it the oldest SETs are dropped and counted, and a receiver that lost events can re-create its
stream to start from a snapshot.

Stream state lives in this replica's memory (a documented limitation, docs/token-service.md): each replica
transmits from its own watch, so a receiver talks to one replica (the stream's endpoints are that replica's).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from agentid import metrics
from agentid.api.v1alpha1 import AgentIdentity
from agentid.domain import clock as wall_clock
from agentid.domain import keys, signals
from agentid.domain.claims import MAX_TOKEN_LIFETIME
from agentid.tokens.agents import AgentCache

logger = logging.getLogger(__name__)
PUSH_TIMEOUT = aiohttp.ClientTimeout(total=5)
PUSH_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


class Signer(Protocol):
    """What the transmitter needs of the issuer keyring: the key SETs are signed with."""

    def signing_key(self) -> keys.SigningKey: ...


@dataclass
class Stream:
    """One receiver's stream (SSF 1.0 §8.1.1) and its log of undelivered SETs (jti → claims, or the signed SET
    once delivered: a redelivery is the same SET)."""

    stream_id: str
    owner: str
    audience: str
    method: str
    events_requested: tuple[str, ...]
    description: str | None = None
    endpoint_url: str | None = None  # push: the receiver's; poll: ours
    authorization_header: str | None = None  # push: what we send the receiver (never returned)
    status: str = "enabled"
    log: collections.OrderedDict[str, dict[str, Any] | str] = field(default_factory=collections.OrderedDict)
    dropped: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def configuration(self, issuer: str) -> dict[str, Any]:
        delivery: dict[str, Any] = {"method": self.method, "endpoint_url": self.endpoint_url}
        document: dict[str, Any] = {
            "stream_id": self.stream_id,
            "iss": issuer,
            "aud": self.audience,
            "delivery": delivery,
            "events_supported": list(signals.EVENT_TYPES),
            "events_requested": list(self.events_requested),
            "events_delivered": [event for event in self.events_requested if event in signals.EVENT_TYPES],
        }
        if self.description is not None:
            document["description"] = self.description
        return document

    @property
    def delivered_types(self) -> frozenset[str]:
        return frozenset(self.events_requested) & frozenset(signals.EVENT_TYPES)


class Transmitter:
    def __init__(
        self,
        *,
        issuer: str,
        agents: AgentCache,
        keyring: Signer,
        max_log: int = 10_000,
        max_streams: int = 2_000,
        clock: Callable[[], dt.datetime] = wall_clock.now,
    ) -> None:
        self.issuer = issuer
        self._agents = agents
        self._keyring = keyring
        self._max_log = max_log
        self.max_streams = max_streams
        self._clock = clock
        self.streams: dict[str, Stream] = {}
        self._revoked: dict[str, int] = {}  # agent ID → when its sessions were revoked (for new streams' snapshot)
        self._announced: set[str | None] = set()  # UIDs of existing agents whose revocation was announced
        self._pushers: dict[str, asyncio.Task[None]] = {}
        self._http: aiohttp.ClientSession | None = None
        self.sent = 0  # SETs signed (benchmarks read it)

    # -- events in --------------------------------------------------------------------------------------------

    def on_agent_change(self, old: AgentIdentity | None, new: AgentIdentity | None) -> None:
        """AgentCache listener: the events this change means, to every stream that asked for them."""
        now = self._clock()
        events = [event for event in signals.events_for(old, new, now) if self._first_revocation(event, old, new)]
        if events:
            self._forget_old_revocations(now)
            for stream in list(self.streams.values()):
                self._append(stream, events, now)

    def _first_revocation(self, event: signals.Event, old: AgentIdentity | None, new: AgentIdentity | None) -> bool:
        """A session-revoked event is announced once per agent (by UID): deletion after revocation adds nothing."""
        if event.event_type != signals.SESSION_REVOKED:
            return True
        agent = new or old
        uid = agent.metadata.uid if agent is not None else None
        first = uid not in self._announced
        if new is None:
            self._announced.discard(uid)  # gone: the set holds only agents that still exist
        elif first:
            self._announced.add(uid)
        if first:
            self._revoked[event.agent_id] = int(event.body["event_timestamp"])
        return first

    def _append(self, stream: Stream, events: list[signals.Event], now: dt.datetime) -> None:
        if stream.status != "enabled":
            return
        wanted = stream.delivered_types
        for event in events:
            if event.event_type in wanted:
                self._log(stream, signals.set_claims(event, issuer=self.issuer, audience=stream.audience, now=now))
        stream.arrived.set()

    def _log(self, stream: Stream, payload: dict[str, Any]) -> None:
        stream.log[payload["jti"]] = payload
        while len(stream.log) > self._max_log:
            stream.log.popitem(last=False)
            stream.dropped += 1
            metrics.SSF_DROPPED.inc()

    def signed(self, stream: Stream, jti: str) -> str:
        """The SET with this ``jti``, signed on first delivery and kept for redeliveries."""
        entry = stream.log[jti]
        if isinstance(entry, str):
            return entry
        token = self.sign(entry)
        metrics.SSF_SETS.labels(method=stream.method).inc()
        stream.log[jti] = token
        return token

    def sign(self, payload: dict[str, Any]) -> str:
        """A SET (RFC 8417 §2.3: ``typ: secevent+jwt``) signed with the issuer's current key."""
        key = self._keyring.signing_key()
        self.sent += 1
        return keys.sign_jwt(key, payload, typ=signals.SET_TYPE)

    def _forget_old_revocations(self, now: dt.datetime) -> None:
        """A revocation matters until every token it voids has expired (tokens live at most 24 h)."""
        horizon = (now - MAX_TOKEN_LIFETIME).timestamp()
        for agent_id in [agent_id for agent_id, when in self._revoked.items() if when < horizon]:
            del self._revoked[agent_id]

    # -- streams ----------------------------------------------------------------------------------------------

    def create(
        self,
        *,
        owner: str,
        method: str,
        events_requested: tuple[str, ...],
        description: str | None,
        endpoint_url: str | None,
        authorization_header: str | None,
    ) -> Stream:
        stream_id = secrets.token_urlsafe(16)
        stream = Stream(
            stream_id=stream_id,
            owner=owner,
            audience=f"{self.issuer}/ssf/streams/{stream_id}",
            method=method,
            events_requested=events_requested,
            description=description,
            endpoint_url=endpoint_url if method == signals.DELIVERY_PUSH else f"{self.issuer}/ssf/poll/{stream_id}",
            authorization_header=authorization_header,
        )
        self.streams[stream_id] = stream
        metrics.SSF_STREAMS.set(len(self.streams))
        now = self._clock()
        self._forget_old_revocations(now)
        snapshot = signals.snapshot(self._agents.all(), dict(self._revoked), now)
        self._append(stream, snapshot, now)
        if method == signals.DELIVERY_PUSH:
            self._pushers[stream_id] = asyncio.create_task(self._push_loop(stream), name=f"ssf-push-{stream_id}")
        return stream

    def owned(self, owner: str, stream_id: str | None) -> list[Stream]:
        """The caller's streams (one, or all without ``stream_id``); another owner's streams do not exist for it."""
        if stream_id is not None:
            stream = self.streams.get(stream_id)
            return [stream] if stream is not None and stream.owner == owner else []
        return [stream for stream in self.streams.values() if stream.owner == owner]

    def count(self, owner: str) -> int:
        return sum(1 for stream in self.streams.values() if stream.owner == owner)

    async def delete(self, stream: Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        metrics.SSF_STREAMS.set(len(self.streams))
        stream.status = "disabled"
        stream.arrived.set()  # wake a long poll
        pusher = self._pushers.pop(stream.stream_id, None)
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher

    def verify(self, stream: Stream, state: str | None) -> None:
        """SSF 1.0 §8.1.4: a verification event on request."""
        payload = signals.verification_claims(
            issuer=self.issuer, audience=stream.audience, stream_id=stream.stream_id, state=state, now=self._clock()
        )
        self._log(stream, payload)
        stream.arrived.set()

    # -- poll (RFC 8936) --------------------------------------------------------------------------------------

    async def poll(
        self, stream: Stream, *, acks: list[str], max_events: int, return_immediately: bool, wait: float
    ) -> tuple[dict[str, str], bool]:
        """Acknowledge, then the oldest unacknowledged SETs (waiting up to ``wait`` for one unless told not to)."""
        for jti in acks:
            stream.log.pop(jti, None)
        if not stream.log and not return_immediately and max_events > 0:
            stream.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stream.arrived.wait()
        sets = {jti: self.signed(stream, jti) for jti in list(stream.log)[:max_events]}
        return sets, len(stream.log) > len(sets)

    # -- push (RFC 8935) --------------------------------------------------------------------------------------

    async def _push_loop(self, stream: Stream) -> None:
        """Deliver in order, one SET at a time; keep a SET until the receiver took it (202) or refused it (400)."""
        failures = 0
        while stream.status != "disabled":
            if not stream.log:
                stream.arrived.clear()
                await stream.arrived.wait()
                continue
            jti = next(iter(stream.log))
            token = self.signed(stream, jti)
            try:
                delivered = await self._push(stream, token)
            except (aiohttp.ClientError, TimeoutError) as error:
                failures += 1
                logger.info("push to stream %s failed (%s); will retry", stream.stream_id, type(error).__name__)
                await asyncio.sleep(PUSH_BACKOFF[min(failures, len(PUSH_BACKOFF)) - 1])
                continue
            failures = 0
            if delivered:
                stream.log.pop(jti, None)

    async def _push(self, stream: Stream, token: str) -> bool:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=PUSH_TIMEOUT)
        headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        if stream.authorization_header:
            headers["Authorization"] = stream.authorization_header
        assert stream.endpoint_url is not None  # noqa: S101 - push streams are created with one
        async with self._http.post(stream.endpoint_url, data=token, headers=headers, allow_redirects=False) as reply:
            await reply.read()
            if reply.status == 202:
                return True
            if reply.status == 400:
                logger.warning("receiver of stream %s refused a SET", stream.stream_id)
                return True  # RFC 8935 §2.4: the receiver will not take this SET; retrying it cannot help
            raise aiohttp.ClientResponseError(reply.request_info, (), status=reply.status)

    async def close(self) -> None:
        for stream in list(self.streams.values()):
            await self.delete(stream)
        if self._http is not None:
            await self._http.close()
            self._http = None
