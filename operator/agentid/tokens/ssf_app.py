"""The SSF 1.0 HTTP surface: transmitter metadata, stream management, status, verification and RFC 8936 poll.

Installed next to the token endpoints by ``tokens.service``. Every endpoint but the metadata needs an
authenticated *and authorised* receiver: ``Authorization: Bearer <ServiceAccount token>`` for the issuer's
audience (TokenReview, as for introspection), and that ServiceAccount may ``list`` AgentIdentities cluster-wide
(SubjectAccessReview) — a stream tells its receiver about every agent, so it is for those who may read them all.
A caller only ever sees its own streams (another's stream is 404). Bodies are bounded JSON; push endpoints must
be https (http only to loopback), so a receiver cannot aim the token service at arbitrary plain-text targets.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import time
import urllib.parse
from typing import Any

from aiohttp import web

from agentid.domain import signals
from agentid.kube import errors
from agentid.kube.client import KubeClient
from agentid.kube.resources import SUBJECT_ACCESS_REVIEWS
from agentid.tokens import verification
from agentid.tokens.reviews import SERVICE_ACCOUNT_PREFIX, ServiceAccountReviewer
from agentid.tokens.ssf import Stream, Transmitter

logger = logging.getLogger(__name__)
JSON = "application/json"
MAX_STREAMS_PER_RECEIVER = 16
MAX_POLL_EVENTS = 1_000
LONG_POLL_SECONDS = 10.0  # a quiet stream still answers this often: receivers' fail-closed windows rely on it
AUTHZ_CACHE_SECONDS = 10.0
MAX_TEXT = 2_048
CHALLENGE = 'Bearer realm="agentid-ssf"'


class Problem(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _problem(problem: Problem) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if problem.status == 401:
        headers["WWW-Authenticate"] = CHALLENGE
    body = {"error": problem.error, "error_description": problem.description}
    return web.json_response(body, status=problem.status, headers=headers)


class SignalRoutes:
    def __init__(
        self, *, transmitter: Transmitter, reviewer: ServiceAccountReviewer, client: KubeClient, max_token_bytes: int
    ) -> None:
        self.transmitter = transmitter
        self._reviewer = reviewer
        self._client = client
        self._max_token_bytes = max_token_bytes
        self._authorised: dict[bytes, tuple[str, float]] = {}

    def install(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/ssf-configuration", self.configuration)
        app.router.add_route("*", "/ssf/streams", self.streams)
        app.router.add_route("*", "/ssf/status", self.status)
        app.router.add_post("/ssf/verify", self.verify)
        app.router.add_post("/ssf/poll/{stream_id}", self.poll)

    @property
    def issuer(self) -> str:
        return self.transmitter.issuer

    async def configuration(self, request: web.Request) -> web.Response:
        """SSF 1.0 §7.1: the transmitter configuration metadata."""
        return web.json_response(
            {
                "spec_version": "1_0",
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/jwks.json",
                "delivery_methods_supported": [signals.DELIVERY_PUSH, signals.DELIVERY_POLL],
                "configuration_endpoint": f"{self.issuer}/ssf/streams",
                "status_endpoint": f"{self.issuer}/ssf/status",
                "verification_endpoint": f"{self.issuer}/ssf/verify",
                "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
                "default_subjects": "ALL",
            },
            headers={"Cache-Control": "public, max-age=300"},
        )

    # -- stream management (SSF 1.0 §8.1.1) -------------------------------------------------------------------

    async def streams(self, request: web.Request) -> web.Response:
        try:
            owner = await self._owner(request)
            if request.method == "POST":
                return self._create(owner, await _json(request))
            if request.method == "GET":
                found = self.transmitter.owned(owner, request.query.get("stream_id"))
                if "stream_id" in request.query:
                    return web.json_response(self._one(found).configuration(self.issuer))
                return web.json_response([stream.configuration(self.issuer) for stream in found])
            if request.method == "DELETE":
                await self.transmitter.delete(self._one(self.transmitter.owned(owner, request.query.get("stream_id"))))
                return web.Response(status=204)
            raise Problem(405, "invalid_request", "streams are created (POST), read (GET) and deleted (DELETE)")
        except Problem as problem:
            return _problem(problem)

    def _create(self, owner: str, body: dict[str, Any]) -> web.Response:
        if self.transmitter.count(owner) >= MAX_STREAMS_PER_RECEIVER:
            raise Problem(409, "invalid_request", f"a receiver may hold at most {MAX_STREAMS_PER_RECEIVER} streams")
        if len(self.transmitter.streams) >= self.transmitter.max_streams:
            raise Problem(429, "temporarily_unavailable", "the transmitter holds as many streams as it may")
        delivery = body.get("delivery", {"method": signals.DELIVERY_POLL})
        if not isinstance(delivery, dict):
            raise Problem(400, "invalid_request", "delivery must be an object")
        method = delivery.get("method")
        endpoint, authorization = delivery.get("endpoint_url"), delivery.get("authorization_header")
        if method == signals.DELIVERY_PUSH:
            _check_push_url(endpoint)
            if authorization is not None and (not isinstance(authorization, str) or len(authorization) > MAX_TEXT):
                raise Problem(400, "invalid_request", "authorization_header must be a short string")
        elif method == signals.DELIVERY_POLL:
            if endpoint is not None:
                raise Problem(400, "invalid_request", "for poll delivery the transmitter supplies endpoint_url")
        else:
            raise Problem(400, "invalid_request", "delivery.method must be urn:ietf:rfc:8935 or urn:ietf:rfc:8936")
        requested = body.get("events_requested", list(signals.EVENT_TYPES))
        if (
            not isinstance(requested, list)
            or not all(isinstance(item, str) for item in requested)
            or len(requested) > 64
        ):
            raise Problem(400, "invalid_request", "events_requested must be a list of event type URIs")
        description = body.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > MAX_TEXT):
            raise Problem(400, "invalid_request", "description must be a short string")
        stream = self.transmitter.create(
            owner=owner,
            method=str(method),
            events_requested=tuple(dict.fromkeys(requested)),
            description=description,
            endpoint_url=endpoint if method == signals.DELIVERY_PUSH else None,
            authorization_header=authorization if method == signals.DELIVERY_PUSH else None,
        )
        logger.info("SSF stream %s created for %s (%s)", stream.stream_id, owner, method)
        return web.json_response(stream.configuration(self.issuer), status=201)

    async def status(self, request: web.Request) -> web.Response:
        """SSF 1.0 §8.1.2: read or set enabled / paused / disabled (paused and disabled streams log nothing)."""
        try:
            owner = await self._owner(request)
            if request.method == "GET":
                stream = self._one(self.transmitter.owned(owner, request.query.get("stream_id")))
            elif request.method == "POST":
                body = await _json(request)
                stream = self._one(self.transmitter.owned(owner, _text(body, "stream_id")))
                wanted = body.get("status")
                if wanted not in ("enabled", "paused", "disabled"):
                    raise Problem(400, "invalid_request", "status must be enabled, paused or disabled")
                stream.status = str(wanted)
            else:
                raise Problem(405, "invalid_request", "status is read (GET) or set (POST)")
            return web.json_response({"stream_id": stream.stream_id, "status": stream.status})
        except Problem as problem:
            return _problem(problem)

    async def verify(self, request: web.Request) -> web.Response:
        try:
            owner = await self._owner(request)
            body = await _json(request)
            stream = self._one(self.transmitter.owned(owner, _text(body, "stream_id")))
            state = body.get("state")
            if state is not None and (not isinstance(state, str) or len(state) > MAX_TEXT):
                raise Problem(400, "invalid_request", "state must be a short string")
            self.transmitter.verify(stream, state)
            return web.Response(status=204)
        except Problem as problem:
            return _problem(problem)

    # -- poll (RFC 8936 §2.4) ---------------------------------------------------------------------------------

    async def poll(self, request: web.Request) -> web.Response:
        try:
            owner = await self._owner(request)
            stream = self._one(self.transmitter.owned(owner, request.match_info["stream_id"]))
            if stream.method != signals.DELIVERY_POLL:
                raise Problem(400, "invalid_request", "this stream is delivered by push")
            body = await _json(request)
            acks = body.get("ack", [])
            if not isinstance(acks, list) or not all(isinstance(jti, str) for jti in acks):
                raise Problem(400, "invalid_request", "ack must be a list of jti strings")
            errors_reported = body.get("setErrs") or {}
            if not isinstance(errors_reported, dict):
                raise Problem(400, "invalid_request", "setErrs must be an object keyed by jti")
            for jti in errors_reported:  # RFC 8936 §2.4: the receiver will not take these; they leave the log
                logger.warning("receiver of stream %s could not process a SET", stream.stream_id)
                stream.log.pop(jti, None)
            max_events = body.get("maxEvents", MAX_POLL_EVENTS)
            if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
                raise Problem(400, "invalid_request", "maxEvents must be a non-negative integer")
            sets, more = await self.transmitter.poll(
                stream,
                acks=acks,
                max_events=min(max_events, MAX_POLL_EVENTS),
                return_immediately=bool(body.get("returnImmediately", False)),
                wait=LONG_POLL_SECONDS,
            )
            return web.json_response({"sets": sets, "moreAvailable": more}, headers={"Cache-Control": "no-store"})
        except Problem as problem:
            return _problem(problem)

    # -- who is asking? ---------------------------------------------------------------------------------------

    async def _owner(self, request: web.Request) -> str:
        scheme, _, credentials = (request.headers.get("Authorization") or "").partition(" ")
        token = credentials.strip()
        if scheme.lower() != "bearer" or not verification.looks_like_jwt(token, self._max_token_bytes):
            raise Problem(401, "invalid_client", "stream management requires a bearer ServiceAccount token")
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._authorised.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            user = await self._reviewer.review(token)
            if user is None:
                raise Problem(401, "invalid_client", "the bearer token is not a ServiceAccount token for this issuer")
            owner = f"{SERVICE_ACCOUNT_PREFIX}{user.namespace}:{user.name}"
            if not await self._may_list_agents(owner, user.namespace):
                raise Problem(403, "access_denied", "the caller may not list AgentIdentities cluster-wide")
        except errors.ApiError as error:
            logger.warning("SSF could not reach the apiserver: %s %s", error.status, error.reason)
            raise Problem(503, "temporarily_unavailable", "the apiserver could not review the caller") from None
        if len(self._authorised) > 10_000:
            self._authorised.clear()
        self._authorised[digest] = (owner, time.monotonic() + AUTHZ_CACHE_SECONDS)
        return owner

    async def _may_list_agents(self, user: str, namespace: str) -> bool:
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
        attributes = {"group": "agentid.dev", "resource": "agentidentities", "verb": "list"}
        spec = {"user": user, "groups": groups, "resourceAttributes": attributes}
        status = await self._client.create_review(SUBJECT_ACCESS_REVIEWS, spec)
        return status.get("allowed") is True

    @staticmethod
    def _one(found: list[Stream]) -> Stream:
        if len(found) != 1:
            raise Problem(404, "not_found", "no such stream")
        return found[0]


async def _json(request: web.Request) -> dict[str, Any]:
    if request.content_type != JSON:
        raise Problem(415 if request.can_read_body else 400, "invalid_request", f"the body must be {JSON}")
    try:
        body = json.loads(await request.read())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Problem(400, "invalid_request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "invalid_request", "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise Problem(400, "invalid_request", f"{name} is required")
    return value


def _check_push_url(url: Any) -> None:
    if not isinstance(url, str) or len(url) > MAX_TEXT:
        raise Problem(400, "invalid_request", "push delivery needs delivery.endpoint_url")
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password or parts.fragment or not parts.hostname:
        raise Problem(400, "invalid_request", "endpoint_url must be an absolute URL without credentials or fragment")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and _loopback(parts.hostname):
        return
    raise Problem(400, "invalid_request", "endpoint_url must be https (http only to loopback)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
