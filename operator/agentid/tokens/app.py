"""The token service's HTTP surface (aiohttp): discovery, JWKS, /token, /introspect, health.

Called by ``tokens.service`` (which owns the runner, TLS and background tasks). Handlers parse and bound the
request, call one domain object (``Exchanger``, ``Introspector``) and shape the RFC 6749 / 7662 response. Bad
input is always a 4xx: bodies are size-capped, form fields counted, UTF-8 checked, duplicates refused. The access
log records method, path (never the query string) and status: tokens are never logged. A token request the
exchange decided on is recorded once, by its audit line (granted or refused, with the client's address), not
also by the access log.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from agentid import httpbounds
from agentid.domain import keys
from agentid.domain.claims import Error, Refused
from agentid.kube import errors
from agentid.tokens import metadata
from agentid.tokens.accounts import AccountCache
from agentid.tokens.agents import AgentCache, published_keys
from agentid.tokens.clients import AmbiguousClient, IntrospectionClients
from agentid.tokens.exchange import Exchanger, ExchangeRequest, Issued
from agentid.tokens.introspection import INACTIVE, Introspector
from agentid.tokens.keyring import IssuerKeyring
from agentid.tokens.oauth_http import NO_STORE, AuditedResponse, BadRequest, oauth_error, read_form, single
from agentid.tokens.settings import TokenServiceSettings

logger = logging.getLogger(__name__)
TOKEN_RESPONSE_HEADERS = {**NO_STORE, "Content-Type": "application/json; charset=utf-8"}  # as json_response
JWKS_CACHE = {"Cache-Control": "public, max-age=60"}
NO_INTERACTIVE_LOGIN = (
    "this authorization server issues tokens to workloads only (token exchange, JWT bearer, client credentials); "
    "there is no interactive authorization"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AccessLogger(AbstractAccessLogger):
    """Method, path without query, status, duration: enough to operate, nothing a token could hide in.

    Every request gets one line, except a token request the exchange decided on: its audit record is that line
    (a second record of the same request was a twentieth of an exchange's CPU, profiled)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if isinstance(response, AuditedResponse):
            return
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


@web.middleware
async def client_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 4xx (413 body too large, 405, 404) in the RFC 6749 JSON shape."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400 or error.status >= 500:
            raise
        code = "invalid_request" if error.status in (400, 408, 411, 413, 415) else "not_found"
        if error.status == 405:
            code = "invalid_request"
        return oauth_error(error.status, code, error.reason)


class Routes:
    def __init__(
        self,
        *,
        settings: TokenServiceSettings,
        agents: AgentCache,
        accounts: AccountCache,
        keyring: IssuerKeyring,
        exchanger: Exchanger,
        introspector: Introspector,
        clients: IntrospectionClients,
    ) -> None:
        self.settings = settings
        self.agents = agents
        self.accounts = accounts
        self.keyring = keyring
        self.exchanger = exchanger
        self.introspector = introspector
        self.clients = clients

    def install(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/openid-configuration", self.openid_configuration)
        app.router.add_get("/.well-known/oauth-authorization-server", self.oauth_metadata)
        app.router.add_get("/jwks.json", self.jwks)
        app.router.add_get("/agents/{namespace}/{name}/jwks.json", self.agent_jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_post("/introspect", self.introspect)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)

    # -- discovery --------------------------------------------------------------------------------------------

    async def openid_configuration(self, request: web.Request) -> web.Response:
        return web.json_response(metadata.openid_configuration(self.settings.issuer, self.keyring.algorithms))

    async def oauth_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(metadata.oauth_authorization_server(self.settings.issuer, self.keyring.algorithms))

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.keyring.jwks(), headers=JWKS_CACHE)

    async def agent_jwks(self, request: web.Request) -> web.Response:
        agent = self.agents.get(request.match_info["namespace"], request.match_info["name"])
        if agent is None:
            return oauth_error(404, "not_found", "no such agent")
        now = dt.datetime.now(dt.UTC)
        jwks = {"keys": [_public(key.jwk) for key in published_keys(agent, self.accounts, now)]}
        return web.json_response(jwks, headers=JWKS_CACHE)

    # -- health -----------------------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="agent cache or issuer keys not ready")
        return web.Response(text="ok")

    @property
    def ready(self) -> bool:
        synced = self.agents.synced.is_set() and self.accounts.synced.is_set()
        return synced and bool(self.keyring.published())

    # -- token endpoints --------------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        if not self.ready:
            return oauth_error(503, "temporarily_unavailable", "the token service is starting")
        try:
            form = await read_form(request)
            exchange = _exchange_request(form, self.settings.limits.max_audiences)
            issued = await self.exchanger.exchange(exchange, client=request.remote)
        except BadRequest as error:
            return oauth_error(400, Error.INVALID_REQUEST.value, error.description)
        except Refused as refusal:
            status = 401 if refusal.error is Error.INVALID_CLIENT else 400  # RFC 6749 §5.2
            # Exchanger.exchange audits every refusal it raises.
            return oauth_error(status, refusal.error.value, refusal.description, refusal.reason.value, audited=True)
        except errors.ApiError as error:
            logger.warning("token exchange could not reach the apiserver: %s %s", error.status, error.reason)
            return oauth_error(503, "temporarily_unavailable", "the apiserver could not review the token")
        return AuditedResponse(body=token_response(issued), headers=TOKEN_RESPONSE_HEADERS)

    async def authorize(self, request: web.Request) -> web.Response:
        """RFC 6749 §4.1.2.1 without a trusted redirect URI: the error goes to the user agent, never redirected."""
        return oauth_error(400, "unsupported_response_type", NO_INTERACTIVE_LOGIN)

    async def introspect(self, request: web.Request) -> web.Response:
        try:
            form = await read_form(request)
            caller = await self.clients.authenticate(request.headers.get("Authorization"), form)
            token = single(form, "token")
            if caller is not None and token is None:
                raise BadRequest("token is required")
        except BadRequest as error:
            return oauth_error(400, Error.INVALID_REQUEST.value, error.description)
        except AmbiguousClient:
            return oauth_error(400, Error.INVALID_REQUEST.value, "use exactly one client authentication method")
        except errors.ApiError as error:
            logger.warning("introspection could not reach the apiserver: %s %s", error.status, error.reason)
            return oauth_error(503, "temporarily_unavailable", "the apiserver could not review the caller")
        if caller is None:
            return oauth_error(401, Error.INVALID_CLIENT.value, "introspection requires client authentication")
        result = self.introspector.introspect(token, caller=caller.name) if token else dict(INACTIVE)
        return web.json_response(result, headers=NO_STORE, dumps=_dumps)


def build_app(routes: Routes) -> web.Application:
    limit = routes.settings.limits.max_body_bytes
    app = web.Application(client_max_size=limit, middlewares=[client_errors, httpbounds.bounded_bodies(limit)])
    routes.install(app)
    return app


# -- request parsing --------------------------------------------------------------------------------------------


def _exchange_request(form: dict[str, list[str]], max_audiences: int) -> ExchangeRequest:
    grant_type = single(form, "grant_type")
    if not grant_type:
        raise BadRequest("grant_type is required")
    audiences = tuple(value for value in form.get("audience", []) if value)
    resources = tuple(value for value in form.get("resource", []) if value)
    if len(audiences) + len(resources) > max_audiences:
        raise BadRequest("too many audiences")
    return ExchangeRequest(
        grant_type=grant_type,
        subject_token=single(form, "subject_token"),
        subject_token_type=single(form, "subject_token_type"),
        actor_token=single(form, "actor_token"),
        actor_token_type=single(form, "actor_token_type"),
        assertion=single(form, "assertion"),
        audiences=audiences,
        resources=resources,
        client_id=single(form, "client_id"),
        client_assertion_type=single(form, "client_assertion_type"),
        client_assertion=single(form, "client_assertion"),
        requested_token_type=single(form, "requested_token_type"),
        lifetime=_lifetime(single(form, "expires_in")),
    )


def _lifetime(value: str | None) -> dt.timedelta | None:
    """Optional ``expires_in`` (seconds) asking for a shorter token; over the agent's tokenTTL is refused."""
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 9 or int(value) < 1:
        raise BadRequest("expires_in must be a positive number of seconds")
    return dt.timedelta(seconds=int(value))


def token_response(issued: Issued) -> bytes:
    """RFC 8693 §2.2.1, byte for byte what ``json_response`` made of the same dict, without a JSON encoder per
    token: the token is compact JWS (base64url and dots, nothing to escape) and the rest is constant or a number."""
    return b"".join(
        (
            b'{"access_token": "',
            issued.token.encode("ascii"),
            b'", "issued_token_type": ',
            _json_string(issued.issued_token_type),
            b', "token_type": "Bearer", "expires_in": ',
            str(issued.expires_in).encode("ascii"),
            b"}",
        )
    )


@functools.lru_cache(maxsize=8)
def _json_string(value: str) -> bytes:
    return json.dumps(value).encode()


def _public(jwk: dict[str, str]) -> dict[str, Any]:
    return keys.public_only(jwk)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
