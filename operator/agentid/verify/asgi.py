"""ASGI middleware (Starlette or any ASGI app) that admits only agents, with per-route rules and audit.

Wrap an app: ``AgentAuthMiddleware(app, verifier=..., resource="https://tool.example/api", policy=...)``. For each
HTTP request: a missing token is 401 with the RFC 9728 ``resource_metadata`` challenge; an invalid one 401
``invalid_token`` (the reason goes to the audit record, not to the caller); a verified agent the policy refuses
403 ``insufficient_scope``; otherwise the request continues with the principal in ``scope["agentid.principal"]``
(``principal_of(request)`` reads it). The tool name the policy sees is ``"METHOD /path"`` unless ``tool_of`` says
otherwise. The protected-resource metadata document is served at its well-known path without a token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from agentid.verify import audit
from agentid.verify.errors import InvalidToken, IssuerUnavailable
from agentid.verify.policy import Decision, Policy
from agentid.verify.principal import AgentPrincipal
from agentid.verify.resource import challenge, metadata_path, protected_resource_metadata
from agentid.verify.verifier import Verifier

logger = logging.getLogger(__name__)
PRINCIPAL_KEY = "agentid.principal"
ToolOf = Callable[[Scope], str]


def route_tool(scope: Scope) -> str:
    return f"{scope['method']} {scope['path']}"


def principal_of(connection: HTTPConnection) -> AgentPrincipal:
    """The verified agent of a request that passed the middleware."""
    principal = connection.scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, AgentPrincipal):
        raise LookupError("the request did not pass AgentAuthMiddleware")
    return principal


class AgentAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Verifier,
        resource: str,
        policy: Policy | None = None,
        tool_of: ToolOf = route_tool,
        audit_sink: audit.Sink = audit.log_sink,
        resource_name: str | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.resource = resource
        self.policy = policy
        self.tool_of = tool_of
        self.audit_sink = audit_sink
        self._metadata_path = metadata_path(resource)
        signals = verifier.signals
        self._push = (signals.push_path, signals.push_endpoint) if signals is not None and signals.push_path else None
        self._metadata = json.dumps(protected_resource_metadata(resource, verifier.issuer, name=resource_name)).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await _respond(send, 403, {"error": "forbidden"}, {})  # websockets are not admitted
            return
        if self._push is not None and scope["path"] == self._push[0]:
            await self._push[1](scope, receive, send)  # SSF push (RFC 8935): the transmitter authenticates itself
            return
        if scope["path"] == self._metadata_path and scope["method"] in ("GET", "HEAD"):
            await _respond_raw(send, 200, self._metadata, {"cache-control": "public, max-age=300"})
            return
        principal = await self._admit(scope, send)
        if principal is not None:
            scope[PRINCIPAL_KEY] = principal
            await self.app(scope, receive, send)

    async def _admit(self, scope: Scope, send: Send) -> AgentPrincipal | None:
        """The admitted principal, or None once a refusal has been sent."""
        token = _bearer(HTTPConnection(scope))
        tool = self.tool_of(scope)
        if token is None:
            self._audit(None, tool, Decision(False, "no token"))
            await self._unauthorized(send, None, None)
            return None
        try:
            principal = await self.verifier.verify(token)
        except InvalidToken as invalid:
            self._audit(None, tool, Decision(False, f"invalid token: {invalid.reason}"))
            await self._unauthorized(send, "invalid_token", "the access token is not valid")
            return None
        except IssuerUnavailable as error:
            logger.warning("cannot verify tokens: %s", error)
            await _respond(send, 503, {"error": "temporarily_unavailable"}, {"retry-after": "5"})
            return None
        decision = self.policy.decide(principal, tool) if self.policy is not None else Decision(True, "authenticated")
        self._audit(principal, tool, decision)
        if not decision.allowed:
            headers = {"www-authenticate": challenge(self.resource, "insufficient_scope", decision.reason)}
            body = {"error": "insufficient_scope", "error_description": decision.reason}
            await _respond(send, 403, body, headers)
            return None
        return principal

    def _audit(self, principal: AgentPrincipal | None, tool: str, decision: Decision) -> None:
        self.audit_sink(audit.decision_record(principal, tool, decision, resource=self.resource))

    async def _unauthorized(self, send: Send, error: str | None, description: str | None) -> None:
        body = {"error": error or "invalid_request", "error_description": description or "a bearer token is required"}
        await _respond(send, 401, body, {"www-authenticate": challenge(self.resource, error, description)})


def _bearer(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def _respond(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    await _respond_raw(send, status, json.dumps(body).encode(), {"cache-control": "no-store", **headers})


async def _respond_raw(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
