"""Adapters for the official MCP Python SDK (``mcp`` on PyPI): token verification and per-tool rules.

- ``AgentTokenVerifier`` is the SDK's ``TokenVerifier``: give it to ``MCPServer(token_verifier=..., auth=...)``
  and the SDK answers unauthenticated requests with 401 and the RFC 9728 ``resource_metadata`` challenge, and
  serves the protected-resource metadata itself.
- ``ToolGuard`` is a server middleware (``MCPServer(middleware=[ToolGuard(...)])``): every ``tools/call`` is
  decided by the policy and audited (refusals come back as a tool error the model can read), and ``tools/list``
  shows an agent only the tools it may call.
The principal rides in ``AccessToken.claims`` (the verified, live claims), so tool code can call
``current_principal()`` to see who is calling and on whose behalf.
"""

from __future__ import annotations

from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp_types import CallToolResult, ListToolsResult, TextContent

from agentid.verify import audit
from agentid.verify.errors import InvalidToken, IssuerUnavailable
from agentid.verify.policy import Decision, Policy
from agentid.verify.principal import AgentPrincipal, MalformedClaims
from agentid.verify.verifier import Verifier


class AgentTokenVerifier:
    """``mcp.server.auth.provider.TokenVerifier`` backed by agentid."""

    def __init__(self, verifier: Verifier, *, audit_sink: audit.Sink = audit.log_sink) -> None:
        self.verifier = verifier
        self.audit_sink = audit_sink

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await self.verifier.verify(token)
        except InvalidToken as invalid:
            decision = Decision(False, f"invalid token: {invalid.reason}")
            self.audit_sink(audit.decision_record(None, None, decision, resource=self.verifier.audience))
            return None
        except IssuerUnavailable:
            return None  # the SDK answers 401; the client retries
        return AccessToken(
            token=token,
            client_id=principal.agent_id,
            scopes=[],
            expires_at=principal.expires_at,
            resource=self.verifier.audience,  # the verifier admitted only tokens for exactly this audience
            subject=principal.agent_id,
            claims=dict(principal.claims),
        )


def current_principal() -> AgentPrincipal | None:
    """The agent behind the MCP request being handled (inside a tool, prompt or middleware)."""
    return principal_of(get_access_token())


def principal_of(access_token: AccessToken | None) -> AgentPrincipal | None:
    if access_token is None or access_token.claims is None:
        return None
    try:
        return AgentPrincipal.from_claims(access_token.claims)
    except MalformedClaims:
        return None


class ToolGuard(ServerMiddleware[Any]):
    def __init__(self, policy: Policy, *, resource: str, audit_sink: audit.Sink = audit.log_sink) -> None:
        self.policy = policy
        self.resource = resource
        self.audit_sink = audit_sink

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call":
            name = ctx.params.get("name") if ctx.params else None
            tool = name if isinstance(name, str) else ""
            principal = current_principal()
            decision = (
                self.policy.decide(principal, tool) if principal is not None else Decision(False, "no agent token")
            )
            self.audit_sink(audit.decision_record(principal, tool, decision, resource=self.resource))
            if not decision.allowed:
                text = f"refused by agentid: {decision.reason}"
                return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
            return await call_next(ctx)
        result = await call_next(ctx)
        if ctx.method == "tools/list":
            return self._visible(result)
        return result

    def _visible(self, result: HandlerResult) -> HandlerResult:
        """Only the tools the calling agent may use (the SDK hands middleware the result model or its dict)."""
        principal = current_principal()

        def allowed(name: object) -> bool:
            return principal is not None and isinstance(name, str) and self.policy.decide(principal, name).allowed

        if isinstance(result, ListToolsResult):
            return result.model_copy(update={"tools": [tool for tool in result.tools if allowed(tool.name)]})
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            tools = [tool for tool in result["tools"] if isinstance(tool, dict) and allowed(tool.get("name"))]
            return {**result, "tools": tools}
        return result
